// `npm run bench -- sessions`: session opens per second through the session API. 16 concurrent
// clients, each its own HTTP/2-over-TLS connection (as 16 `ciport open` processes would have),
// loop POST /v1/sessions (ID token check, policy, store + `session.opened`) then DELETE (secret
// check, store + `session.ended`) against a real `ciport gateway` process with the SQLite store,
// for a fixed time. Reported: opens/s (each also ended), latency of the open (p50, p99), the
// gateway's CPU per open from /proc/PID/stat (the figure other load on the machine disturbs
// least), and what bounds the rate: the gateway's one event loop (CPU near one core) or waiting.
//
// `BENCH_BASELINE=/path/to/other/checkout` (built: its bin/ciport.js and dist/) runs that
// gateway too, interleaved with this one in every round (order alternating), so a before/after
// comes from one run. `BENCH_SESSIONS_SECONDS` (default 5) is the length of one measurement.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatewayClient } from '../src/client/index.js';
import { DevSigner, mintToken } from '../src/identity/index.js';
import { fmt, median, nodeFlags, table } from './stats.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const ISSUER = 'https://bench-issuer.invalid';
const AUDIENCE = 'ciport-bench';
const CLIENTS = 16;
/** Clock ticks per second of /proc/PID/stat (USER_HZ; 100 on every Linux this runs on). */
const HZ = 100;

/** A gateway build to measure: this checkout, or the BENCH_BASELINE one. */
export interface Variant {
  name: string;
  bin: string;
}

export function variants(): Variant[] {
  const mine: Variant = { name: 'this tree', bin: join(ROOT, 'bin/ciport.js') };
  const base = process.env.BENCH_BASELINE;
  if (!base) return [mine];
  const bin = join(base, 'bin/ciport.js');
  if (!existsSync(bin) || !existsSync(join(base, 'dist/src'))) {
    throw new Error(`BENCH_BASELINE=${base}: no built checkout there (bin/ciport.js, dist/src)`);
  }
  return [{ name: 'baseline', bin }, mine];
}

export function child(args: string[], env: NodeJS.ProcessEnv = {}, extraFlags: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeFlags(), ...extraFlags, '--', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** The first line of the child's stream that matches; later output is drained (never blocks). */
export async function lineMatching(
  proc: ChildProcess,
  re: RegExp,
  stream: 'stdout' | 'stderr',
): Promise<RegExpExecArray> {
  const input = proc[stream]!;
  const rl = createInterface({ input });
  for await (const line of rl) {
    const m = re.exec(line);
    if (m) {
      rl.close();
      input.resume();
      return m;
    }
  }
  throw new Error(`process ended before printing ${re}`);
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / HZ;
}

/** VmRSS and VmHWM of a process, in MB (10^6 bytes). */
export function memoryMb(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: (kb('VmRSS') * 1024) / 1e6, hwm: (kb('VmHWM') * 1024) / 1e6 };
}

