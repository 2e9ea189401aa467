import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isDevelopmentIssuer } from '../../src/identity/index.js';
import { runCli } from '../helpers/cli.js';

const EXAMPLE = new URL('../../examples/gateway.yaml', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'ciport-config-cli-'));

describe('ciport config check', () => {
  it('is quiet and exits 0 on a valid file (structure only with --skip-secrets)', async () => {
    expect(await runCli(['config', 'check', '--skip-secrets', EXAMPLE])).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
    const verbose = await runCli(['config', 'check', '--skip-secrets', '-v', EXAMPLE]);
    expect(verbose.stdout).toBe(`${EXAMPLE}: ok (1 issuers, 1 targets, 2 rules)\n`);
  });

  it('exits 2 naming the missing secret when secrets are checked', async () => {
    const r = await runCli(['config', 'check', EXAMPLE], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /CIPORT_E_SECRET_UNAVAILABLE: .*gateway\.yaml:\d+: tls\.cert: cannot read secret file/,
    );
  });

  it('exits 2 with file, line and path for an invalid file, as JSON with --json', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'sessions:\n  default_ttl: forever\n');
    const r = await runCli(['config', 'check', '--json', bad]);
    expect(r.code).toBe(2);
    const out = JSON.parse(r.stdout);
    expect(out.error.code).toBe('CIPORT_E_CONFIG_INVALID');
    expect(out.error.message).toContain(`${bad}:2: sessions.default_ttl`);
  });
});

describe('ciport config schema', () => {
  it('prints a JSON Schema that rejects unknown top-level keys', async () => {
    const r = await runCli(['config', 'schema']);
    expect(r.code).toBe(0);
    const schema = JSON.parse(r.stdout);
    expect(schema.title).toBe('ciport gateway configuration');
    expect(schema.additionalProperties).toBe(false);
    expect(Object.keys(schema.properties)).toContain('issuers');
  });
});

describe('development issuers', () => {
  it('are those marked dev or served over plain http', () => {
    expect(isDevelopmentIssuer({ issuer: 'http://127.0.0.1:8473', dev: false })).toBe(true);
    expect(isDevelopmentIssuer({ issuer: 'https://gitlab.com', dev: true })).toBe(true);
    expect(isDevelopmentIssuer({ issuer: 'https://gitlab.com', dev: false })).toBe(false);
  });
});
