// `npm run bench` (no name): the peer table. One run starts, on loopback, a throwaway SCRAM
// PostgreSQL, an iperf3 server, the peers (bench/peers.ts: ssh -L, stunnel, haproxy,
// pgbouncer) and ciport with its defaults (bench/ciport.ts: gateway as exit, and through an
// agent), then measures every path in interleaved rounds (order rotated each round): iperf3
// bulk with 1 and 8 connections, pgbench -S with 1 and 16 clients, pgbench -S -C with 4
// clients, and the CI scenario (bench/ci.ts). Each figure is read as the median over the
// rounds of its ratio to direct in the same round, beside the proxy's own CPU time per unit of
// work (all its processes, from /proc). Raw figures go to bench/results/raw-<date>.tsv.
// Everything started is stopped by PID at the end (or on Ctrl-C).
import { execFile } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { startPgServer } from '../test/fixtures/pg-server.js';
import { ciScenario, dropSchema } from './ci.js';
import { type CiportPorts, startCiport } from './ciport.js';
import { type PgConn, pgEnv } from './clients.js';
import {
  debVersion,
  ensurePackages,
  type Forward,
  startHaproxy,
  startIperf3,
  startNodeTlsRelay,
  startPgbouncer,
  startSsh,
  startStunnel,
} from './peers.js';
import {
  assertPostgresCanReachTmpdir,
  cpuSeconds,
  Processes,
  readTrusted,
  startTime,
  stopRecorded,
  untrustedDir,
} from './proc.js';
import { fmt } from './stats.js';
import { PEER_IDS, parseTsv, type RawRow, renderTable, roundOrder, TESTS, toTsv } from './summary.js';

const run = promisify(execFile);
const ROOT = new URL('../../', import.meta.url).pathname;

export interface TableOptions {
  rounds: number;
  quick: boolean;
  /** Seconds per pgbench and per iperf3 run. */
  pgSeconds?: number;
  iperfSeconds?: number;
  /** Only these tests (ids: tcp1 tcp8 c1 c16 C4 ci) / only these peers (ssh stunnel haproxy nodetls pgbouncer ciport). */
  tests?: string[];
  peers?: string[];
}

interface PathDef {
  id: string;
  label: string;
  pg?: PgConn;
  tcp?: number;
  pids: number[];
  tests: ReadonlySet<string>;
}

function connOfUrl(url: string): PgConn {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
  };
}

const log = (line: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

async function tryRun(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run(cmd, args);
    return (stdout || stderr).trim().split('\n')[0] ?? '?';
  } catch {
    return '?';
  }
}