export function loadAverage(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

export interface BenchGateway {
  proc: ChildProcess;
  url: string;
  caFile: string;
  ca: string[];
  token: string;
  dir: string;
  stop(): Promise<void>;
}

/**
 * A `ciport gateway` process in a fresh data dir (SQLite store, generated TLS, audit on: the
 * defaults) with one issuer (a DevSigner's JWKS), the given tcp targets and one rule allowing
 * them; rate limits raised so that the bench measures the work, not the limiter.
 */
export async function startBenchGateway(options: {
  bin: string;
  targets: Record<string, number>;
  extraConfig?: string;
  flags?: string[];
}): Promise<BenchGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-gw-'));
  const signer = await DevSigner.ephemeral();
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify(signer.jwks()));
  const config = join(dir, 'gateway.yaml');
  const names = Object.keys(options.targets);
  writeFileSync(
    config,
    `listen: 127.0.0.1:0
data_dir: ${join(dir, 'data')}
sessions:
  rate_limit: {per_minute: 10000000, burst: 100000, per_issuer: {per_minute: 10000000, burst: 100000}}
${options.extraConfig ?? ''}
issuers:
  - {name: bench, kind: gitlab, issuer: ${ISSUER}, audience: ${AUDIENCE}, jwks_file: ${join(dir, 'jwks.json')}}
targets:
${names.map((n) => `  - {name: ${n}, protocol: tcp, address: 127.0.0.1:${options.targets[n]}}`).join('\n')}
rules:
  - {name: bench, issuer: bench, when: {project_id: "1"}, allow: [${names.join(', ')}]}
`,
  );
  const proc = child(
    [options.bin, 'gateway', '--config', config],
    { CIPORT_LOG_LEVEL: 'info' },
    options.flags,
  );
  // Info-level logs are the default; they go to a pipe we drain, as a supervisor would.
  proc.stdout!.resume();
  const m = await lineMatching(proc, /^ciport: gateway listening on (https:\/\/\S+)/, 'stderr');
  const url = m[1] as string;
  const caFile = join(dir, 'data/ca.crt');
  for (let i = 0; i < 100 && !existsSync(caFile); i++) await sleep(50);
  const token = await mintToken(
    signer,
    ISSUER,
    { project_id: '1', job_project_id: '1' },
    { audience: AUDIENCE, ttlMs: 3_600_000 },
  );
  return {
    proc,
    url,
    caFile,
    ca: [readFileSync(caFile, 'utf8')],
    token,
    dir,
    async stop() {
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      await Promise.race([exited, sleep(5_000)]);
      if (proc.exitCode === null) proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

interface Measured {
  opensPerS: number;
  p50: number;
  p99: number;
  endP99: number;
  cpuUsPerOpen: number;
  /** Gateway CPU over the measurement, in cores (1.0 = one core busy all the time). */
  gatewayCores: number;
  /** This (load-driving) process's CPU, in cores. */
  clientCores: number;
  errors: number;
}

/** 16 clients, open + end in a loop, for `seconds`. */
async function measure(gw: BenchGateway, seconds: number): Promise<Measured> {
  const clients = Array.from(
    { length: CLIENTS },
    () => new GatewayClient({ url: new URL(gw.url), ca: gw.ca }),
  );
  try {
    await Promise.all(clients.map((c) => c.connect()));
    const loop = async (
      c: GatewayClient,
      until: number,
      opens: number[],
      ends: number[],
      errors: { n: number },
    ) => {
      while (performance.now() < until) {
        const t0 = performance.now();
        const res = await c.request('POST', '/v1/sessions', {
          bearer: gw.token,
          body: { targets: ['echo'] },
        });
        const t1 = performance.now();
        if (res.status !== 201) {
          errors.n++;
          continue;
        }
        const { id, secret } = res.body as { id: string; secret: string };
        const end = await c.request('DELETE', `/v1/sessions/${id}`, { bearer: secret });
        if (end.status !== 200) errors.n++;
        opens.push(t1 - t0);
        ends.push(performance.now() - t1);
      }
    };
    // Warm-up (JIT, SQLite page cache), not counted.
    await Promise.all(clients.map((c) => loop(c, performance.now() + 1000, [], [], { n: 0 })));
    const opens: number[] = [];
    const ends: number[] = [];
    const errors = { n: 0 };
    const cpu0 = cpuSeconds(gw.proc.pid!);
    const own0 = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(clients.map((c) => loop(c, t0 + seconds * 1000, opens, ends, errors)));
    const wall = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(gw.proc.pid!) - cpu0;
    const own = process.cpuUsage(own0);
    opens.sort((a, b) => a - b);
    ends.sort((a, b) => a - b);
    return {
      opensPerS: opens.length / wall,
      p50: percentile(opens, 50),
      p99: percentile(opens, 99),
      endP99: percentile(ends, 99),
      cpuUsPerOpen: (cpu * 1e6) / Math.max(1, opens.length),
      gatewayCores: cpu / wall,
      clientCores: (own.user + own.system) / 1e6 / wall,
      errors: errors.n,
    };
  } finally {
    for (const c of clients) c.close();
  }
}

export async function benchSessions(rounds: number): Promise<string> {
  const seconds = Number(process.env.BENCH_SESSIONS_SECONDS ?? 5);
  const list = variants();
  const results = new Map<string, Measured[]>(list.map((v) => [v.name, []]));
  const loadBefore = loadAverage();
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? list : [...list].reverse();
    for (const v of order) {
      // The target is never dialled (no tunnel is opened); any port will do.
      const gw = await startBenchGateway({ bin: v.bin, targets: { echo: 9 } });
      try {
        results.get(v.name)!.push(await measure(gw, seconds));
      } finally {
        await gw.stop();
      }
    }
  }
  const loadAfter = loadAverage();
  const rows = [
    [
      'gateway',
      'opens/s',
      'open p50 ms',
      'open p99 ms',
      'end p99 ms',
      'gateway CPU µs/open',
      'gateway CPU (cores)',
      'bench client CPU (cores)',
      'errors',
    ],
  ];
  const bounds: string[] = [];
  for (const v of list) {
    const m = results.get(v.name)!;
    const med = (f: (x: Measured) => number) => median(m.map(f));
    rows.push([
      v.name,
      fmt(med((x) => x.opensPerS)),
      fmt(med((x) => x.p50)),
      fmt(med((x) => x.p99)),
      fmt(med((x) => x.endP99)),
      fmt(med((x) => x.cpuUsPerOpen)),
      med((x) => x.gatewayCores).toFixed(2),
      med((x) => x.clientCores).toFixed(2),
      String(m.reduce((s, x) => s + x.errors, 0)),
    ]);
    const cores = med((x) => x.gatewayCores);
    const cpuBound = 1e6 / med((x) => x.cpuUsPerOpen);
    bounds.push(
      `${v.name}: gateway busy ${(cores * 100).toFixed(0)}% of one core; at its CPU per open one core allows ` +
        `~${fmt(cpuBound)} opens/s (${cores > 0.85 ? "bound by the gateway's event loop" : 'not CPU-bound in the gateway: waiting (store fsync, client, the other processes on the 2 cores)'})`,
    );
  }
  return [
    `sessions: ${CLIENTS} concurrent clients (each its own HTTP/2+TLS connection), POST /v1/sessions then DELETE, against \`ciport gateway\` (SQLite store, audit on, info logs); ${seconds} s per measurement, median of ${rounds} round(s)${list.length > 1 ? ', variants interleaved' : ''}`,
    `load average before ${loadBefore}, after ${loadAfter}`,
    '',
    table(rows),
    '',
    ...bounds,
  ].join('\n');
}
