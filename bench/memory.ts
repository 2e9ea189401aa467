// `npm run bench -- memory`: the gateway's resident memory, idle and with 1,000 open sessions
// × 10 idle tunnelled connections each to a `tcp` target. The load is made as clients make it:
// each session is opened through the session API on its own HTTP/2+TLS connection (one per
// `ciport open`), and its 10 connections are CONNECT streams on that connection, answered 200
// by the gateway after it dialled the target (an echo server in its own process). Figures are
// the gateway process's VmRSS and VmHWM from /proc/PID/status.
//
// `BENCH_BASELINE=/path/to/other/checkout` measures that build too, in the same run (see
// bench/sessions.ts). One measurement per build: about 30–60 s each. `BENCH_MEMORY_SESSIONS`
// and `BENCH_MEMORY_STREAMS` change the shape (default 1000 × 10).
import type { ClientHttp2Stream } from 'node:http2';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatewayClient } from '../src/client/index.js';
import {
  type BenchGateway,
  child,
  cpuSeconds,
  lineMatching,
  loadAverage,
  memoryMb,
  startBenchGateway,
  variants,
} from './sessions.js';
import { fmt, table } from './stats.js';

const ROOT = new URL('../../', import.meta.url).pathname;
/** Sessions opened at once while loading. */
const CONCURRENCY = 32;

interface MemoryResult {
  idle: { rss: number; hwm: number };
  loaded: { rss: number; hwm: number };
  settled: { rss: number; hwm: number };
  afterEnd: { rss: number; hwm: number };
  loadSeconds: number;
  loadCpuSeconds: number;
  /** Gateway CPU while the loaded connections sit idle (sweeps, timers), % of one core. */
  idleCpuPercent: number;
  streams: number;
}

async function loadGateway(
  gw: BenchGateway,
  sessions: number,
  streams: number,
): Promise<{
  clients: GatewayClient[];
  opened: ClientHttp2Stream[];
  ids: Array<{ client: GatewayClient; id: string; secret: string }>;
}> {
  const clients: GatewayClient[] = [];
  const opened: ClientHttp2Stream[] = [];
  const ids: Array<{ client: GatewayClient; id: string; secret: string }> = [];
  let next = 0;
  const worker = async () => {
    while (next < sessions) {
      next++;
      const client = new GatewayClient({ url: new URL(gw.url), ca: gw.ca });
      clients.push(client);
      const res = await client.api('POST', '/v1/sessions', { bearer: gw.token, body: { targets: ['echo'] } });
      const { id, secret } = res.body as { id: string; secret: string };
      ids.push({ client, id, secret });
      const tunnels = await Promise.all(
        Array.from({ length: streams }, () => client.openTunnel('echo', id, secret)),
      );
      for (const t of tunnels) {
        t.on('error', () => {});
        opened.push(t);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { clients, opened, ids };
}

async function measureOne(
  bin: string,
  sessions: number,
  streams: number,
  echo: number,
): Promise<MemoryResult> {
  // Leases outlive the measurement (no heartbeats are sent); everything else is the default.
  const gw = await startBenchGateway({
    bin,
    targets: { echo },
    extraConfig: '  lease_timeout: 10m',
  });
  try {
    await sleep(2_000);
    const idle = memoryMb(gw.proc.pid!);
    const t0 = performance.now();
    const cpu0 = cpuSeconds(gw.proc.pid!);
    const { clients, opened, ids } = await loadGateway(gw, sessions, streams);
    const loadSeconds = (performance.now() - t0) / 1000;
    const loadCpuSeconds = cpuSeconds(gw.proc.pid!) - cpu0;
    // Idle connections: read 5 s after loading, and again once V8's idle-time memory reducer
    // (a full GC some seconds after allocation stops) has had its chance.
    await sleep(5_000);
    const loaded = memoryMb(gw.proc.pid!);
    const idleCpu0 = cpuSeconds(gw.proc.pid!);
    await sleep(15_000);
    const settled = memoryMb(gw.proc.pid!);
    const idleCpuPercent = ((cpuSeconds(gw.proc.pid!) - idleCpu0) / 15) * 100;
    // Profiling: BENCH_NODE_FLAGS="--heapsnapshot-signal=SIGUSR2" BENCH_MEMORY_SNAPSHOT=1 writes a
    // heap snapshot of the loaded gateway into its working directory.
    if (process.env.BENCH_MEMORY_SNAPSHOT) {
      gw.proc.kill('SIGUSR2');
      await sleep(Number(process.env.BENCH_MEMORY_SNAPSHOT_WAIT_MS ?? 30_000));
    }
    // End the sessions (connections are cut), then see what the gateway gives back.
    for (let i = 0; i < ids.length; i += CONCURRENCY) {
      await Promise.all(
        ids
          .slice(i, i + CONCURRENCY)
          .map(({ client, id, secret }) =>
            client.request('DELETE', `/v1/sessions/${id}`, { bearer: secret }),
          ),
      );
    }
    for (const c of clients) c.close();
    await sleep(3_000);
    const afterEnd = memoryMb(gw.proc.pid!);
    return {
      idle,
      loaded,
      settled,
      afterEnd,
      loadSeconds,
      loadCpuSeconds,
      idleCpuPercent,
      streams: opened.length,
    };
  } finally {
    await gw.stop();
  }
}

export async function benchMemory(_rounds: number): Promise<string> {
  const sessions = Number(process.env.BENCH_MEMORY_SESSIONS ?? 1000);
  const streams = Number(process.env.BENCH_MEMORY_STREAMS ?? 10);
  const servers = child([join(ROOT, 'dist/bench/servers.js')]);
  const loadBefore = loadAverage();
  try {
    const ports = JSON.parse((await lineMatching(servers, /^\{.*\}$/, 'stdout'))[0]) as { echo: number };
    const rows = [
      [
        'gateway',
        'idle RSS MB',
        `RSS MB, ${sessions} sessions × ${streams} connections (+5 s)`,
        'same, +20 s',
        'VmHWM MB',
        'RSS MB after ending them',
        'KB per connection',
        'load s (CPU s)',
        'CPU % while idle-loaded',
      ],
    ];
    for (const v of variants()) {
      const m = await measureOne(v.bin, sessions, streams, ports.echo);
      if (m.streams !== sessions * streams) throw new Error(`${v.name}: only ${m.streams} streams opened`);
      rows.push([
        v.name,
        fmt(m.idle.rss),
        fmt(m.loaded.rss),
        fmt(m.settled.rss),
        fmt(m.settled.hwm),
        fmt(m.afterEnd.rss),
        fmt(((m.settled.rss - m.idle.rss) * 1e6) / 1024 / Math.max(1, m.streams)),
        `${m.loadSeconds.toFixed(1)} (${m.loadCpuSeconds.toFixed(1)})`,
        m.idleCpuPercent.toFixed(1),
      ]);
    }
    return [
      `memory: \`ciport gateway\` (SQLite store, TLS, audit on, info logs) RSS from /proc/PID/status; ${sessions} sessions, each on its own HTTP/2+TLS connection, × ${streams} idle CONNECT streams to a tcp echo target`,
      `load average before ${loadBefore}, after ${loadAverage()}`,
      '',
      table(rows),
    ].join('\n');
  } finally {
    servers.kill('SIGTERM');
  }
}
