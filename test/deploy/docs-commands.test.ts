// docs/deploy.md's commands run as written: every ```sh block not marked as needing something
// this machine lacks (a bold "**(container engine)**", "**(cluster)**", … before it) runs, in
// order, with bash, in a directory laid out like a checkout (its own deploy/secrets/). Then the
// secrets those blocks made are used: the gateway serves the private-CA certificate, and a
// client that trusts ca.crt reaches /readyz under the public name.
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, ROOT, runBash } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { httpsGet, startGatewayProcess } from './recipes.js';

const dir = mkdtempSync(join(ROOT, 'test', '.tmp', 'deploy-doc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeAll(async () => {
  await ensureBuilt();
  symlinkSync(join(ROOT, 'bin'), join(dir, 'bin'));
  mkdirSync(join(dir, 'deploy'));
  for (const entry of readdirSync(join(ROOT, 'deploy'))) {
    if (entry !== 'secrets') symlinkSync(join(ROOT, 'deploy', entry), join(dir, 'deploy', entry));
  }
}, 180_000);

/** The ```sh blocks, each with whether the prose before it marks it as needing elsewhere. */
function shBlocks(markdown: string): { body: string; elsewhere: boolean }[] {
  const blocks: { body: string; elsewhere: boolean }[] = [];
  let last = 0;
  for (const m of markdown.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const before = markdown.slice(last, m.index).trimEnd();
    const paragraph = before.slice(before.lastIndexOf('\n\n'));
    blocks.push({ body: m[1] as string, elsewhere: /\*\*\([^)]*\)\*\*/.test(paragraph) });
    last = (m.index ?? 0) + m[0].length;
  }
  return blocks;
}

describe('docs/deploy.md', () => {
  it('runs its commands as written, and the certificate they make is served and verified', async () => {
    const blocks = shBlocks(readFileSync(join(ROOT, 'docs/deploy.md'), 'utf8'));
    const runnable = blocks.filter((b) => !b.elsewhere);
    expect(blocks.filter((b) => b.elsewhere).length).toBeGreaterThan(5);
    // npm ci / npm run build / npm pack: the suite builds once; test/package packs
    const lines = runnable.flatMap((b) => b.body.split('\n')).filter((l) => !/^npm /.test(l));
    const result = await runBash(['set -euo pipefail', ...lines].join('\n'), dir);
    const log = `${result.stdout}\n--- stderr ---\n${result.stderr}`;
    expect(result.code, log).toBe(0);
    expect(result.stdout).toContain('deploy/secrets/tls.crt: OK');
    expect(result.stdout).toContain(
      'config OK: deploy/compose/gateway.yaml (1 issuer, 1 target, 2 rules; secrets not checked)',
    );
    expect(result.stdout).toContain('policy OK: deploy/compose/gateway.yaml');

    const secrets = join(dir, 'deploy/secrets');
    expect(statSync(secrets).mode & 0o777).toBe(0o700);
    for (const f of ['tls.key', 'ca.key', 'ciport-db-password', 'ciport-admin-token', 'ciport-pg-url']) {
      expect(statSync(join(secrets, f)).mode & 0o077, f).toBe(0);
    }
    const dbPassword = readFileSync(join(secrets, 'ciport-db-password'), 'utf8').trim();
    expect(dbPassword).toMatch(/^[0-9a-f]{48}$/);
    // the last store URL written is compose's
    expect(readFileSync(join(secrets, 'ciport-pg-url'), 'utf8')).toBe(
      `postgres://ciport:${dbPassword}@db:5432/ciport\n`,
    );

    // The gateway serves the doc's certificate; a client trusting the doc's CA verifies it
    // under the public name (resolved to loopback).
    const port = await freePort();
    const config = join(dir, 'gateway.yaml');
    writeFileSync(
      config,
      [
        `listen: 127.0.0.1:${port}`,
        'public_url: https://ciport.example.com',
        'tls:',
        `  cert: {file: ${join(secrets, 'tls.crt')}}`,
        `  key: {file: ${join(secrets, 'tls.key')}}`,
        `data_dir: ${join(dir, 'data')}`,
        'admin_tokens:',
        `  - {file: ${join(secrets, 'ciport-admin-token')}}`,
        '',
      ].join('\n'),
    );
    const gateway = await startGatewayProcess(config);
    try {
      const ca = readFileSync(join(secrets, 'ca.crt'), 'utf8');
      // the public name, resolved to loopback: the certificate must verify for it
      const answer = await httpsGet(`https://127.0.0.1:${port}/readyz`, {
        servername: 'ciport.example.com',
        ca,
        headers: { host: 'ciport.example.com' },
      });
      expect([answer.status, JSON.parse(answer.body)]).toEqual([200, { ok: true }]);
    } finally {
      gateway.child.kill('SIGTERM');
      await gateway.result;
    }
  }, 120_000);
});
