import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { loadGatewayConfig, parseGatewayConfig } from '../../src/config/load.js';
import { gatewayJsonSchema } from '../../src/config/schema.js';
import { Secret } from '../../src/config/secret.js';
import { CiportError } from '../../src/errors/index.js';

const EXAMPLE = new URL('../../examples/gateway.yaml', import.meta.url).pathname;
const exampleEnv = { CIPORT_ADMIN_TOKEN: 'adm-123456', STAGING_DB_PASSWORD: 'pw-s3cret' };

function configError(fn: () => unknown): CiportError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CiportError);
    return err as CiportError;
  }
  throw new Error('expected a configuration error');
}

const minimal = (extra = '') => `
issuers:
  - name: gl
    kind: gitlab
    issuer: https://gitlab.example.com
    audience: https://ciport.example.com
${extra}`;

describe('the normative example', () => {
  it('validates as written, with its secrets from the environment', () => {
    const cfg = loadGatewayConfig(EXAMPLE, { resolveSecrets: false });
    expect(cfg.listen).toBe('127.0.0.1:8443');
    expect(cfg.sessions.default_ttl).toBe(15 * 60_000);
    expect(cfg.sessions.lease_timeout).toBe(30_000);
    expect(cfg.issuers[0]?.leeway).toBe(30_000);
    expect(cfg.issuers[0]?.algorithms).toEqual(['RS256', 'ES256']);
    expect(cfg.rules.map((r) => [r.name, r.deny])).toEqual([
      ['no-forks', true],
      ['ledger-main-to-staging', false],
    ]);
    expect(cfg.rules[1]?.max_ttl).toBe(30 * 60_000);
    expect(cfg.rules[1]?.when.ref).toEqual({ one_of: ['main', 'release'] });
  });

  it('resolves env secrets at load and never prints them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciport-cfg-'));
    writeFileSync(join(dir, 'tls.crt'), 'CERT\n');
    writeFileSync(join(dir, 'tls.key'), 'KEY\n');
    const text = (
      `tls:\n  cert: {file: ${join(dir, 'tls.crt')}}\n  key: {file: ${join(dir, 'tls.key')}}\n` +
      'admin_tokens:\n  - {env: CIPORT_ADMIN_TOKEN}\n' +
      'targets:\n  - name: db\n    protocol: postgres\n    address: db.internal:5432\n' +
      '    credentials: {user: app, password: {env: STAGING_DB_PASSWORD}}\n'
    ).trim();
    const cfg = parseGatewayConfig(text, 'inline.yaml', { env: exampleEnv });
    const target = cfg.targets[0];
    const password = target?.protocol === 'postgres' ? target.credentials?.password : undefined;
    expect(password).toBeInstanceOf(Secret);
    expect(password?.reveal()).toBe('pw-s3cret');
    expect(cfg.tls?.key.reveal()).toBe('KEY');
    expect((cfg.admin_tokens[0] as Secret).reveal()).toBe('adm-123456');
    const printed = [JSON.stringify(cfg), inspect(cfg, { depth: 10 }), String(password)].join('\n');
    expect(printed).not.toContain('pw-s3cret');
    expect(printed).not.toContain('adm-123456');
    expect(printed).toContain('STAGING_DB_PASSWORD');
  });

  it('is frozen after load', () => {
    const cfg = loadGatewayConfig(EXAMPLE, { resolveSecrets: false });
    expect(Object.isFrozen(cfg)).toBe(true);
    expect(Object.isFrozen(cfg.rules[1]?.when)).toBe(true);
    expect(() => {
      (cfg.rules as unknown as unknown[]).push({});
    }).toThrow(TypeError);
  });
});

