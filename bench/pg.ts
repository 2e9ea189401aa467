// `npm run bench -- pg`: pgbench through the port versus direct versus pgbouncer, in one run,
// interleaved and repeated. A throwaway SCRAM PostgreSQL (test/fixtures/pg-server.ts); the
// gateway (`ciport gateway`) and the client (`ciport open`) in their own processes, as in a job;
// pgbouncer (when installed) in transaction pooling mode against the same server.
//
// Paths: direct; port (query audit on: one `query` audit event per distinct statement, the
// product default); port without query audit; pgbouncer. Modes: `pgbench -S` with 1 client,
// with 16 clients, and `pgbench -S -C` (a new connection per transaction, 4 clients).
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { DevSigner, mintToken } from '../src/identity/index.js';
import { startPgServer } from '../test/fixtures/pg-server.js';
import { type PgConn, pgEnv } from './clients.js';
import { assertPostgresCanReachTmpdir, stopChild } from './proc.js';
import { fmt, median, nodeFlags, table } from './stats.js';

const run = promisify(execFile);
const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/ciport.js');
const ISSUER = 'https://bench-issuer.invalid';
const SECONDS = 3;

function child(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, [...nodeFlags(), '--', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

async function lineMatching(
  proc: ChildProcess,
  re: RegExp,
  stream: 'stdout' | 'stderr',
): Promise<RegExpExecArray> {
  const rl = createInterface({ input: proc[stream]! });
  for await (const line of rl) {
    const m = re.exec(line);
    if (m) return m;
  }
  throw new Error(`process ended before printing ${re}`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** utime + stime of a process in µs (Linux /proc), or NaN. */
function cpuMicros(pid: number | undefined, mainThread = false): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the comm field: state is fields[0], utime is field 14 of the line (fields[11]).
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100; // USER_HZ is 100 on Linux
  } catch {
    return Number.NaN;
  }
}

interface PgbenchRun {
  tps: number;
  /** Transactions processed. */
  tx: number;
}

async function pgbench(bin: string, c: PgConn, args: string[]): Promise<PgbenchRun> {
  let stdout: string;
  try {
    ({ stdout } = await run(bin, ['-n', '-S', '-T', String(SECONDS), ...args], {
      env: pgEnv(c),
      maxBuffer: 16 << 20,
      timeout: (SECONDS + 30) * 1000,
    }));
  } catch {
    return { tps: Number.NaN, tx: Number.NaN }; // hung or failed: shown as "n/a"
  }
  const m =
    /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout) ?? /tps = ([\d.]+)/.exec(stdout);
  const tx = /number of transactions actually processed: (\d+)/.exec(stdout);
  // No tps line: nothing was processed (e.g. the connections took the whole run): "n/a".
  if (!m || !tx || Number(tx[1]) === 0) {
    process.stderr.write(`pgbench processed nothing:\n${stdout}\n`);
    return { tps: Number.NaN, tx: Number.NaN };
  }
  return { tps: Number(m[1]), tx: Number(tx[1]) };
}

function parseUrl(url: string): PgConn {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
  };
}

async function startPgbouncer(
  dir: string,
  upstream: PgConn,
): Promise<{ conn: PgConn; proc: ChildProcess } | undefined> {
  const bin = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));
  if (!bin) return undefined;
  const port = await freePort();
  const ini = join(dir, 'pgbouncer.ini');
  const users = join(dir, 'userlist.txt');
  writeFileSync(users, `"${upstream.user}" "${upstream.password}"\n`);
  writeFileSync(
    ini,
    `[databases]
${upstream.database} = host=${upstream.host} port=${upstream.port} dbname=${upstream.database}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = md5
auth_file = ${users}
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
logfile = ${join(dir, 'pgbouncer.log')}
pidfile = ${join(dir, 'pgbouncer.pid')}
`,
  );
  chmodSync(dir, 0o777);
  for (const f of [ini, users]) chmodSync(f, 0o644);
  // pgbouncer refuses to run as root: run it as the postgres OS user (as the server runs),
  // directly (not through runuser) so that SIGTERM reaches it.
  const ids =
    process.getuid?.() === 0
      ? {
          uid: Number((await run('id', ['-u', 'postgres'])).stdout.trim()),
          gid: Number((await run('id', ['-g', 'postgres'])).stdout.trim()),
        }
      : {};
  const proc = spawn(bin, [ini], { stdio: ['ignore', 'ignore', 'ignore'], ...ids });
  const conn = { ...upstream, host: '127.0.0.1', port };
  for (let i = 0; i < 100; i++) {
    try {
      await run('psql', ['-tAc', 'select 1'], { env: pgEnv(conn) });
      return { conn, proc };
    } catch {
      await sleep(100);
    }
  }
  proc.kill('SIGTERM');
  throw new Error(
    `pgbouncer did not start: ${existsSync(join(dir, 'pgbouncer.log')) ? readFileSync(join(dir, 'pgbouncer.log'), 'utf8') : ''}`,
  );
}

