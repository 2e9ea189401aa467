// The per-session roles' admin password from a provider (docs/secrets.md): when the server
// refuses the admin's login (28P01) the secret is read again and, when it changed, the login is
// tried once more with the new value; an unchanged secret leaves the error as it was.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/config/secret.js';
import { DynamicCredentials } from '../../src/credentials/dynamic.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';

let server: PgServer;

beforeAll(async () => {
  server = await startPgServer({
    roles: [
      { name: 'app', password: 'app-pw' },
      { name: 'adm', password: 'adm-new-pw', attributes: 'CREATEROLE' },
    ],
    databases: { app: 'app' },
  });
  const version = Number(await server.sql('SHOW server_version_num'));
  await server.sql(
    'CREATE ROLE readonly NOLOGIN; GRANT app TO adm;' +
      (version >= 160000 ? ' GRANT readonly TO adm WITH ADMIN OPTION;' : ''),
  );
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

describe('dynamic admin password from a provider', () => {
  it('a refused admin login re-reads the secret; the next creation logs in with the new value', async () => {
    // As the providers set it up: the old value in use, the provider already holding the new one.
    const password = new Secret({ aws_secretsmanager: { secret_id: 'ci/adm' } }, 'adm-old-pw');
    let reads = 0;
    let provider = 'adm-new-pw';
    password.onRefused(async () => {
      reads++;
      return password.update(provider);
    });
    const roles = new DynamicCredentials(
      [
        {
          protocol: 'postgres',
          target: 'db',
          host: server.host,
          port: server.port,
          tls: undefined,
          database: 'app',
          adminUser: 'adm',
          adminPassword: password,
          grant: ['readonly'],
          owner: 'app',
          create: 'first_connection',
        },
      ],
      { log: { info() {}, warn() {}, error() {} }, audit: async () => {}, deploymentId: 'abcdef0123' },
    );
    const session = { id: 'ses_admrot', expiresAt: Date.now() + 60_000 };
    const made = await roles.ensure(session, 'db');
    expect(made.user).toMatch(/^ciport_/);
    expect(reads).toBe(1);
    await roles.revokeSession(session.id, ['db'], 'test');

    // The provider has nothing newer: the refusal stands, and says why without the password.
    provider = 'adm-wrong-pw';
    password.update(provider);
    const err = await roles
      .ensure({ id: 'ses_admrot2', expiresAt: Date.now() + 60_000 }, 'db')
      .catch((e) => e);
    expect(String(err.message)).toContain('cannot connect as the dynamic-credentials admin');
    expect(String(err.message)).not.toContain('adm-wrong-pw');
    expect(reads).toBe(2);
  });
});
