import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isDevelopmentIssuer } from '../../src/identity/index.js';
import { runCli } from '../helpers/cli.js';

const EXAMPLE = new URL('../../examples/gateway.yaml', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'ciport-config-cli-'));

describe('ciport config check', () => {
  it('confirms a valid file in one line, FILE or --config FILE; quiet with -q', async () => {
    const positional = await runCli(['config', 'check', '--skip-secrets', EXAMPLE]);
    expect(positional).toEqual({
      code: 0,
      stdout: `config OK: ${EXAMPLE} (1 issuer, 1 target, 2 rules; secrets not checked)\n`,
      stderr: '',
    });
    const flag = await runCli(['config', 'check', '--skip-secrets', '--config', EXAMPLE]);
    expect(flag).toEqual(positional);
    expect((await runCli(['config', 'check', '--skip-secrets', '-c', EXAMPLE])).stdout).toBe(
      positional.stdout,
    );
    expect(await runCli(['config', 'check', '--skip-secrets', '-q', EXAMPLE])).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
    const json = await runCli(['config', 'check', '--skip-secrets', '--json', '--config', EXAMPLE]);
    expect(JSON.parse(json.stdout)).toEqual({ ok: true, issuers: 1, targets: 1, rules: 2 });
  });

  it('checks admin_tokens: named tokens with roles pass, two entries with one value fail (exit 2)', async () => {
    const file = join(dir, 'tokens.yaml');
    const write = (second: string) =>
      writeFileSync(
        file,
        `admin_tokens:\n  - {env: TOK_A}\n  - {name: ann, token: {env: ${second}}, role: auditor}\n`,
      );
    write('TOK_B');
    const ok = await runCli(['config', 'check', file], { TOK_A: 'value-a-0123', TOK_B: 'value-b-4567' });
    expect(ok.code).toBe(0);
    write('TOK_A');
    const twins = await runCli(['config', 'check', file], { TOK_A: 'value-a-0123' });
    expect(twins.code).toBe(2);
    expect(twins.stderr).toContain('CIPORT_E_CONFIG_INVALID');
    expect(twins.stderr).toContain('"ann" and "admin-token-1" have the same value');
    expect(twins.stderr).not.toContain('value-a-0123');
  });

  it('is a usage error without a file, or with two different ones', async () => {
    const none = await runCli(['config', 'check']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('config check FILE or --config FILE');
    const two = await runCli(['config', 'check', '--config', EXAMPLE, join(dir, 'other.yaml')]);
    expect(two.code).toBe(2);
  });

  it('exits 2 naming every missing secret, not only the first', async () => {
    const r = await runCli(['config', 'check', EXAMPLE], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /CIPORT_E_SECRET_UNAVAILABLE: .*gateway\.yaml:\d+: tls\.cert: cannot read secret file/,
    );
    expect(r.stderr).toMatch(/gateway\.yaml:\d+: tls\.key: cannot read secret file \/etc\/ciport\/tls\.key/);
    expect(r.stderr).toMatch(
      /gateway\.yaml:\d+: admin_tokens\[0\]: environment variable CIPORT_ADMIN_TOKEN is not set/,
    );
    expect(r.stderr).toMatch(
      /gateway\.yaml:\d+: targets\[0\]\.credentials\.password: environment variable STAGING_DB_PASSWORD is not set/,
    );
    // With the variables set, only the files remain.
    const some = await runCli(['config', 'check', EXAMPLE], {
      CIPORT_ADMIN_TOKEN: 'x'.repeat(32),
      STAGING_DB_PASSWORD: 'pw',
    });
    expect(some.stderr).not.toContain('CIPORT_ADMIN_TOKEN');
    expect(some.stderr.match(/cannot read secret file/g)).toHaveLength(2);
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

describe('ciport config check --agent', () => {
  // docs/agent.md's configuration, with a MySQL target whose admin password is in the environment.
  const agent = join(dir, 'agent.yaml');
  writeFileSync(
    agent,
    [
      'gateway: https://ciport.example.com:8443',
      'name: dc1',
      'enrollment_token: {env: CIPORT_ENROLLMENT_TOKEN}',
      'targets:',
      '  - name: app-db',
      '    protocol: mysql',
      '    address: db.internal:3306',
      '    credentials:',
      '      dynamic: {admin: {user: ciport_admin, password: {env: DB_ADMIN_PASSWORD}}, grant: [app_rw]}',
      '',
    ].join('\n'),
  );

  it("validates an agent's file; checked as a gateway's, the error says to use --agent", async () => {
    expect(await runCli(['config', 'check', '--agent', agent], { DB_ADMIN_PASSWORD: 'pw' })).toEqual({
      code: 0,
      stdout: `config OK: ${agent} (agent dc1, 1 target)\n`,
      stderr: '',
    });
    const missing = await runCli(['config', 'check', '--agent', agent], {});
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/agent\.yaml:\d+: targets\[0\]\.credentials\.dynamic\.admin\.password/);
    const skipped = await runCli(['config', 'check', '--agent', '--skip-secrets', '--json', agent], {});
    expect(JSON.parse(skipped.stdout)).toEqual({ ok: true, agent: 'dc1', targets: 1 });
    const asGateway = await runCli(['config', 'check', '--skip-secrets', agent]);
    expect(asGateway.code).toBe(2);
    expect(asGateway.stderr).toContain(`ciport config check --agent ${agent}`);
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