export async function benchTable(options: TableOptions): Promise<string> {
  const quick = options.quick;
  const rounds = Math.max(1, options.rounds);
  const pgSeconds = options.pgSeconds ?? (quick ? 2 : 4);
  const iperfSeconds = options.iperfSeconds ?? (quick ? 1 : 3);
  const ci = quick ? { queries: 1000, perConnection: 50 } : { queries: 5000, perConnection: 50 };
  const testIds = options.tests ?? (quick ? ['tcp1', 'c1', 'C4', 'ci'] : TESTS.map((t) => t.id));
  const tests = TESTS.filter((t) => testIds.includes(t.id));
  const wanted = (peer: string) => !options.peers || options.peers.includes(peer);
  const started = new Date();
  const t0 = performance.now();
  const stamp = started.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  // Private (mkdtemp makes it 0700; chmod in case): --stop-leftovers trusts only a directory
  // and record files that are ours and that nobody else can write.
  const unknown = [
    ...(options.tests ?? []).filter((t) => !TESTS.some((x) => x.id === t)),
    ...(options.peers ?? []).filter((p) => p !== 'direct' && !PEER_IDS.includes(p)),
  ];
  if (unknown.length) throw new Error(`unknown test or peer id: ${unknown.join(', ')}`);
  assertPostgresCanReachTmpdir();
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-table-'));
  chmodSync(dir, 0o700);
  const procs = new Processes(join(dir, 'pids'));
  writeFileSync(join(dir, 'owner'), `${process.pid} ${startTime(process.pid)}\n`, { mode: 0o600 });
  let stopping = false;
  const stopOnSignal = () => {
    if (stopping) return;
    stopping = true;
    try {
      log('interrupted: stopping what this run started');
    } catch {
      // the terminal or pipe may be gone (that may be why we stop)
    }
    // The same cleanup as a finished run's, then out: the run directory goes too once nothing
    // it records is left running.
    void procs
      .stopAll()
      .then(() => serverToStop?.stop())
      .then(() => rmSync(dir, { recursive: true, force: true }))
      .finally(() => process.exit(130));
  };
  // A closed output (`| head`, a dropped terminal) is an interruption too: stop what we started
  // rather than die on the next write and leave it running.
  const onOutputError = (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'EIO') stopOnSignal();
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  process.once('SIGHUP', stopOnSignal);
  process.stdout.on('error', onOutputError);
  process.stderr.on('error', onOutputError);
  let serverToStop: { stop(): Promise<void> } | undefined;
  let done = '';
  try {
    log(`peer table: ${quick ? 'quick, ' : ''}${rounds} round(s), work dir ${dir}, load average ${load()}`);
    const stillMissing = await ensurePackages(log);
    if (stillMissing.length) log(`still missing (their paths are skipped): ${stillMissing.join(' ')}`);

    const password = `bench-${Date.now()}`;
    const server = await startPgServer({
      roles: [{ name: 'app', password }],
      databases: { app: 'app' },
      settings: { max_connections: '200', shared_buffers: '256MB', fsync: 'off' },
    });
    serverToStop = server;
    // Recorded too, so that `npm run bench -- --stop-leftovers` can stop it (and remove its
    // directory) after a killed run.
    writeFileSync(join(dir, 'leftover-dirs'), `${server.socketDir}\t${statSync(server.socketDir).uid}\n`, {
      mode: 0o600,
    });
    try {
      procs.adopt(
        'postgres',
        Number(readFileSync(join(server.socketDir, 'data/postmaster.pid'), 'utf8').split('\n')[0]),
      );
    } catch {
      // no postmaster.pid: nothing to record
    }
    const direct: PgConn = { host: server.host, port: server.port, user: 'app', password, database: 'app' };
    const pgbenchBin = server.bin('pgbench');
    const scale = quick ? 1 : 10;
    log(`postgres on 127.0.0.1:${server.port}: pgbench -i -s ${scale}`);
    await run(pgbenchBin, ['-i', '-q', '-s', String(scale)], { env: pgEnv(direct) });
    await run(
      server.bin('psql'),
      [
        '-X',
        '-q',
        '-h',
        server.socketDir,
        '-p',
        String(server.port),
        '-U',
        'postgres',
        '-d',
        'app',
        '-c',
        'CREATE EXTENSION IF NOT EXISTS pg_prewarm',
        '-c',
        "SELECT pg_prewarm(c) FROM unnest(array['pgbench_accounts','pgbench_accounts_pkey','pgbench_branches','pgbench_tellers']) c",
      ],
      { env: { ...pgEnv(direct), PGPASSWORD: server.superPassword } },
    ).catch(() => log('pg_prewarm failed (continuing)'));
    const scram = await server.sql(`SELECT rolpassword FROM pg_authid WHERE rolname = 'app'`);

    let iperfServer = await startIperf3(procs, dir);
    const iperf = iperfServer.port;
    const targets = { pg: server.port, iperf };
    /** iperf3's server can be left "busy" by a broken test: start a new one on the same port. */
    const restartIperf = async () => {
      log('restarting the iperf3 server');
      await procs.stop(iperfServer.pid);
      iperfServer = await startIperf3(procs, dir, iperf);
    };
    const paths: PathDef[] = [
      {
        id: 'direct',
        label: 'direct',
        pg: direct,
        tcp: iperf,
        pids: [],
        tests: new Set(TESTS.map((t) => t.id)),
      },
    ];
    const peerTests = new Set(['tcp1', 'tcp8', 'c1', 'c16', 'C4']);
    const peer = async (id: string, label: string, start: () => Promise<Forward>, only = peerTests) => {
      if (!wanted(id)) return;
      try {
        const f = await start();
        paths.push({
          id,
          label,
          ...(f.pg ? { pg: { ...direct, port: f.pg } } : {}),
          ...(f.tcp ? { tcp: f.tcp } : {}),
          pids: f.pids,
          tests: only,
        });
        log(`started ${label} (pids ${f.pids.join(' ')})`);
      } catch (err) {
        log(`${label}: not measured: ${(err as Error).message}`);
      }
    };
    await peer('ssh', 'ssh -L', () => startSsh(procs, dir, targets));
    await peer('stunnel', 'stunnel', () => startStunnel(procs, dir, targets));
    await peer('haproxy', 'haproxy', () => startHaproxy(procs, dir, targets));
    await peer(
      'nodetls',
      'bare node:tls relay',
      () => startNodeTlsRelay(procs, dir, targets),
      // pgbench through it too: the runtime's own round-trip ceiling, beside ssh -L's.
      new Set(['tcp1', 'tcp8', 'c1', 'c16', 'C4']),
    );
    await peer(
      'pgbouncer',
      'pgbouncer',
      () => startPgbouncer(procs, dir, { ...targets, database: 'app', user: 'app', scramSecret: scram }),
      new Set(['c1', 'c16', 'C4']),
    );
    let port: CiportPorts | undefined;
    if (wanted('ciport'))
      try {
        port = await startCiport(procs, dir, { ...targets, database: 'app', user: 'app', password });
        log(`started ciport: gateway, client, agent (pids ${port.pids.join(' ')})`);
        const pgTests = new Set(['c1', 'c16', 'C4', 'ci']);
        const tcpTests = new Set(['tcp1', 'tcp8', 'c1', 'c16']);
        paths.push(
          { id: 'ciport', label: 'ciport', pg: connOfUrl(port.db), pids: port.pids, tests: pgTests },
          {
            id: 'ciport-agent',
            label: 'ciport via agent',
            pg: connOfUrl(port.agentDb),
            pids: port.pids,
            tests: pgTests,
          },
          {
            id: 'ciport-tcp',
            label: 'ciport tcp target',
            pg: { ...direct, host: port.dbTcp.host, port: port.dbTcp.port },
            tcp: port.bulk.port,
            pids: port.pids,
            tests: tcpTests,
          },
          {
            id: 'ciport-agent-tcp',
            label: 'ciport tcp via agent',
            pg: { ...direct, host: port.agentDbTcp.host, port: port.agentDbTcp.port },
            tcp: port.agentBulk.port,
            pids: port.pids,
            tests: tcpTests,
          },
        );
      } catch (err) {
        log(`ciport: not measured: ${(err as Error).message}`);
      }

    // Every pg path must answer a query before it is measured.
    for (const p of [...paths]) {
      if (!p.pg) continue;
      const c = new pg.Client({ ...p.pg, connectionTimeoutMillis: 15_000 });
      try {
        await c.connect();
        await c.query('select 1');
      } catch (err) {
        log(`${p.label}: cannot run a query (${(err as Error).message}): its pg tests are skipped`);
        p.tests = new Set([...p.tests].filter((t) => t.startsWith('tcp')));
      } finally {
        await c.end().catch(() => {});
      }
    }

    const versions = await headerVersions(server.bin('postgres'), port?.versions ?? 'ciport not started');
    const cpu = cpus()[0]?.model ?? '?';
    const header = [
      `# ciport peer table ${started.toISOString()}${quick ? ' (--quick: 1 round, short runs, a subset; not for comparison)' : ''}`,
      `# machine: ${await tryRun('uname', ['-sr'])}, ${cpus().length} CPUs (${cpu}), ${Math.round(totalmem() / 2 ** 20)} MiB; load average at start ${load()}`,
      `# versions: ${versions}`,
      `# rounds=${rounds} pgbench -T ${pgSeconds} s (scale ${scale}), iperf3 -t ${iperfSeconds} s, CI scenario ${ci.queries} queries, new connection every ${ci.perConnection}`,
      `# paths: ${paths.map((p) => `${p.id}(pg=${p.pg?.port ?? '-'},tcp=${p.tcp ?? '-'},pids=${p.pids.join('+') || '-'})`).join(' ')}`,
    ];
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    const rawFile = join(ROOT, `bench/results/raw-${stamp}.tsv`);
    writeFileSync(rawFile, `${header.join('\n')}\n# round\ttest\tpath\tmetric\tvalue\n`);
    const emit = (row: RawRow) => appendFileSync(rawFile, toTsv([row]));

    log('warm-up: pgbench direct, 2 s');
    await run(pgbenchBin, ['-n', '-S', '-c', '4', '-j', '2', '-T', '2'], { env: pgEnv(direct) }).catch(
      () => {},
    );

    for (let r = 1; r <= rounds; r++) {
      const order = roundOrder(paths, r);
      log(`round ${r}/${rounds}, order: ${order.map((p) => p.id).join(' ')} (load average ${load()})`);
      appendFileSync(rawFile, `# round ${r} load average ${load()}\n`);
      for (const test of tests) {
        for (const p of order) {
          if (!p.tests.has(test.id)) continue;
          const c0 = cpuSeconds(p.pids);
          const m = await measure(test.id, p, {
            pgbenchBin,
            pgSeconds,
            iperfSeconds,
            ci,
            round: r,
            direct,
            restartIperf,
          });
          // Work the test caused that goes on after it (per-connection children being reaped,
          // audit events still being written) is the test's: wait until the path's processes
          // are idle again, count that CPU too, and start the next path on a quiet machine.
          const used = (await settle(p.pids)) - c0;
          const figures: string[] = [];
          if (Object.keys(m.metrics).length === 0) m.metrics[test.metric] = Number.NaN; // failed: recorded as NaN
          for (const [metric, value] of Object.entries(m.metrics)) {
            emit({ round: r, test: test.id, path: p.id, metric, value });
            figures.push(`${metric}=${fmt(value)}`);
          }
          if (p.pids.length && m.units > 0) {
            const value = used / m.units;
            emit({ round: r, test: test.id, path: p.id, metric: 'cpu', value });
            figures.push(`cpu ${fmt(value)} ${test.cpuUnit}`);
          }
          log(`r${r} ${test.id} ${p.id}: ${figures.join(' ')}`);
          await sleep(200);
        }
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    appendFileSync(
      rawFile,
      `# run time ${seconds.toFixed(0)} s; load average at end ${load()}; raw figures: ${rawFile.slice(ROOT.length)}\n`,
    );
    done = `done in ${seconds.toFixed(0)} s; raw figures in ${rawFile}`;
    return renderTable(readFileSync(rawFile, 'utf8'));
  } finally {
    // Stopped and awaited before "done" is printed, so that their last lines come before it.
    await procs.stopAll();
    await serverToStop?.stop();
    process.removeListener('SIGINT', stopOnSignal);
    process.removeListener('SIGTERM', stopOnSignal);
    process.removeListener('SIGHUP', stopOnSignal);
    process.stdout.removeListener('error', onOutputError);
    process.stderr.removeListener('error', onOutputError);
    rmSync(dir, { recursive: true, force: true });
    if (done) log(done);
  }
}

async function headerVersions(postgresBin: string, ciport: string): Promise<string> {
  const pgv = (await tryRun(postgresBin, ['--version'])).replace(/^postgres \(PostgreSQL\) /, '');
  const deb = async (pkg: string) => `${pkg} ${await debVersion(pkg)}`;
  const commit = await tryRun('git', ['-C', ROOT, 'describe', '--always', '--dirty']);
  return [
    `node ${process.version}`,
    `${ciport} (${commit === '?' ? 'no git' : `commit ${commit}`})`,
    `postgresql ${pgv}`,
    await deb('pgbouncer'),
    await deb('haproxy'),
    await deb('stunnel4'),
    `${await deb('openssh-client')} (aes128-gcm)`,
    await deb('openssl'),
    await deb('iperf3'),
  ].join(' | ');
}

/** Wait (≤ 15 s) until the trees rooted at `pids` use under 20 ms of CPU per 250 ms; their CPU seconds then. */
async function settle(pids: readonly number[]): Promise<number> {
  let last = cpuSeconds(pids);
  for (let i = 0; i < 60; i++) {
    await sleep(250);
    const now = cpuSeconds(pids);
    if (now - last < 0.02) return now;
    last = now;
  }
  log(`still busy 15 s after the test (pids ${pids.join(' ')})`);
  return last;
}

interface MeasureContext {
  pgbenchBin: string;
  pgSeconds: number;
  iperfSeconds: number;
  ci: { queries: number; perConnection: number };
  round: number;
  direct: PgConn;
  restartIperf: () => Promise<void>;
}

interface Measured {
  metrics: Record<string, number>;
  /** Units of work the CPU figure is divided by (GB, transactions, connections, runs). */
  units: number;
}

async function measure(test: string, p: PathDef, x: MeasureContext): Promise<Measured> {
  try {
    if (test === 'tcp1' || test === 'tcp8')
      return await iperf(p.tcp!, test === 'tcp1' ? 1 : 8, x.iperfSeconds, x.restartIperf);
    if (test === 'ci') {
      const schema = `ci_r${x.round}_${p.id.replace(/-/g, '_')}`;
      try {
        const { seconds } = await ciScenario({ ...p.pg! }, schema, x.ci);
        return { metrics: { wall_s: seconds }, units: 1 };
      } finally {
        await dropSchema({ ...x.direct }, schema).catch(() => {});
      }
    }
    const args = { c1: ['-c', '1'], c16: ['-c', '16'], C4: ['-C', '-c', '4'] }[test as 'c1'] ?? [];
    return await pgbench(x.pgbenchBin, p.pg!, args, x.pgSeconds, test === 'C4');
  } catch (err) {
    log(`${test} via ${p.id} failed: ${(err as Error).message.split('\n').slice(0, 3).join(' ')}`);
    return { metrics: {}, units: 0 };
  }
}

async function iperf(
  port: number,
  streams: number,
  seconds: number,
  restart: () => Promise<void>,
): Promise<Measured> {
  let last = '';
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const { stdout } = await run(
        'iperf3',
        [
          '-c',
          '127.0.0.1',
          '-p',
          String(port),
          '-t',
          String(seconds),
          '-P',
          String(streams),
          '-J',
          '--connect-timeout',
          '5000',
        ],
        { timeout: (seconds + 30) * 1000, maxBuffer: 16 << 20 },
      );
      const j = JSON.parse(stdout) as { end?: { sum_received?: { bits_per_second: number; bytes: number } } };
      const sum = j.end?.sum_received;
      if (sum) return { metrics: { MBps: sum.bits_per_second / 8e6 }, units: sum.bytes / 1e9 };
      last = stdout.slice(0, 200);
    } catch (err) {
      const out = (err as { stdout?: string }).stdout ?? '';
      last = /"error":\s*"([^"]*)"/.exec(out)?.[1] ?? (err as Error).message;
    }
    if (attempt === 0) await restart().catch((err: Error) => log(`iperf3 restart failed: ${err.message}`));
  }
  throw new Error(`iperf3: ${last}`);
}

