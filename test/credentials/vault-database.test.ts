// Vault-minted per-session accounts (src/credentials/vault-database.ts) against the Vault
// fixture and the machine's MariaDB: one lease per (session, target) even for concurrent first
// connections, audit events with the lease id and never the password, and a revoke that fails
// retried with backoff until Vault takes it (the account then gone). Leases outlive a crash: kept
// in the lease file (never a password), a new instance on it revokes those of ended sessions.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/config/secret.js';
import type { RoleEvent } from '../../src/credentials/dynamic.js';
import { VaultClient } from '../../src/credentials/vault-client.js';
import { VaultDatabaseCredentials } from '../../src/credentials/vault-database.js';
import { VaultFixture } from '../fixtures/vault.js';
import { waitFor } from '../fixtures/wait-for.js';

let vault: VaultFixture;
const ADMIN = `ciport_vdb_${Math.random().toString(36).slice(2, 8)}`;
const ADMIN_PW = `vdb-admin-${Math.random().toString(36).slice(2)}`;

async function root<T>(fn: (c: mysql.Connection) => Promise<T>): Promise<T> {
  const c = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  await root(async (c) => {
    await c.query(`CREATE USER '${ADMIN}'@'%' IDENTIFIED BY '${ADMIN_PW}'`);
    await c.query(`GRANT CREATE USER ON *.* TO '${ADMIN}'@'%'`);
  });
  vault = await new VaultFixture().start();
  vault.databaseRole('app', {
    protocol: 'mysql',
    host: '127.0.0.1',
    port: 3306,
    user: ADMIN,
    password: ADMIN_PW,
  });
});
afterAll(async () => {
  await vault?.stop();
  await root((c) => c.query(`DROP USER IF EXISTS '${ADMIN}'@'%'`));
});

