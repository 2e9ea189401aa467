// End to end against a real PostgreSQL that requires SCRAM, with real clients (psql, pgbench,
// node-postgres) through local listener ⇄ tunnel hop ⇄ exit.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CancelRegistry, forwardCancel } from '../../../src/exits/postgres/cancel.js';
import type { PgUpstreamTarget } from '../../../src/exits/postgres/exit.js';
import { clearSaltedPasswordCache, saltedPasswordCacheStats } from '../../../src/exits/postgres/scram.js';
import { connectUpstream } from '../../../src/exits/postgres/upstream.js';
import { type PgServer, startPgServer } from '../../fixtures/pg-server.js';
import { waitFor } from '../../fixtures/wait-for.js';
import { type PortHarness, type Ran, runClient, spawnClient, startPort } from './harness.js';

const APP_PW = `up-${randomBytes(12).toString('hex')}`;
const MD5_PW = `md5-${randomBytes(12).toString('hex')}`;
const CLEAR_PW = `clr-${randomBytes(12).toString('hex')}`;
const SECRETS = [APP_PW, MD5_PW, CLEAR_PW];

let server: PgServer;
let work: string;
const harnesses: PortHarness[] = [];
const outputs: Ran[] = [];

async function port(
  upstream: Partial<PgUpstreamTarget> = {},
  extra: Parameters<typeof startPort>[0] extends infer O ? Partial<O> : never = {},
) {
  const h = await startPort({
    upstream: {
      host: '127.0.0.1',
      port: server.port,
      user: 'app',
      password: APP_PW,
      database: 'app',
      ...upstream,
    },
    ...extra,
  });
  harnesses.push(h);
  return h;
}

async function psql(h: PortHarness, args: string[], env: Record<string, string> = {}): Promise<Ran> {
  const r = await runClient(
    server.bin('psql'),
    ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', ...args],
    h.env(env),
  );
  outputs.push(r);
  return r;
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ciport-pg-e2e-'));
  server = await startPgServer({
    roles: [
      { name: 'app', password: APP_PW },
      { name: 'md5user', password: MD5_PW, encryption: 'md5' },
      { name: 'clearuser', password: CLEAR_PW },
    ],
    databases: { app: 'app' },
    hba: [
      'host all md5user 127.0.0.1/32 md5',
      'host all clearuser 127.0.0.1/32 password',
      'host all all 127.0.0.1/32 scram-sha-256',
    ],
  });
});

