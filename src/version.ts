// The one version string: the package's (test/version.test.ts keeps them equal). A constant,
// not a read of package.json, so that the bundled runner client carries it with no file around.
export const CIPORT_VERSION = '0.1.0';
