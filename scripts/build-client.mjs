#!/usr/bin/env node
// `npm run build:client`: the self-contained runner client.
//
// 1. esbuild bundles the client commands (src/cli/client-bin.ts: exec, open, close, whoami) and
//    the packages they use into one CommonJS file, dist/client/ciport.cjs (runs with any
//    `node` >= 20.19; the GitHub Action uses it that way).
// 2. That file becomes a Node single executable application (SEA): the blob Node prepares from
//    it is injected with postject into a copy of the running `node` binary, dist/client/ciport.
//    It needs nothing but itself on a Linux x64 runner: no Node.js, no npm, no native module.
//
// Prints the file, its size and its SHA-256 (also written to dist/client/ciport.sha256 in
// `sha256sum` format, which a job checks a download against: docs/client.md). Also writes
// dist/client/ciport.meta.json (esbuild's metafile: every input file and import of the bundle,
// which test/client/bundle.test.ts checks for native modules) and dist/client/build-info.json
// (the node that built the executable: a SEA runs the node it was injected into).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/client');
const require = createRequire(import.meta.url);
const quiet = process.argv.includes('--quiet');
const bundleOnly = process.argv.includes('--bundle-only');
const say = (line) => {
  if (!quiet) process.stderr.write(`${line}\n`);
};

if (process.platform !== 'linux' || process.arch !== 'x64') {
  say(
    `note: building on ${process.platform}-${process.arch}; the executable is for this platform, not linux-x64`,
  );
}

mkdirSync(out, { recursive: true });
const bundle = join(out, 'ciport.cjs');
const esbuild = await import('esbuild');
const built = await esbuild.build({
  metafile: true,
  entryPoints: [join(root, 'src/cli/client-bin.ts')],
  outfile: bundle,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // Same bytes for the same sources: the GitHub Action's committed copy is checked against a fresh build.
  legalComments: 'eof',
  logLevel: 'warning',
  banner: {
    js: '#!/usr/bin/env node\n// ciport runner client (bundled: npm run build:client). https://github.com/ciport/ciport',
  },
});
chmodSync(bundle, 0o755);
writeFileSync(join(out, 'ciport.meta.json'), JSON.stringify(built.metafile));
say(`bundle: ${bundle} (${(statSync(bundle).size / 1024).toFixed(0)} KiB)`);
if (bundleOnly) process.exit(0);

// The SEA blob, prepared by this very node (the executable must be the same build).
const blob = join(out, 'ciport.blob');
const seaConfig = join(out, 'sea-config.json');
writeFileSync(
  seaConfig,
  JSON.stringify({
    main: bundle,
    output: blob,
    disableExperimentalSEAWarning: true,
    useSnapshot: false,
    useCodeCache: false,
  }),
);
execFileSync(process.execPath, ['--experimental-sea-config', seaConfig], {
  stdio: quiet ? 'ignore' : ['ignore', 'ignore', 'inherit'],
});

// Built under a temporary name and renamed into place: a gateway serving dist/client/ciport
// (docs/gateway.md) never sees a half-made file (a plain node binary before the injection).
const exe = join(out, 'ciport');
const building = join(out, `.ciport.${process.pid}.tmp`);
rmSync(building, { force: true });
copyFileSync(process.execPath, building);
chmodSync(building, 0o755);
const { inject } = require('postject');
await inject(building, 'NODE_SEA_BLOB', readFileSync(blob), {
  sentinelFuse: 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
});
rmSync(blob, { force: true });
rmSync(seaConfig, { force: true });

const sha256 = createHash('sha256').update(readFileSync(building)).digest('hex');
writeFileSync(`${exe}.sha256.tmp`, `${sha256}  ciport\n`);
renameSync(building, exe);
renameSync(`${exe}.sha256.tmp`, `${exe}.sha256`);
writeFileSync(
  join(out, 'build-info.json'),
  `${JSON.stringify({ node: process.version, platform: process.platform, arch: process.arch, size: statSync(exe).size, sha256 }, null, 2)}\n`,
);
say(
  `client: ${exe} (${(statSync(exe).size / 1024 / 1024).toFixed(0)} MiB, node ${process.version}, ${process.platform}-${process.arch})`,
);
say(`sha256: ${sha256}`);
