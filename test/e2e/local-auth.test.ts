// End to end, issue 10 item 8: only the job may use its local ports. A real gateway (in
// process) with an http target (HTTPS upstream, injected bearer token), a redis target (a
// password-protected redis-server, injected AUTH), a tcp target (echo) and a postgres target
// (the machine's PostgreSQL, a throwaway least-privilege role). One `ciport open` process holds
// the port; the job's tools (root here, as in CI) use it from the exported env unchanged, while
// the same tools run as another OS user (`setpriv --reuid=65534`, i.e. nobody) with the very
// same env — so knowing every secret — are refused on every protocol and reach no upstream.
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { makePki, startUpstream, type Upstream } from '../exits/http/helpers.js';
import { baseEnv, ensureBuilt, openedEnv, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { type RedisServer, startRedis } from '../fixtures/redis-server.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-localauth-'));
const suffix = Math.random().toString(36).slice(2, 10);
const REDIS_PASSWORD = `redis-Secret-${suffix}-pw`;
const API_TOKEN = `api-token-${suffix}-xyz`;
const ROLE = `localauth_${suffix}`;
const logLines: string[] = [];
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let redis: RedisServer;
let api: Upstream;
let echo: Server;
let open: { child: ChildProcess; stderr: () => string; result: Promise<unknown> };
/** What `ciport open` exported. */
let ported: Record<string, string>;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command (as the job, or as nobody) with PATH plus `env`; never throws. */
function run(cmd: string[], env: Record<string, string>, asNobody = false): Promise<Run> {
  const argv = asNobody ? [...NOBODY, ...cmd] : cmd;
  return new Promise((resolve) => {
    execFile(
      argv[0] as string,
      argv.slice(1),
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp', PSQLRC: '/dev/null', ...env },
        timeout: 20_000,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const sh = (script: string, asNobody = false, env = ported) => run(['sh', '-c', script], env, asNobody);

/** redis-cli straight to the target's server (database 2), with its real password. */
function redisDirect(...args: string[]): Promise<Run> {
  const cmd = ['redis-cli', '-p', String(redis.port), '--no-auth-warning', '-a', REDIS_PASSWORD, '-n', '2'];
  return run([...cmd, ...args], {});
}

/** Connections Redis has accepted so far, counting the one that asks. */
async function redisConnections(): Promise<number> {
  const info = (await redisDirect('INFO', 'stats')).stdout;
  return Number(/total_connections_received:(\d+)/.exec(info)?.[1]);
}

function psqlAdmin(sql: string): Promise<Run> {
  return run(
    ['psql', '-h', '127.0.0.1', '-U', 'postgres', '-d', 'test', '-v', 'ON_ERROR_STOP=1', '-tAc', sql],
    {},
  );
}

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  redis = await startRedis(['--requirepass', REDIS_PASSWORD]);
  const pki = makePki();
  writeFileSync(join(dir, 'api-ca.pem'), pki.caPem);
  api = await startUpstream(pki, { name: 'authorization', value: `Bearer ${API_TOKEN}` });
  echo = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const created = await psqlAdmin(`CREATE ROLE ${ROLE} LOGIN; GRANT CONNECT ON DATABASE test TO ${ROLE}`);
  expect(created.stderr).toBe('');

  const port = await freePort();
  const config = {
    listen: `127.0.0.1:${port}`,
    ...e2eGatewayDoc(join(dir, 'data'), issuer.url),
    targets: [
      {
        name: 'api',
        protocol: 'http',
        address: `127.0.0.1:${api.port}`,
        tls: { ca: { file: join(dir, 'api-ca.pem') }, servername: 'localhost' },
        credentials: { token: { env: 'API_TOKEN' } },
      },
      {
        name: 'cache',
        protocol: 'redis',
        address: `127.0.0.1:${redis.port}`,
        database: '2',
        credentials: { password: { env: 'REDIS_PW' } },
      },
      { name: 'raw', protocol: 'tcp', address: `127.0.0.1:${(echo.address() as { port: number }).port}` },
      // The machine's PostgreSQL trusts loopback: the role has no password to inject.
      {
        name: 'db',
        protocol: 'postgres',
        address: '127.0.0.1:5432',
        database: 'test',
        credentials: { user: ROLE },
      },
    ],
    rules: [
      {
        name: 'ledger-main',
        issuer: 'gitlab',
        when: { project_id: '61577203', ref_protected: true },
        allow: ['api', 'cache', 'raw', 'db'],
      },
    ],
  };
  gateway = await startTestGateway(gatewayConfig(config, { REDIS_PW: REDIS_PASSWORD, API_TOKEN }), {
    logLines,
    sweepIntervalMs: 250,
  });
  const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
  const envFile = join(dir, 'port.env');
  open = spawnCli(
    [
      'open',
      '--verbose',
      'api',
      'cache',
      'raw',
      'db',
      '--env-file',
      envFile,
      '--state',
      join(dir, 'open.json'),
    ],
    {
      env: baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ID_TOKEN: token }),
      timeoutMs: 120_000,
    },
  );
  ported = await openedEnv(envFile);
  expect(statSync(envFile).mode & 0o777).toBe(0o600);
}, 180_000);