export async function benchPg(rounds: number): Promise<string> {
  assertPostgresCanReachTmpdir();
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-pg-'));
  try {
    return await measurePg(dir, rounds);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measurePg(dir: string, rounds: number): Promise<string> {
  const procs: ChildProcess[] = [];
  const password = `bench-${Date.now()}`;
  const pg = await startPgServer({
    roles: [{ name: 'app', password }],
    databases: { app: 'app' },
    settings: { max_connections: '200', shared_buffers: '128MB', fsync: 'off' },
  });
  try {
    const direct: PgConn = { host: pg.host, port: pg.port, user: 'app', password, database: 'app' };
    const pgbenchBin = pg.bin('pgbench');
    await run(pgbenchBin, ['-i', '-q', '-s', '10'], { env: pgEnv(direct) });

    const signer = await DevSigner.ephemeral();
    writeFileSync(join(dir, 'jwks.json'), JSON.stringify(signer.jwks()));
    const config = join(dir, 'gateway.yaml');
    writeFileSync(
      config,
      `listen: 127.0.0.1:0
data_dir: ${join(dir, 'data')}
sessions: {rate_limit: {per_minute: 100000, burst: 100000, per_issuer: {per_minute: 100000, burst: 100000}}, max_connections: 1000}
issuers:
  - {name: bench, kind: gitlab, issuer: ${ISSUER}, audience: ciport-bench, jwks_file: ${join(dir, 'jwks.json')}}
targets:
  - {name: db, protocol: postgres, address: 127.0.0.1:${pg.port}, database: app, credentials: {user: app, password: {env: BENCH_PG_PW}}}
  - {name: db-noaudit, protocol: postgres, address: 127.0.0.1:${pg.port}, database: app, query_audit: false, credentials: {user: app, password: {env: BENCH_PG_PW}}}
rules:
  - {name: bench, issuer: bench, when: {project_id: "1"}, allow: [db, db-noaudit]}
`,
    );
    const gateway = child([BIN, 'gateway', '--config', config], {
      CIPORT_LOG_LEVEL: 'warn',
      BENCH_PG_PW: password,
    });
    procs.push(gateway);
    const url = (await lineMatching(gateway, /gateway listening on (https:\/\/\S+)/, 'stderr'))[1]!;
    for (let i = 0; i < 100 && !existsSync(join(dir, 'data/ca.crt')); i++) await sleep(50);
    const token = await mintToken(
      signer,
      ISSUER,
      { project_id: '1', job_project_id: '1' },
      { audience: 'ciport-bench', ttlMs: 3_600_000 },
    );
    const envFile = join(dir, 'port.env');
    const open = child(
      [BIN, 'open', 'db', 'db-noaudit', '--env-file', envFile, '--state', join(dir, 'state.json')],
      {
        CIPORT_GATEWAY: url,
        CIPORT_CA_FILE: join(dir, 'data/ca.crt'),
        CIPORT_ID_TOKEN: token,
      },
    );
    procs.push(open);
    let openErr = '';
    open.stderr?.on('data', (c: Buffer) => {
      openErr += c.toString();
    });
    for (let i = 0; i < 200 && !existsSync(envFile); i++) await sleep(50);
    if (!existsSync(envFile)) throw new Error(`ciport open did not become ready within 10 s: ${openErr}`);
    const env = Object.fromEntries(
      readFileSync(envFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^'|'$/g, '')]),
    );
    const paths: Array<[string, PgConn]> = [
      ['direct', direct],
      ['port', parseUrl(env.CIPORT_DB_URL!)],
      ['port, query audit off', parseUrl(env.CIPORT_DB_NOAUDIT_URL!)],
    ];
    const bouncer = await startPgbouncer(dir, direct);
    if (bouncer) {
      procs.push(bouncer.proc);
      paths.push(['pgbouncer (transaction pool)', bouncer.conn]);
    }
    // Development: BENCH_PG_MODES=1,16 runs only those modes (1 = 1 client, 16 = 16 clients,
    // C = connect per transaction); the table keeps every path (ratios need "direct").
    const only = process.env.BENCH_PG_MODES?.split(',');
    const allModes: Array<[string, string[]]> = [
      ['pgbench -S, 1 client (tps)', ['-c', '1', '-j', '1']],
      ['pgbench -S, 16 clients (tps)', ['-c', '16', '-j', '4']],
      ['pgbench -S -C, 4 clients (tps, connect per transaction)', ['-C', '-c', '4', '-j', '4']],
    ];
    const modes = only ? allModes.filter((_, i) => only.includes(['1', '16', 'C'][i] as string)) : allModes;
    const results = new Map<string, number[]>();
    const ratios = new Map<string, number[]>();
    /** Gateway CPU µs per transaction (whole process, main thread), per mode and port path. */
    const gatewayCpu = new Map<string, number[]>();
    const gatewayMain = new Map<string, number[]>();
    for (let r = 0; r < rounds; r++) {
      for (const [mode, args] of modes) {
        // Rotate the order each round so warm-up and drift favour no path.
        const order = paths.map((_, i) => paths[(i + r) % paths.length]!);
        const measured = new Map<string, number>();
        for (const [name, conn] of order) {
          const cpu0 = cpuMicros(gateway.pid);
          const main0 = cpuMicros(gateway.pid, true);
          const { tps, tx } = await pgbench(pgbenchBin, conn, args);
          const cpu = (cpuMicros(gateway.pid) - cpu0) / tx;
          const main = (cpuMicros(gateway.pid, true) - main0) / tx;
          measured.set(name, tps);
          const key = `${mode}\u0000${name}`;
          results.set(key, [...(results.get(key) ?? []), tps]);
          if (name.startsWith('port')) {
            gatewayCpu.set(key, [...(gatewayCpu.get(key) ?? []), cpu]);
            gatewayMain.set(key, [...(gatewayMain.get(key) ?? []), main]);
          }
        }
        for (const [name] of paths) {
          const key = `${mode}\u0000${name}`;
          ratios.set(key, [...(ratios.get(key) ?? []), measured.get(name)! / measured.get('direct')!]);
        }
      }
    }
    const rows = [['mode', ...paths.map(([n]) => n)]];
    for (const [mode] of modes) {
      rows.push([
        mode,
        ...paths.map(([name]) => {
          const key = `${mode}\u0000${name}`;
          const values = results.get(key)!.filter((v) => Number.isFinite(v));
          if (values.length === 0) return 'n/a (hung or failed)';
          const tps = fmt(median(values));
          const rs = ratios.get(key)!.filter((v) => Number.isFinite(v));
          return name === 'direct' ? tps : `${tps} (${median(rs).toFixed(2)}x)`;
        }),
      ]);
    }
    const cpuRows = [
      ['gateway CPU per transaction (µs)', ...paths.filter(([n]) => n.startsWith('port')).map(([n]) => n)],
    ];
    for (const [mode] of modes) {
      cpuRows.push([
        mode.replace(/ \(tps.*\)$/, ''),
        ...paths
          .filter(([n]) => n.startsWith('port'))
          .map(([name]) => {
            const key = `${mode}\u0000${name}`;
            const values = (gatewayCpu.get(key) ?? []).filter((v) => Number.isFinite(v));
            const mains = (gatewayMain.get(key) ?? []).filter((v) => Number.isFinite(v));
            return values.length === 0 ? 'n/a' : `${median(values).toFixed(0)} (${median(mains).toFixed(0)})`;
          }),
      ]);
    }
    const [load1, load5] = loadavg();
    return [
      `pg: pgbench -S -T ${SECONDS} against a throwaway PostgreSQL (scale 10, SCRAM); gateway, client, pgbouncer and server in separate processes on one machine;`,
      `median of ${rounds} interleaved rounds; (ratio) = median per-round ratio to direct${bouncer ? '' : '; pgbouncer not installed: column omitted'}`,
      '',
      table(rows),
      '',
      table(cpuRows),
      '',
      `load average during the run: ${load1?.toFixed(2)} (1 min), ${load5?.toFixed(2)} (5 min)`,
    ].join('\n');
  } finally {
    await Promise.all(procs.reverse().map((p) => stopChild(p)));
    await pg.stop();
  }
}