async function pgbench(
  bin: string,
  c: PgConn,
  args: string[],
  seconds: number,
  perConnection: boolean,
): Promise<Measured> {
  const { stdout } = await run(bin, ['-n', '-S', '-j', '2', '-T', String(seconds), ...args], {
    env: pgEnv(c),
    maxBuffer: 16 << 20,
    timeout: (seconds + 60) * 1000,
  });
  const num = (re: RegExp) => {
    const m = re.exec(stdout);
    return m ? Number(m[1]) : Number.NaN;
  };
  const tx = num(/number of transactions actually processed: (\d+)/);
  const tps = num(/^tps = ([\d.]+)/m);
  const failed = num(/number of failed transactions: (\d+)/);
  if (!Number.isFinite(tps) || !(tx > 0) || failed > 0) throw new Error(`pgbench: ${stdout.slice(-300)}`);
  const metrics: Record<string, number> = { tps, lat_ms: num(/latency average = ([\d.]+) ms/) };
  if (perConnection) metrics.conn_ms = num(/average connection time = ([\d.]+) ms/);
  // CPU per transaction in µs; with -C (one connection per transaction) per connection in ms.
  return { metrics, units: perConnection ? tx / 1e3 : tx / 1e6 };
}

/** The tables of an earlier run, from its raw file (`npm run bench -- --summarize=FILE`). */
export function summarizeFile(file: string): string {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'a directory' : e.message;
    throw new Error(`cannot read ${file}: ${why}`);
  }
  if (raw.startsWith('# ciport peer table') && parseTsv(raw).length === 0)
    throw new Error(`${file} holds no figures: its run was stopped before the first test finished`);
  if (!raw.startsWith('# ciport peer table'))
    throw new Error(
      `${file} is not a raw results file of the peer table (bench/results/raw-….tsv, starting "# ciport peer table" with at least one figure)`,
    );
  return renderTable(raw);
}

