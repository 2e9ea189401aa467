// Provider secrets (src/credentials/secret-providers.ts) against the AWS and Vault fixtures: read
// at start, re-read on refresh and on refusal, the last good value kept while the provider is
// down (warn once, recovered once, metrics), a start failure naming the config path, and the
// Vault client's AppRole login, 403 re-login and namespace header. Never a value in a log line.
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import { SecretProviders } from '../../src/credentials/secret-providers.js';
import { VaultClient } from '../../src/credentials/vault-client.js';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';
import { linesLogger } from '../fixtures/gateway.js';
import { VaultFixture } from '../fixtures/vault.js';

let aws: AwsFixture;
let vault: VaultFixture;
const SECRET_ID = 'ci/app-db';
const V1 = `first-${Math.random().toString(36).slice(2)}-pw`;
const V2 = `second-${Math.random().toString(36).slice(2)}-pw`;
const KV1 = `kv-one-${Math.random().toString(36).slice(2)}`;
const KV2 = `kv-two-${Math.random().toString(36).slice(2)}`;
const SECRET_ID_VALUE = `approle-secret-${Math.random().toString(36).slice(2)}`;

beforeAll(async () => {
  aws = await startAwsFixture();
  // The SDK's provider chain and endpoint resolution read these (vitest: one process per file).
  Object.assign(process.env, aws.env());
  vault = await new VaultFixture().start();
  vault.approle('role-ciport', SECRET_ID_VALUE);
});
afterAll(async () => {
  await aws?.stop().catch(() => {});
  await vault?.stop().catch(() => {});
});

function config(targets: object[], withVault = true) {
  return parseGatewayConfig(
    JSON.stringify({
      targets,
      ...(withVault
        ? {
            vault: {
              address: vault.url,
              namespace: 'team-a',
              auth: { approle: { role_id: 'role-ciport', secret_id: { env: 'VAULT_SECRET_ID' } } },
            },
          }
        : {}),
    }),
    'gateway.yaml',
    { env: { VAULT_SECRET_ID: SECRET_ID_VALUE } },
  );
}

const pgTarget = (name: string, password: object) => ({
  name,
  protocol: 'postgres',
  address: '127.0.0.1:5432',
  credentials: { user: 'app', password },
});

const passwordOf = (cfg: ReturnType<typeof config>, i = 0) => {
  const t = cfg.targets[i];
  if (t?.protocol !== 'postgres' || !t.credentials?.password) throw new Error('no password');
  return t.credentials.password;
};

describe('AWS Secrets Manager', () => {
  it('reads a JSON key at start, picks up a rotation on refresh and on refusal, keeps the last good value while down', async () => {
    aws.putSecret(SECRET_ID, { username: 'app', password: V1 });
    const cfg = config(
      [pgTarget('db', { aws_secretsmanager: { secret_id: SECRET_ID, key: 'password' } })],
      false,
    );
    const lines: string[] = [];
    const registry = new Registry();
    const secrets = await SecretProviders.start(cfg, {
      log: linesLogger(lines),
      registry,
      refusedIntervalMs: 0,
    });
    try {
      const secret = passwordOf(cfg);
      expect(secret.reveal()).toBe(V1);
      expect(String(secret)).toBe(`[secret aws_secretsmanager:${SECRET_ID}#password]`);
      expect(JSON.stringify(secret)).not.toContain(V1);

      aws.putSecret(SECRET_ID, { username: 'app', password: V2 });
      expect(await secret.refused()).toBe(true);
      expect(secret.reveal()).toBe(V2);
      expect(await secret.refused()).toBe(false); // unchanged

      await aws.stop();
      await secrets.refreshAll();
      await secrets.refreshAll();
      expect(secret.reveal()).toBe(V2);
      const metrics = await registry.metrics();
      expect(metrics).toContain(`ciport_secret_stale{source="aws_secretsmanager:${SECRET_ID}"} 1`);
      expect(metrics).toContain(
        `ciport_secret_refresh_failures_total{source="aws_secretsmanager:${SECRET_ID}"} 2`,
      );
      const warns = lines.filter((l) => l.includes('keeping the last good value'));
      expect(warns).toHaveLength(1);
      expect(warns[0]).toContain('targets[0].credentials.password');
      const all = lines.join('\n');
      expect(all).not.toContain(V1);
      expect(all).not.toContain(V2);
    } finally {
      secrets.close();
      aws = await startAwsFixture();
      Object.assign(process.env, aws.env());
    }
  });

  it('a secret that cannot be read at start fails the start with CIPORT_E_SECRET_UNAVAILABLE naming its path', async () => {
    const cfg = config(
      [
        pgTarget('db', { env: 'VAULT_SECRET_ID' }),
        pgTarget('db2', { aws_secretsmanager: { secret_id: 'ci/missing', key: 'password' } }),
      ],
      false,
    );
    const err = await SecretProviders.start(cfg, { log: linesLogger([]), file: 'gateway.yaml' }).catch(
      (e) => e,
    );
    expect(err.code).toBe('CIPORT_E_SECRET_UNAVAILABLE');
    expect(err.message).toContain('gateway.yaml: targets[1].credentials.password');
    expect(err.message).toContain('aws_secretsmanager:ci/missing#password');
    expect(err.message).toContain('ResourceNotFoundException');
  });
});

