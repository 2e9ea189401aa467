// TLS to the upstream: a server that only accepts TLS (hostssl; hostnossl rejected), with a
// certificate for localhost / 127.0.0.1 from a test CA.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CancelRegistry, sendCancelRequest } from '../../../src/exits/postgres/cancel.js';
import type { PgUpstreamTarget } from '../../../src/exits/postgres/exit.js';
import { connectUpstream, type UpstreamTlsOptions } from '../../../src/exits/postgres/upstream.js';
import { type PgServer, startPgServer } from '../../fixtures/pg-server.js';
import { waitFor } from '../../fixtures/wait-for.js';
import { type PortHarness, runClient, spawnClient, startPort } from './harness.js';

const PW = `tls-${randomBytes(12).toString('hex')}`;
let server: PgServer;
const harnesses: PortHarness[] = [];

beforeAll(async () => {
  server = await startPgServer({
    ssl: true,
    roles: [{ name: 'app', password: PW }],
    databases: { app: 'app' },
    hba: ['hostssl all all 127.0.0.1/32 scram-sha-256', 'hostnossl all all 127.0.0.1/32 reject'],
  });
});

afterAll(async () => {
  await Promise.all(harnesses.map((h) => h.close()));
  await server?.stop();
});

const target = (tls: UpstreamTlsOptions | undefined): PgUpstreamTarget => ({
  host: '127.0.0.1',
  port: server.port,
  user: 'app',
  password: PW,
  database: 'app',
  tls,
});

async function port(tls: UpstreamTlsOptions | undefined) {
  const h = await startPort({ upstream: target(tls), registry: new CancelRegistry() });
  harnesses.push(h);
  return h;
}

const psql = (h: PortHarness, sql: string) =>
  runClient(server.bin('psql'), ['-X', '-A', '-t', '-c', sql], h.env());

describe('TLS upstream', () => {
  it('verify-full with the CA file: TLS in use, SCRAM-SHA-256-PLUS channel binding', async () => {
    const h = await port({ mode: 'verify-full', ca: server.caPem });
    const r = await psql(h, 'select ssl from pg_stat_ssl where pid = pg_backend_pid()');
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('t');
    expect(h.connected).toEqual([{ auth: 'SCRAM-SHA-256-PLUS', tls: true, processId: expect.any(Number) }]);
    // The application still talks plaintext SCRAM to the local listener.
    const c = new pg.Client({ connectionString: h.url(), ssl: false });
    await c.connect();
    expect((await c.query('select 1 as x')).rows).toEqual([{ x: 1 }]);
    await c.end();
  });

  it('verify-full against the certificate name (servername localhost)', async () => {
    const conn = await connectUpstream({
      ...target({ mode: 'verify-full', ca: server.caPem, servername: 'localhost' }),
    });
    conn.socket.destroy();
    expect(conn.tls).toBe(true);
    expect(conn.auth).toBe('SCRAM-SHA-256-PLUS');
  });

  it('refuses a server whose certificate does not chain to the configured CA', async () => {
    const err = (await connectUpstream(target({ mode: 'verify-full', ca: server.otherCaPem })).catch(
      (e) => e,
    )) as {
      code: string;
      message: string;
    };
    expect(err.code).toBe('CIPORT_E_TLS');
    expect(err.message).toMatch(/certificate/i);
    // And the application sees that, as an ErrorResponse.
    const h = await port({ mode: 'verify-full', ca: server.otherCaPem });
    const r = await psql(h, 'select 1');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('CIPORT_E_TLS');
  });

  it('refuses a certificate for another name in verify-full, accepts it in verify-ca', async () => {
    const wrongName = { ca: server.caPem, servername: 'db.example.com' };
    const err = (await connectUpstream(target({ mode: 'verify-full', ...wrongName })).catch((e) => e)) as {
      code: string;
      message: string;
    };
    expect(err.code).toBe('CIPORT_E_TLS');
    expect(err.message).toContain('db.example.com');
    const conn = await connectUpstream(target({ mode: 'verify-ca', ...wrongName }));
    conn.socket.destroy();
    expect(conn.tls).toBe(true);
  });

  it('refuses to trust the system roots for a private CA by default', async () => {
    const err = (await connectUpstream(target({ mode: 'verify-full' })).catch((e) => e)) as { code: string };
    expect(err.code).toBe('CIPORT_E_TLS');
  });

  it('require: encrypts without verifying', async () => {
    const conn = await connectUpstream(target({ mode: 'require' }));
    conn.socket.destroy();
    expect(conn.tls).toBe(true);
  });

  it('without TLS, the hostssl-only server refuses: a clear upstream auth error', async () => {
    const h = await port(undefined);
    const r = await psql(h, 'select 1');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('CIPORT_E_PG_UPSTREAM_AUTH');
    expect(r.stderr).toContain('no encryption');
  });

  it('cancels over TLS (psql Ctrl-C through a TLS upstream)', async () => {
    const h = await port({ mode: 'verify-full', ca: server.caPem });
    const { child, done } = spawnClient(server.bin('psql'), ['-X', '-c', 'select pg_sleep(30)'], h.env());
    await waitFor(
      async () =>
        (await server.sql(
          "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'",
        )) === '1',
      15_000,
      'pg_sleep to run',
    );
    child.kill('SIGINT');
    const r = await done;
    expect(r.stderr).toContain('canceling statement due to user request');
    await waitFor(async () => h.exitResults.some((x) => x.kind === 'cancel'), 15_000, 'cancel result');
    expect(h.exitResults).toContainEqual({ kind: 'cancel', forwarded: true });
  });

  it('a cancel to an unknown key is harmless', async () => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: server.port,
      user: 'app',
      password: PW,
      database: 'app',
      ssl: { ca: server.caPem, servername: 'localhost' },
    });
    await c.connect();
    try {
      const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
      const running = c.query('select pg_sleep(1), 42 as answer');
      await waitFor(
        async () =>
          (await server.sql(
            "select count(*) from pg_stat_activity where query = 'select pg_sleep(1), 42 as answer' and state = 'active'",
          )) === '1',
        15_000,
        'pg_sleep to run',
      );
      // That backend's pid with a wrong secret: the server ignores it, the query runs to its end.
      await expect(
        sendCancelRequest(
          { host: '127.0.0.1', port: server.port, tls: { mode: 'verify-full', ca: server.caPem } },
          { processId: processID, secretKey: secretKey ^ 1 },
        ),
      ).resolves.toBeUndefined();
      expect((await running).rows).toEqual([{ pg_sleep: '', answer: 42 }]);
    } finally {
      await c.end();
    }
  });
});