/**
 * Stop what runs killed before their cleanup started (`npm run bench -- --stop-leftovers`):
 * their work directories keep the record of it. A directory whose run is still going is left alone.
 * Only what is ours is trusted ($TMPDIR may be shared): a work directory must be a real
 * directory (not a symlink) owned by our uid that nobody else can write, and so must its record
 * files (readTrusted); a recorded process is signalled only while it is still the one recorded,
 * runs as our uid and runs the recorded executable (stopRecorded); a recorded directory is
 * removed only if it resolves to a direct child `ciport-pg-*` of $TMPDIR that is ours.
 */
export async function stopLeftovers(): Promise<string[]> {
  const out: string[] = [];
  const tmp = tmpdir();
  for (const d of readdirSync(tmp).filter((n) => n.startsWith('ciport-bench-table-'))) {
    const runDir = join(tmp, d);
    const why = untrustedDir(runDir);
    if (why) {
      out.push(`${d}: not ours to trust (${why}); left alone`);
      continue;
    }
    let owner: string | undefined;
    let pids: string | undefined;
    let dirs: string | undefined;
    try {
      owner = readTrusted(join(runDir, 'owner'));
      pids = readTrusted(join(runDir, 'pids'));
      dirs = readTrusted(join(runDir, 'leftover-dirs'));
    } catch (e) {
      out.push(`${d}: ${(e as Error).message}; left alone`);
      continue;
    }
    const [pid, start] = owner ? owner.trim().split(' ').map(Number) : [];
    if (pid !== undefined && startTime(pid) === start) {
      out.push(`${d}: its run (pid ${pid}) is still going; left alone`);
      continue;
    }
    if (pids !== undefined)
      for (const p of await stopRecorded(join(runDir, 'pids'))) out.push(`stopped ${p}`);
    let leftAlone = false;
    for (const line of (dirs ?? '').split('\n').filter(Boolean)) {
      // `path\towner uid` (older runs: the path alone, ours).
      const [x = '', ownerText] = line.split('\t');
      const target = leftoverDir(tmp, x, ownerText === undefined ? undefined : Number(ownerText));
      if (target) rmSync(target, { recursive: true, force: true });
      else if (existsSync(x)) {
        leftAlone = true;
        out.push(`${d}: ${JSON.stringify(x)} is not a directory of ours under ${tmp}; left alone`);
      }
    }
    // Kept while something it names was left alone: the record is what a later run (or the
    // operator) needs to finish the job.
    if (leftAlone) out.push(`${d}: kept (it records what was left alone)`);
    else rmSync(runDir, { recursive: true, force: true });
  }
  return out;
}

/**
 * The directory a run recorded for removal, when it is one the bench may remove: an absolute
 * path with no `..`, whose parent resolves (realpath) to $TMPDIR itself, named `ciport-pg-*`,
 * and itself a real directory (not a symlink) that nobody else can write, owned by us or by the
 * uid the run recorded for it (only when we are root: mayActFor).
 */
export function leftoverDir(tmp: string, recorded: string, owner?: number): string | undefined {
  if (!isAbsolute(recorded) || recorded.split(sep).includes('..')) return undefined;
  const target = resolve(recorded);
  if (!basename(target).startsWith('ciport-pg-')) return undefined;
  try {
    if (realpathSync(dirname(target)) !== realpathSync(tmp)) return undefined;
    if (realpathSync(target) !== join(realpathSync(tmp), basename(target))) return undefined;
  } catch {
    return undefined;
  }
  return untrustedDir(target, owner) ? undefined : target;
}