describe('VaultDatabaseCredentials', () => {
  it('mints one account per session and target, logs in with it, and retries a failed revoke until it is gone', async () => {
    const events: RoleEvent[] = [];
    const client = new VaultClient(
      { address: vault.url, auth: { token: new Secret({ env: 'T' }, vault.rootToken) } },
      { info() {}, warn() {} },
    );
    const failures: string[] = [];
    const creds = new VaultDatabaseCredentials([{ target: 'mdb', mount: 'database', role: 'app' }], {
      vault: client,
      log: { info() {}, warn() {}, error() {} },
      audit: async (e) => {
        events.push(e);
      },
      onRevokeFailed: (t) => failures.push(t),
      retryBaseMs: 50,
    });
    try {
      const session = { id: 'ses_vdb1', expiresAt: Date.now() + 60_000 };
      const [a, b] = await Promise.all([creds.ensure(session, 'mdb'), creds.ensure(session, 'mdb')]);
      expect(a).toEqual(b);
      expect(vault.leases.size).toBe(1);
      const c = await mysql.createConnection({
        host: '127.0.0.1',
        port: 3306,
        user: a.user,
        password: a.password,
      });
      const [rows] = await c.query('SELECT CURRENT_USER() AS u');
      await c.end();
      expect((rows as Array<{ u: string }>)[0]?.u).toBe(`${a.user}@%`);

      vault.failRevokes = 2;
      await creds.revokeSession('ses_vdb1', ['mdb'], 'session_ended:closed');
      const lease = [...vault.leases.values()][0];
      await waitFor(() => lease?.revoked, 10_000, 'the lease revoked after the retries');
      await waitFor(() => events.some((e) => e.type === 'credential.revoked'));
      expect(events.map((e) => e.type)).toEqual([
        'credential.created',
        'credential.revoke_failed',
        'credential.revoke_failed',
        'credential.revoked',
      ]);
      expect(events[2]).toMatchObject({
        attempt: 2,
        code: 'CIPORT_E_VAULT_LEASE_REVOKE_FAILED',
        lease_id: lease?.id,
      });
      expect(failures).toEqual(['mdb', 'mdb']);
      expect(JSON.stringify(events)).not.toContain(a.password);
      const [left] = await root((r) => r.query('SELECT user FROM mysql.user WHERE user = ?', [a.user]));
      expect(left).toEqual([]);
    } finally {
      creds.close();
      client.close();
    }
  });

  it('revokes after a restart the leases of sessions that ended meanwhile, and keeps the live ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciport-vdb-'));
    const leaseFile = join(dir, 'vault-leases.json');
    const client = new VaultClient(
      { address: vault.url, auth: { token: new Secret({ env: 'T' }, vault.rootToken) } },
      { info() {}, warn() {} },
    );
    const log = { info() {}, warn() {}, error() {} };
    const spec = [{ target: 'mdb', mount: 'database', role: 'app' }];
    const before = new VaultDatabaseCredentials(spec, {
      vault: client,
      log,
      audit: async () => {},
      leaseFile,
    });
    const events: RoleEvent[] = [];
    let after: VaultDatabaseCredentials | undefined;
    try {
      const ended = await before.ensure({ id: 'ses_ended', expiresAt: Date.now() + 3_600_000 }, 'mdb');
      const expiresAt = Date.now() + 300;
      const expired = await before.ensure({ id: 'ses_expired', expiresAt }, 'mdb');
      const live = await before.ensure({ id: 'ses_live', expiresAt: Date.now() + 3_600_000 }, 'mdb');
      const leaseOf = (user: string) => [...vault.leases.values()].find((l) => l.username === user);
      const text = readFileSync(leaseFile, 'utf8');
      for (const c of [ended, expired, live]) {
        expect(text).toContain(leaseOf(c.user)?.id);
        expect(text).not.toContain(c.password);
      }
      expect(statSync(leaseFile).mode & 0o777).toBe(0o600);
      // The crash: the instance goes without revoking anything.
      before.close();
      await waitFor(() => Date.now() > expiresAt, 5_000, 'ses_expired past its expiry');

      vault.failRevokes = 1;
      const asked: string[][] = [];
      after = new VaultDatabaseCredentials(spec, {
        vault: client,
        log,
        audit: async (e) => {
          events.push(e);
        },
        leaseFile,
        retryBaseMs: 50,
        ended: async (ids) => {
          asked.push(ids);
          return new Set(ids.filter((id) => id === 'ses_ended'));
        },
      });
      await after.startReaper(0);
      const revoked = (user: string) =>
        vault.requests.some(
          (r) =>
            r.path === 'sys/leases/revoke' &&
            r.status === 204 &&
            (r.body as { lease_id?: string }).lease_id === leaseOf(user)?.id,
        );
      await waitFor(() => revoked(ended.user) && revoked(expired.user), 10_000, 'both leases revoked');
      await waitFor(() => !readFileSync(leaseFile, 'utf8').includes(leaseOf(expired.user)?.id as string));
      expect(asked.flat().sort()).toEqual(['ses_ended', 'ses_live']);
      expect(leaseOf(live.user)?.revoked).toBe(false);
      expect(events.map((e) => e.type).sort()).toEqual([
        'credential.revoke_failed',
        'credential.revoked',
        'credential.revoked',
      ]);
      expect(events.filter((e) => e.type === 'credential.revoked').map((e) => e.reason)).toEqual([
        'reaper',
        'reaper',
      ]);
      const users = async () =>
        (
          (await root((r) =>
            r.query('SELECT User AS u FROM mysql.user WHERE User IN (?, ?, ?)', [
              ended.user,
              expired.user,
              live.user,
            ]),
          )) as unknown as [Array<{ u: string }>]
        )[0].map((r) => r.u);
      expect(await users()).toEqual([live.user]);
      const left = readFileSync(leaseFile, 'utf8');
      expect(left).toContain(leaseOf(live.user)?.id);
      expect(left).not.toContain(leaseOf(ended.user)?.id);
      expect(left).not.toContain(live.password);

      // The live session's end, told to the new instance, revokes the lease of the old one.
      await after.revokeSession('ses_live', ['mdb'], 'session_ended:closed');
      expect(leaseOf(live.user)?.revoked).toBe(true);
      expect(await users()).toEqual([]);
      expect(JSON.parse(readFileSync(leaseFile, 'utf8'))).toEqual({ leases: [] });
    } finally {
      before.close();
      after?.close();
      client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