describe('Vault KV v2', () => {
  it('logs in with AppRole, reads a version, rotates, logs in again after a 403, marks stale while down and recovered after', async () => {
    vault.putKv('secret/ci/redis', { password: KV1 });
    const cfg = config([pgTarget('db', { vault: { path: 'secret/ci/redis', key: 'password' } })]);
    const lines: string[] = [];
    const registry = new Registry();
    const secrets = await SecretProviders.start(cfg, {
      log: linesLogger(lines),
      registry,
      vault: cfg.vault,
      refusedIntervalMs: 0,
    });
    try {
      const secret = passwordOf(cfg);
      expect(secret.reveal()).toBe(KV1);
      const read = vault.requests.find((r) => r.path === 'secret/data/ci/redis');
      expect(read?.namespace).toBe('team-a');
      expect(read?.token).toBe(vault.loginTokens[0]);
      expect(vault.requests[0]).toMatchObject({ method: 'POST', path: 'auth/approle/login' });

      vault.putKv('secret/ci/redis', { password: KV2 });
      vault.revokeToken(vault.loginTokens[0] as string);
      expect(await secret.refused()).toBe(true);
      expect(secret.reveal()).toBe(KV2);
      expect(vault.loginTokens).toHaveLength(2); // the 403 made it log in again

      await vault.pause();
      await secrets.refreshAll();
      expect(secret.reveal()).toBe(KV2);
      expect(await registry.metrics()).toContain('ciport_secret_stale{source="vault:secret/ci/redis"} 1');
      await vault.resume();
      await secrets.refreshAll();
      expect(await registry.metrics()).toContain('ciport_secret_stale{source="vault:secret/ci/redis"} 0');
      expect(lines.filter((l) => l.includes('secret provider readable again'))).toHaveLength(1);
      const all = lines.join('\n');
      for (const v of [KV1, KV2, SECRET_ID_VALUE, ...vault.loginTokens]) expect(all).not.toContain(v);
    } finally {
      secrets.close();
    }
  });

  it('a missing key or secret fails the start; a {vault} secret without the vault block is a config error', async () => {
    vault.putKv('secret/ci/other', { user: 'x' });
    const cfg = config([
      pgTarget('db', { vault: { path: 'secret/ci/other', key: 'password' } }),
      pgTarget('db2', { vault: { path: 'secret/ci/nothing', key: 'password' } }),
    ]);
    const err = await SecretProviders.start(cfg, { log: linesLogger([]), vault: cfg.vault }).catch((e) => e);
    expect(err.code).toBe('CIPORT_E_SECRET_UNAVAILABLE');
    expect(err.message).toContain(
      'targets[0].credentials.password: cannot read vault:secret/ci/other#password',
    );
    expect(err.message).toContain('no string field "password"');
    expect(err.message).toContain('targets[1].credentials.password');
    expect(err.message).toContain('no such secret');

    expect(() => config([pgTarget('db', { vault: { path: 'secret/ci/x', key: 'k' } })], false)).toThrow(
      /targets\[0\]\.credentials\.password: a \{vault: …\} secret needs the top-level `vault:` block/,
    );
  });

  it('token auth: looks the token up, renews it before it expires, and a refused token fails with the path', async () => {
    const token = vault.createToken({ ttl: 3, renewable: true });
    const client = new VaultClient(
      {
        address: vault.url,
        auth: { token: new (await import('../../src/config/secret.js')).Secret({ env: 'T' }, token) },
      },
      { info() {}, warn() {} },
    );
    try {
      await client.ready();
      expect(vault.requests.at(-1)).toMatchObject({ path: 'auth/token/lookup-self', token });
      const { waitFor } = await import('../fixtures/wait-for.js');
      await waitFor(
        () => vault.requests.some((r) => r.path === 'auth/token/renew-self' && r.token === token),
        10_000,
      );
      vault.revokeToken(token);
      const err = await client.request('GET', 'secret/data/ci/redis').catch((e) => e);
      expect(err.code).toBe('CIPORT_E_VAULT_REFUSED');
      expect(err.message).toContain('permission denied');
      expect(err.message).not.toContain(token);
    } finally {
      client.close();
    }
  });
});