afterAll(async () => {
  open?.child.kill('SIGTERM');
  await open?.result;
  await gateway?.close();
  await issuer?.close();
  await api?.close();
  await redis?.stop();
  echo?.close();
  await psqlAdmin(`DROP ROLE IF EXISTS ${ROLE}`);
  rmSync(dir, { recursive: true, force: true });
});

describe('the exported env', () => {
  it('redis carries the one-time password as REDISCLI_AUTH and in the URLs (user default, database)', () => {
    const otp = ported.REDISCLI_AUTH as string;
    expect(otp).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(ported.CIPORT_CACHE_URL).toBe(`redis://:${otp}@127.0.0.1:${ported.CIPORT_CACHE_PORT}/2`);
    expect(ported.REDIS_URL).toBe(ported.CIPORT_CACHE_URL);
    // http stays without userinfo: fetch refuses URLs with credentials.
    expect(ported.CIPORT_API_URL).toBe(`http://127.0.0.1:${ported.CIPORT_API_PORT}`);
    expect(otp).not.toBe(ported.PGPASSWORD);
  });
});

describe('http: the peer check is the protection', () => {
  it("the job's curl and fetch get the upstream's answer (token injected by the exit)", async () => {
    const c = await sh('curl -sS --fail "$CIPORT_API_URL/hello"');
    expect(c).toMatchObject({ code: 0, stdout: '{"hello":"world"}' });
    const f = await run(
      [
        process.execPath,
        '-e',
        'fetch(process.env.CIPORT_API_URL + "/hello").then(r => r.text()).then(console.log)',
      ],
      ported,
    );
    expect(f).toMatchObject({ code: 0, stdout: '{"hello":"world"}\n' });
  });

  it("another user's curl is cut before any byte reaches the gateway", async () => {
    const seen = api.seen.length;
    const c = await sh('curl -sS "$CIPORT_API_URL/hello"', true);
    // 52: empty reply, 56: connection reset.
    expect([52, 56]).toContain(c.code);
    expect(c.stdout).toBe('');
    expect(api.seen.length).toBe(seen);
  });
});