afterAll(async () => {
  await Promise.all(harnesses.map((h) => h.close()));
  await server?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('psql through the port', () => {
  it('runs a query with PGPASSWORD = the one-time password (SCRAM locally, SCRAM upstream)', async () => {
    const h = await port();
    const r = await psql(h, ['-c', 'select 1 as one, current_user, current_database()']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('1|app|app');
    expect(h.connected).toEqual([{ auth: 'SCRAM-SHA-256', tls: false, processId: expect.any(Number) }]);
    expect(h.events).toContainEqual({
      type: 'query',
      text: 'select 1 as one, current_user, current_database()',
      truncated: false,
      protocol: 'simple',
    });
    // psql's Terminate + close is a normal end of the relay, with bytes both ways counted.
    await waitFor(async () => h.exitResults.length > 0, 15_000, 'relay end');
    expect(h.exitResults[0]).toMatchObject({ kind: 'session', error: undefined });
    const r0 = h.exitResults[0] as { bytesFromApp: number; bytesFromUpstream: number };
    expect(r0.bytesFromApp).toBeGreaterThan(0);
    expect(r0.bytesFromUpstream).toBeGreaterThan(r0.bytesFromApp);
  });

  it('closes the upstream connection when the tunnel stream is cut (session ended)', async () => {
    const h = await port();
    const c = new pg.Client({ connectionString: h.url() });
    c.on('error', () => {});
    await c.connect();
    const pid = (await c.query('select pg_backend_pid() as pid')).rows[0].pid as number;
    expect(await server.sql(`select count(*) from pg_stat_activity where pid = ${pid}`)).toBe('1');
    await h.close(); // destroys the tunnel sockets, as an RST_STREAM would
    await waitFor(
      async () => (await server.sql(`select count(*) from pg_stat_activity where pid = ${pid}`)) === '0',
      15_000,
      'the backend to exit',
    );
    await c.end().catch(() => {});
  });

  it('connects with a URL that carries the one-time password (no PG* env)', async () => {
    const h = await port();
    const r = await runClient(
      server.bin('psql'),
      ['-X', '-A', '-t', h.url(), '-c', 'select 40 + 2'],
      h.env({}),
    );
    outputs.push(r);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('42');
  });

  it('forwards application_name and options from the startup packet', async () => {
    const h = await port();
    const r = await psql(
      h,
      ['-c', "select current_setting('application_name'), current_setting('search_path')"],
      {
        PGAPPNAME: 'migrator',
        PGOPTIONS: '-c search_path=audit_x',
      },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('migrator|audit_x');
  });

  it('uses the target user and database whatever the app asked for in the forwarded startup', async () => {
    const h = await port({}, { user: 'app' });
    // The local listener only accepts the exported user name…
    const wrongUser = await psql(h, ['-c', 'select 1'], { PGUSER: 'postgres' });
    expect(wrongUser.code).toBe(2);
    expect(wrongUser.stderr).toContain('CIPORT_E_PG_AUTH');
    // …and the exit ignores user/database/replication sent by a tampered client.
    const conn = await connectUpstream({
      host: '127.0.0.1',
      port: server.port,
      user: 'app',
      password: APP_PW,
      database: 'app',
      params: { user: 'postgres', database: 'postgres', replication: 'database', application_name: 'x' },
    });
    conn.socket.destroy();
    expect(conn.parameters.application_name).toBe('x');
    expect(conn.parameters.session_authorization).toBe('app');
  });

  it('copies a few thousand rows in and out with \\copy', async () => {
    const h = await port();
    const rows = Array.from({ length: 5000 }, (_, i) => `${i},"name ${i}, ${'x'.repeat(i % 50)}"`);
    const input = join(work, 'in.csv');
    const output = join(work, 'out.csv');
    writeFileSync(input, `${rows.join('\n')}\n`);
    const script = join(work, 'copy.sql');
    writeFileSync(
      script,
      [
        'create table copy_t (id int primary key, name text);',
        `\\copy copy_t from '${input}' csv`,
        'select count(*) from copy_t;',
        `\\copy (select * from copy_t order by id) to '${output}' csv`,
      ].join('\n'),
    );
    const r = await psql(h, ['-f', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('5000');
    expect(readFileSync(output, 'utf8')).toBe(readFileSync(input, 'utf8'));
    const up = await waitFor(
      async () => h.exitResults.find((x) => x.kind === 'session'),
      15_000,
      'relay end',
    );
    expect(up.kind === 'session' && up.bytesFromApp).toBeGreaterThan(150_000);
  });

  it('cancels a pg_sleep on Ctrl-C (SIGINT to psql → CancelRequest → exit → upstream)', async () => {
    const h = await port();
    const started = Date.now();
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
    outputs.push(r);
    expect(r.stderr).toContain('canceling statement due to user request');
    expect(Date.now() - started).toBeLessThan(15_000);
    await waitFor(async () => h.exitResults.some((x) => x.kind === 'cancel'), 15_000, 'the cancel stream');
    expect(h.exitResults).toContainEqual({ kind: 'cancel', forwarded: true });
  });

  it('cancels a pg_sleep with pg_cancel_backend from another connection through the port', async () => {
    const h = await port();
    const a = new pg.Client({ connectionString: h.url() });
    const b = new pg.Client({ connectionString: h.url() });
    await a.connect();
    await b.connect();
    try {
      const sleeping = a.query('select pg_sleep(30) as slept_through_port').catch((e: Error) => e);
      await waitFor(
        async () =>
          (await server.sql(
            "select count(*) from pg_stat_activity where query like '%slept_through_port%' and state = 'active' and pid <> pg_backend_pid()",
          )) === '1',
        15_000,
        'pg_sleep to run',
      );
      const res = await b.query(
        "select pg_cancel_backend(pid) as ok from pg_stat_activity where query like '%slept_through_port' and pid <> pg_backend_pid()",
      );
      expect(res.rows).toEqual([{ ok: true }]);
      const err = (await sleeping) as Error & { code?: string };
      expect(err.code).toBe('57014');
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('does not send a cancel whose key belongs to another session', async () => {
    const registry = new CancelRegistry();
    const h = await port({}, { registry, sessionId: 's-one' });
    const c = new pg.Client({ connectionString: h.url() });
    await c.connect();
    try {
      const key = [...h.connected][0];
      expect(key?.processId).toBeTypeOf('number');
      // The only registered key is s-one's; s-two cannot use it, s-one can.
      const sleeping = c.query('select pg_sleep(30)').catch((e: Error) => e);
      await waitFor(
        async () =>
          (await server.sql(
            "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'",
          )) === '1',
        15_000,
        'pg_sleep to run',
      );
      const secret = (c as unknown as { secretKey: number }).secretKey;
      const pid = (c as unknown as { processID: number }).processID;
      expect(pid).toBe(key?.processId);
      expect(await forwardCancel(registry, 's-two', { processId: pid, secretKey: secret })).toBe(false);
      expect(await forwardCancel(registry, 's-one', { processId: pid, secretKey: secret + 1 })).toBe(false);
      await new Promise((r) => setTimeout(r, 300));
      expect(
        await server.sql(
          "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'",
        ),
      ).toBe('1');
      expect(await forwardCancel(registry, 's-one', { processId: pid, secretKey: secret })).toBe(true);
      expect(((await sleeping) as { code?: string }).code).toBe('57014');
    } finally {
      await c.end();
    }
    await waitFor(async () => registry.size === 0, 15_000, 'unregistration');
  });

  it('refuses a wrong one-time password with 28P01 and never reaches the exit', async () => {
    const h = await port();
    const r = await psql(h, ['-c', 'select 1'], { PGPASSWORD: 'not-the-otp' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('password authentication failed for user "app"');
    expect(r.stderr).toContain('CIPORT_E_PG_AUTH');
    const c = new pg.Client({ connectionString: h.url('wrong'), connectionTimeoutMillis: 10_000 });
    const err = (await c.connect().catch((e: unknown) => e)) as { code?: string; message: string };
    expect(err.code).toBe('28P01');
    expect(err.message).toContain('CIPORT_E_PG_AUTH');
    expect(h.tunnels).toBe(0);
  });
});

describe('pgbench through the port', () => {
  it('initialises scale 1 (COPY of 100 000 rows) and runs for 3 seconds with prepared statements', async () => {
    const h = await port();
    const init = await runClient(server.bin('pgbench'), ['-i', '-s', '1', '-q'], h.env(), 120_000);
    outputs.push(init);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stderr).toContain('done');
    const eventsBefore = h.events.length;
    const run = await runClient(
      server.bin('pgbench'),
      ['-T', '3', '-c', '4', '-j', '2', '-M', 'prepared', '-n'],
      h.env(),
      60_000,
    );
    outputs.push(run);
    expect(run.code, run.stderr).toBe(0);
    const tx = Number(/number of transactions actually processed: (\d+)/.exec(run.stdout)?.[1]);
    expect(tx).toBeGreaterThan(100);
    // Each client prepares its statements once: events are per distinct statement, not per run.
    const runEvents = h.events.slice(eventsBefore).filter((e) => e.protocol === 'extended');
    expect(runEvents.length).toBeGreaterThanOrEqual(4 * 5);
    expect(runEvents.length).toBeLessThan(100);
    expect(runEvents.some((e) => e.text.startsWith('UPDATE pgbench_accounts SET abalance'))).toBe(true);
  });
});

describe('node-postgres through the port', () => {
  it('runs named and unnamed prepared statements; events dedupe re-executions of named ones', async () => {
    const h = await port();
    const c = new pg.Client({ connectionString: h.url() });
    await c.connect();
    try {
      for (const v of [1, 2, 3]) {
        const r = await c.query({ name: 'add-one', text: 'select $1::int + 1 as n', values: [v] });
        expect(r.rows).toEqual([{ n: v + 1 }]);
      }
      for (const v of ['a', 'b']) {
        const r = await c.query('select $1::text as t', [v]);
        expect(r.rows).toEqual([{ t: v }]);
      }
      await c.query('select 7');
    } finally {
      await c.end();
    }
    await waitFor(async () => h.exitResults.length > 0, 15_000, 'relay end');
    const texts = h.events.map((e) => `${e.protocol}:${e.text}`);
    expect(texts.filter((t) => t === 'extended:select $1::int + 1 as n')).toHaveLength(1);
    expect(texts.filter((t) => t === 'extended:select $1::text as t')).toHaveLength(2);
    expect(texts).toContain('simple:select 7');
  });

  it('reuses the salted password: a second connection skips PBKDF2', async () => {
    clearSaltedPasswordCache();
    const h = await port();
    for (let i = 0; i < 2; i++) {
      const c = new pg.Client({ connectionString: h.url() });
      await c.connect();
      await c.end();
    }
    const stats = saltedPasswordCacheStats();
    // Misses: the local verifier of the one-time password and the upstream salt, once each.
    expect(stats.misses).toBe(2);
    expect(stats.hits).toBeGreaterThanOrEqual(1);
  });
});

describe('upstream authentication methods and failures', () => {
  it('authenticates upstream with MD5', async () => {
    const h = await port({ user: 'md5user', password: MD5_PW });
    const r = await psql(h, ['-c', 'select current_user']);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('md5user');
    expect(h.connected[0]?.auth).toBe('md5');
  });

  it('authenticates upstream with a cleartext password (pg_hba "password")', async () => {
    const h = await port({ user: 'clearuser', password: CLEAR_PW });
    const r = await psql(h, ['-c', 'select current_user']);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('clearuser');
    expect(h.connected[0]?.auth).toBe('password');
  });

  it('refuses an upstream method the target does not allow', async () => {
    const h = await port({ user: 'clearuser', password: CLEAR_PW, allowedAuth: ['SCRAM-SHA-256'] });
    const r = await psql(h, ['-c', 'select 1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('CIPORT_E_PG_UPSTREAM_AUTH');
    expect(r.stderr).toContain('password authentication, which this target does not allow');
  });

  it('turns a wrong upstream password into a clear CIPORT_E_PG_UPSTREAM_AUTH for the app, quickly', async () => {
    const wrong = `wrong-${randomBytes(8).toString('hex')}`;
    const h = await port({ password: wrong });
    const started = Date.now();
    const r = await psql(h, ['-c', 'select 1']);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('CIPORT_E_PG_UPSTREAM_AUTH');
    expect(r.stderr).toContain('password authentication failed for user "app"');
    expect(r.stderr).not.toContain(wrong);
    const c = new pg.Client({ connectionString: h.url() });
    const err = (await c.connect().catch((e: unknown) => e)) as { code?: string; message: string };
    expect(err.code).toBe('28000');
    await waitFor(async () => h.exitErrors.length >= 2, 15_000, 'the exit to report');
    expect(h.exitErrors.map((e) => (e as { code?: string }).code)).toContain('CIPORT_E_PG_UPSTREAM_AUTH');
    expect(h.toApp().includes(wrong)).toBe(false);
  });

  it('reports a database the upstream does not have with its SQLSTATE', async () => {
    const h = await port({ database: 'no_such_db' });
    const c = new pg.Client({ connectionString: h.url() });
    const err = (await c.connect().catch((e: unknown) => e)) as { code?: string; message: string };
    expect(err.code).toBe('3D000');
    expect(err.message).toContain('CIPORT_E_PG_UPSTREAM_REFUSED');
  });

  it('reports an unreachable upstream as 08001 CIPORT_E_UPSTREAM_UNREACHABLE', async () => {
    const h = await port({ port: 1 });
    const r = await psql(h, ['-c', 'select 1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('CIPORT_E_UPSTREAM_UNREACHABLE');
  });
});

describe('query events', () => {
  it('truncates long statements at the configured length on a character boundary', async () => {
    const h = await port({}, { maxQueryLength: 24 });
    // 9 ASCII bytes, then two-byte characters: the 24-byte cut falls inside the 8th é.
    const long = `select 'xééééééééééééééééééé${'x'.repeat(200)}' as v`;
    const r = await psql(h, ['-c', long]);
    expect(r.code).toBe(0);
    const c = new pg.Client({ connectionString: h.url() });
    await c.connect();
    await c.query(`select $1::text || '${'y'.repeat(100)}' as v`, ['z']);
    await c.end();
    const simple = h.events.find((e) => e.protocol === 'simple');
    expect(simple).toEqual({ type: 'query', text: "select 'xééééééé", truncated: true, protocol: 'simple' });
    expect(Buffer.byteLength(simple?.text ?? '')).toBe(23);
    const extended = h.events.find((e) => e.protocol === 'extended');
    expect(extended).toEqual({
      type: 'query',
      text: "select $1::text || 'yyyy",
      truncated: true,
      protocol: 'extended',
    });
  });

  it('emits nothing when query events are switched off for the target', async () => {
    const h = await port({}, { queryEvents: false });
    const r = await psql(h, ['-c', 'select 1']);
    expect(r.code).toBe(0);
    const c = new pg.Client({ connectionString: h.url() });
    await c.connect();
    await c.query('select $1::int', [1]);
    await c.end();
    expect(h.events).toEqual([]);
  });
});

describe('secrets', () => {
  it('never lets an upstream password reach the application', () => {
    expect(harnesses.length).toBeGreaterThan(10);
    for (const h of harnesses) {
      const bytes = h.toApp();
      expect(bytes.length).toBeGreaterThan(0);
      for (const s of SECRETS) expect(bytes.includes(s)).toBe(false);
      for (const e of [...h.exitErrors, ...h.clientErrors]) {
        for (const s of SECRETS) expect(e.message).not.toContain(s);
      }
    }
    for (const o of outputs) for (const s of SECRETS) expect(o.stdout + o.stderr).not.toContain(s);
  });
});
