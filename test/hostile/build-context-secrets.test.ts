// docs/deploy.md has the operator create every secret under deploy/secrets/ in the repository
// root (the private CA key, the TLS key, the store password, an admin token), and build the
// image with that root as the build context (`docker build -f deploy/Dockerfile .`). Whatever
// .dockerignore does not exclude is sent to the builder (the classic builder sends the whole
// context; a remote builder receives it over the network), a `COPY . .` away from the image.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../fixtures/cli.js';

/** .dockerignore's patterns, as written (comments and blanks dropped). */
function patterns(): string[] {
  return readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

describe('the image build context', () => {
  it('excludes deploy/secrets/, where docs/deploy.md puts the keys and passwords', () => {
    const excluded = patterns().some((p) =>
      ['deploy/secrets', 'deploy/secrets/', 'deploy/secrets/**'].includes(p),
    );
    expect(excluded, '.dockerignore does not exclude deploy/secrets').toBe(true);
  });
});