describe('redis: one-time password and peer check', () => {
  it("the job's redis-cli (REDISCLI_AUTH, -h/-p, -u URL) and a raw RESP driver reading REDIS_URL", async () => {
    const key = `la-${suffix}`;
    const set = await sh(`redis-cli -h "$CIPORT_CACHE_HOST" -p "$CIPORT_CACHE_PORT" SET ${key} from-job`);
    expect(set).toMatchObject({ code: 0, stdout: 'OK\n', stderr: '' });
    const get = await sh(`redis-cli --no-auth-warning -u "$REDIS_URL" GET ${key}`);
    expect(get).toMatchObject({ code: 0, stdout: 'from-job\n' });
    // A driver: credentials from the URL, AUTH then SELECT as node-redis and ioredis do.
    const driver = `
      const net = require('node:net');
      const u = new URL(process.env.REDIS_URL);
      const cmd = (...a) => '*' + a.length + '\\r\\n' + a.map((x) => '$' + Buffer.byteLength(x) + '\\r\\n' + x + '\\r\\n').join('');
      const s = net.connect(+u.port, u.hostname);
      let got = '';
      s.on('data', (c) => { got += c; if (got.endsWith('from-job\\r\\n')) { console.log(JSON.stringify(got)); s.end(); } });
      s.write(cmd('AUTH', decodeURIComponent(u.password)) + cmd('SELECT', u.pathname.slice(1)) + cmd('GET', '${key}'));`;
    const d = await run([process.execPath, '-e', driver], ported);
    expect(JSON.parse(d.stdout)).toBe('+OK\r\n+OK\r\n$8\r\nfrom-job\r\n');
    // The key is really in the target's database 2 of the password-protected server.
    const direct = await redisDirect('GET', key);
    expect(direct.stdout).toBe('from-job\n');
  });

  it('the job without the password gets NOAUTH, and nothing reaches Redis', async () => {
    const env = { ...ported };
    delete env.REDISCLI_AUTH;
    const before = await redisConnections();
    const r = await sh('redis-cli -h "$CIPORT_CACHE_HOST" -p "$CIPORT_CACHE_PORT" GET x', false, env);
    expect(r.stdout).toMatch(/^NOAUTH Authentication required/);
    // No tunnel was opened, so the exit never dialled Redis: only our own INFO connection.
    expect(await redisConnections()).toBe(before + 1);
  });

  it('another user with the password is refused', async () => {
    const key = `la-nobody-${suffix}`;
    const before = await redisConnections();
    const r = await sh(`redis-cli -h "$CIPORT_CACHE_HOST" -p "$CIPORT_CACHE_PORT" SET ${key} evil`, true);
    expect(r.stdout).not.toContain('OK');
    expect(r.stdout + r.stderr).toMatch(/reset|closed|Error/i);
    expect(await redisConnections()).toBe(before + 1);
    const direct = await redisDirect('EXISTS', key);
    expect(direct.stdout).toBe('0\n');
  });
});

describe('tcp: the peer check only', () => {
  const roundTrip = 'exec 3<>/dev/tcp/127.0.0.1/$CIPORT_RAW_PORT; echo ping-raw >&3; head -1 <&3';
  it("the job's socket gets its echo; another user's gets nothing", async () => {
    expect(await run(['bash', '-c', roundTrip], ported)).toMatchObject({ code: 0, stdout: 'ping-raw\n' });
    const nobody = await run(['bash', '-c', roundTrip], ported, true);
    expect(nobody.stdout).toBe('');
  });
});

describe('postgres: one-time password and peer check', () => {
  it("the job's psql uses DATABASE_URL; another user with it is refused", async () => {
    const ok = await sh(`psql "$DATABASE_URL" -tAc 'select current_user'`);
    expect(ok).toMatchObject({ code: 0, stdout: `${ROLE}\n`, stderr: '' });
    const nobody = await sh(`psql "$DATABASE_URL" -tAc 'select current_user'`, true);
    expect(nobody.code).not.toBe(0);
    expect(nobody.stdout).toBe('');
    expect(nobody.stderr).toMatch(/closed the connection|server closed|connection to server/);
  });
});

describe('what the port says and where secrets are not', () => {
  it('one refusal line per target names uid 65534; no secret in --verbose logs, argv or gateway logs', async () => {
    await waitFor(
      () => (open.stderr().match(/refused a local connection/g) ?? []).length >= 4,
      10_000,
      'refusals',
    );
    const lines = open.stderr().trim().split('\n');
    for (const target of ['api', 'cache', 'raw', 'db']) {
      const mine = lines.filter((l) => l.startsWith(`ciport: ${target}: refused a local connection`));
      expect(mine, target).toHaveLength(1);
      expect(mine[0]).toMatch(
        /uid 65534 is not this job's uid 0 \(1 refused so far; CIPORT_E_LOCAL_PEER_REFUSED\)$/,
      );
    }
    // --verbose: every connection of the job was logged too, and still no secret.
    expect(open.stderr()).toMatch(/ciport: cache: connection \d+ closed \(sent /);
    const secrets = [ported.REDISCLI_AUTH, ported.PGPASSWORD, REDIS_PASSWORD, API_TOKEN] as string[];
    const cmdline = readFileSync(`/proc/${open.child.pid}/cmdline`, 'utf8');
    for (const s of secrets) {
      expect(open.stderr()).not.toContain(s);
      expect(cmdline).not.toContain(s);
      expect(logLines.join('\n')).not.toContain(s);
    }
  });
});