describe('config', () => {
  const parse = (doc: object) =>
    parseGatewayConfig(JSON.stringify(doc), 'gateway.yaml', { env: { VAULT_SECRET_ID: 'x', A: 'y' } });
  const vaultBlock = { address: 'https://vault.internal:8200', auth: { token: { env: 'A' } } };

  it('provider sources only in targets: top-level secrets stay {env}/{file}', () => {
    expect(() => parse({ admin_tokens: [{ aws_secretsmanager: { secret_id: 'x' } }], targets: [] })).toThrow(
      /admin_tokens\[0\]/,
    );
    const cfg = parse({
      targets: [
        {
          name: 'api',
          protocol: 'http',
          address: 'api.internal:443',
          tls: true,
          credentials: { token: { aws_secretsmanager: { secret_id: 'ci/api', refresh: '30s' } } },
        },
      ],
    });
    const t = cfg.targets[0];
    expect(t?.protocol === 'http' && t.credentials?.token?.source).toEqual({
      aws_secretsmanager: { secret_id: 'ci/api', refresh: 30_000 },
    });
  });

  it('vault_database: not with dynamic, and only with a vault block; a KV path names its mount', () => {
    const target = (credentials: object) => ({
      name: 'db',
      protocol: 'postgres',
      address: '127.0.0.1:5432',
      credentials,
    });
    expect(() => parse({ targets: [target({ vault_database: { role: 'ro' } })] })).toThrow(
      /targets\[0\]\.credentials\.vault_database: needs the top-level `vault:` block/,
    );
    expect(() =>
      parse({
        vault: vaultBlock,
        targets: [
          target({
            vault_database: { role: 'ro' },
            dynamic: { admin: { user: 'a', password: { env: 'A' } }, owner: 'app' },
          }),
        ],
      }),
    ).toThrow(/choose one/);
    const ok = parse({ vault: vaultBlock, targets: [target({ vault_database: { role: 'ro' } })] });
    const t = ok.targets[0];
    expect(t?.protocol === 'postgres' && t.credentials?.vault_database).toEqual({
      role: 'ro',
      mount: 'database',
    });
    expect(() =>
      parse({
        vault: vaultBlock,
        targets: [target({ user: 'u', password: { vault: { path: 'nomount', key: 'k' } } })],
      }),
    ).toThrow(/<mount>\/<path>/);
  });
});
