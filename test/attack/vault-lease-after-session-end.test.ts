// Attack: a job opens a connection to a `vault_database` target just as its session ends. The
// session's leases are revoked at its end; the connection, already past the gateway, asks for
// the session's credential afterwards: a new lease was minted, kept for nobody and never revoked
// (a live database account until the Vault role's TTL). It must be refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/config/secret.js';
import { VaultClient } from '../../src/credentials/vault-client.js';
import { VaultDatabaseCredentials } from '../../src/credentials/vault-database.js';
import { VaultFixture } from '../fixtures/vault.js';

let vault: VaultFixture;
beforeAll(async () => {
  vault = await new VaultFixture().start();
  // Never reached when the fix holds; a closed port, so that without it no real account is made
  // either (the mint then fails with another code, and the test still fails).
  vault.databaseRole('app', { protocol: 'mysql', host: '127.0.0.1', port: 1, user: 'nobody', password: 'x' });
});
afterAll(async () => {
  await vault?.stop();
});

describe('vault_database after the session ended', () => {
  it('mints no lease for a session whose leases were already revoked', async () => {
    const client = new VaultClient(
      { address: vault.url, auth: { token: new Secret({ env: 'T' }, vault.rootToken) } },
      { info() {}, warn() {} },
    );
    const creds = new VaultDatabaseCredentials([{ target: 'mdb', mount: 'database', role: 'app' }], {
      vault: client,
      log: { info() {}, warn() {}, error() {} },
      audit: async () => {},
    });
    try {
      const session = { id: 'ses_late1', expiresAt: Date.now() + 60_000 };
      await creds.revokeSession(session.id, ['mdb'], 'session_ended:revoked');
      await expect(creds.ensure(session, 'mdb')).rejects.toMatchObject({ code: 'CIPORT_E_SESSION_ENDED' });
      await expect(creds.ensure({ id: 'ses_late2', expiresAt: Date.now() - 1 }, 'mdb')).rejects.toMatchObject(
        { code: 'CIPORT_E_SESSION_ENDED' },
      );
      expect(vault.leases.size).toBe(0);
      expect(vault.requests.filter((r) => r.path.includes('/creds/'))).toEqual([]);
    } finally {
      creds.close();
      client.close();
    }
  });
});