describe('configuration errors', () => {
  it('names file, path and line of an unknown key', () => {
    const err = configError(() =>
      parseGatewayConfig(minimal('    audiense: x\n'), 'gw.yaml', { resolveSecrets: false }),
    );
    expect(err.code).toBe('CIPORT_E_CONFIG_INVALID');
    expect(err.message).toContain('gw.yaml:7: issuers[0]');
    expect(err.message).toContain('unknown key "audiense"');
  });

  it('names the path and line of a bad value', () => {
    const text = `${minimal()}  - name: gh\n    kind: github\n    issuer: https://token.actions.githubusercontent.com\n    audience: 12\n`;
    const err = configError(() => parseGatewayConfig(text, 'gw.yaml', { resolveSecrets: false }));
    expect(err.message).toMatch(/gw\.yaml:10: issuers\[1\]\.audience: /);
  });

  it('rejects bad durations, unknown issuers in rules and duplicate names', () => {
    const rules = `rules:\n  - name: r\n    issuer: nope\n    allow: [db]\n    max_ttl: 10 minutes\n  - name: r\n    issuer: gl\n    allow: [db]\n`;
    const err = configError(() => parseGatewayConfig(minimal(rules), 'gw.yaml', { resolveSecrets: false }));
    expect(err.message).toContain('rules[0].max_ttl');
    expect(err.message).toContain('rules[0].issuer: no issuer named "nope"');
    expect(err.message).toContain('rules[1].name: duplicate name "r"');
  });

  it('rejects an allowing rule without targets and a deny rule with targets', () => {
    const rules = `rules:\n  - name: a\n    issuer: gl\n  - name: d\n    deny: true\n    issuer: gl\n    allow: [db]\n`;
    const err = configError(() => parseGatewayConfig(minimal(rules), 'gw.yaml', { resolveSecrets: false }));
    expect(err.message).toContain('rules[0].allow: an allowing rule must name at least one target');
    expect(err.message).toContain('rules[1].allow: a deny rule cannot also allow targets');
  });

  it('reports YAML syntax errors with their line', () => {
    const err = configError(() => parseGatewayConfig('listen: [\nfoo: bar\n', 'gw.yaml'));
    expect(err.code).toBe('CIPORT_E_CONFIG_INVALID');
    expect(err.message).toMatch(/^gw\.yaml:\d+: YAML: /);
    // The line the error is on, not 0 (a duplicate key, as a hand-edited rule easily gets).
    const dup = configError(() =>
      parseGatewayConfig('listen: 127.0.0.1:1\nrules:\n  - name: a\n    name: b\n', 'gw.yaml'),
    );
    expect(dup.message).toBe('gw.yaml:4: YAML: Map keys must be unique');
  });

  it('says which secret is missing without revealing others', () => {
    const err = configError(() =>
      parseGatewayConfig('admin_tokens:\n  - {env: CIPORT_TEST_UNSET_VAR}\n', 'gw.yaml', { env: {} }),
    );
    expect(err.code).toBe('CIPORT_E_SECRET_UNAVAILABLE');
    expect(err.message).toBe(
      'gw.yaml:2: admin_tokens[0]: environment variable CIPORT_TEST_UNSET_VAR is not set',
    );
  });

  it('reports an unreadable file', () => {
    const err = configError(() => loadGatewayConfig('/nonexistent/ciport.yaml'));
    expect(err.code).toBe('CIPORT_E_CONFIG_UNREADABLE');
    expect(err.exitCode).toBe(2);
  });
});

describe('JSON Schema', () => {
  it('is generated from the zod schema and describes the top-level keys', () => {
    const schema = gatewayJsonSchema() as {
      properties: Record<string, unknown>;
      additionalProperties: unknown;
    };
    expect(Object.keys(schema.properties).sort()).toEqual(
      [
        'admin_tokens',
        'approvals',
        'audit',
        'client',
        'data_dir',
        'issuers',
        'listen',
        'policy',
        'public_url',
        'rules',
        'server',
        'sessions',
        'ssh',
        'sso',
        'store',
        'targets',
        'tls',
        'vault',
      ].sort(),
    );
    expect(schema.additionalProperties).toBe(false);
  });
});
