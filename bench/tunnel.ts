// `npm run bench -- tunnel`: what the port costs against a direct loopback connection, measured
// in one run, interleaved and repeated: bulk throughput (1 and 8 connections), small
// request/response round trips, connection setup, and sessions opened per second. Each measure
// runs on three paths: direct, through the port with the gateway as exit, and through the port
// with an agent as exit (gateway → reverse HTTP/2 → `ciport agent` → target).
//
// Processes, as in a CI job: the targets (bench/servers.ts), the gateway (`ciport gateway`),
// the agent (`ciport agent`) and the client (`ciport open`) each run in their own process; this
// process only drives load.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatewayClient, PortSession } from '../src/client/index.js';
import { DevSigner, mintToken } from '../src/identity/index.js';
import { startRole } from './carriers.js';
import { connected, upload } from './clients.js';
import { fmt, median, nodeFlags, table } from './stats.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/ciport.js');
const ISSUER = 'https://bench-issuer.invalid';
const MB = 1_000_000;

interface Endpoints {
  echo: { host: string; port: number };
  sink: { host: string; port: number };
}

export function child(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  stderr: 'pipe' | 'inherit' = 'inherit',
): ChildProcess {
  return spawn(process.execPath, [...nodeFlags(), '--', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', stderr],
  });
}

/**
 * The first line of the child's stdout (or stderr) that matches. What the child prints after it
 * is passed on to our stderr (warnings), so a full pipe never blocks the child.
 */
export async function lineMatching(
  proc: ChildProcess,
  re: RegExp,
  stream: 'stdout' | 'stderr' = 'stdout',
): Promise<RegExpExecArray> {
  const input = proc[stream]!;
  const rl = createInterface({ input });
  for await (const line of rl) {
    const m = re.exec(line);
    if (m) {
      rl.close();
      input.pipe(process.stderr, { end: false });
      return m;
    }
  }
  throw new Error(`process ended before printing ${re}`);
}

async function bulk(host: string, port: number, connections: number, bytesEach: number): Promise<number> {
  const start = performance.now();
  await Promise.all(Array.from({ length: connections }, () => upload(host, port, bytesEach)));
  return (connections * bytesEach) / MB / ((performance.now() - start) / 1000);
}

/** 64-byte ping-pongs on one connection: round trips per second. */
async function roundTrips(host: string, port: number, n: number): Promise<number> {
  const s = await connected(host, port);
  const msg = Buffer.alloc(64, 1);
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    await new Promise<void>((resolve) => {
      let got = 0;
      const onData = (b: Buffer) => {
        got += b.length;
        if (got >= msg.length) {
          s.off('data', onData);
          resolve();
        }
      };
      s.on('data', onData);
      s.write(msg);
    });
  }
  const rate = n / ((performance.now() - start) / 1000);
  s.destroy();
  return rate;
}

/** New connection + one 64-byte round trip, sequentially: connections per second. */
async function setups(host: string, port: number, n: number): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const s = await connected(host, port);
    await new Promise<void>((resolve) => {
      s.once('data', () => resolve());
      s.write('ping');
    });
    s.destroy();
  }
  return n / ((performance.now() - start) / 1000);
}

type Path = 'direct' | 'port' | 'agent' | 'tls';
/** tls: a bare two-process node:tls relay (bench/carriers.ts), the runtime's ceiling for a hop. */
const PATHS: readonly Path[] = ['direct', 'port', 'agent', 'tls'];
/** The agent's targets: the same echo and sink, under names the gateway's config does not have. */
const AGENT_TARGETS = ['agent-echo', 'agent-sink'] as const;
const AGENT_NAME = 'bench';

/** Name, run, units of work per run and how CPU per unit is shown (µs per unit × scale). */
const MEASURES: ReadonlyArray<
  readonly [string, (e: Endpoints) => Promise<number>, { units: number; per: string; scale: number }]
> = [
  [
    'bulk MB/s, 1 connection',
    (e) => bulk(e.sink.host, e.sink.port, 1, 200 * MB),
    { units: 200 / 1000, per: 's/GB', scale: 1e-6 },
  ],
  [
    'bulk MB/s, 8 connections',
    (e) => bulk(e.sink.host, e.sink.port, 8, 25 * MB),
    { units: 200 / 1000, per: 's/GB', scale: 1e-6 },
  ],
  [
    'round trips/s (64 B)',
    (e) => roundTrips(e.echo.host, e.echo.port, 3000),
    { units: 3000, per: 'µs each', scale: 1 },
  ],
  [
    'connections/s (connect + 1 round trip)',
    (e) => setups(e.echo.host, e.echo.port, 300),
    { units: 300, per: 'ms each', scale: 1e-3 },
  ],
];

/** CPU time (user + system) a process has used so far, µs, from /proc (Linux; 0 elsewhere). */
export function cpuMicros(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1e6) / 100;
  } catch {
    return 0;
  }
}

export async function benchTunnel(rounds: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-tunnel-'));
  const procs: ChildProcess[] = [];
  try {
    const servers = child([join(ROOT, 'dist/bench/servers.js')]);
    procs.push(servers);
    const ports = JSON.parse((await lineMatching(servers, /^\{.*\}$/))[0]) as { echo: number; sink: number };

    const signer = await DevSigner.ephemeral();
    writeFileSync(join(dir, 'jwks.json'), JSON.stringify(signer.jwks()));
    const admin = randomBytes(24).toString('base64url');
    const config = join(dir, 'gateway.yaml');
    // The gateway exits to echo and sink itself; agent-echo and agent-sink only the agent serves.
    writeFileSync(
      config,
      `listen: 127.0.0.1:0
data_dir: ${join(dir, 'data')}
admin_tokens: [{env: CIPORT_BENCH_ADMIN_TOKEN}]
sessions: {rate_limit: {per_minute: 100000, burst: 100000, per_issuer: {per_minute: 100000, burst: 100000}}}
issuers:
  - {name: bench, kind: gitlab, issuer: ${ISSUER}, audience: ciport-bench, jwks_file: ${join(dir, 'jwks.json')}}
targets:
  - {name: echo, protocol: tcp, address: 127.0.0.1:${ports.echo}}
  - {name: sink, protocol: tcp, address: 127.0.0.1:${ports.sink}}
rules:
  - {name: bench, issuer: bench, when: {project_id: "1"}, allow: [echo, sink, ${AGENT_TARGETS.join(', ')}]}
`,
    );
    const gateway = child(
      [BIN, 'gateway', '--config', config],
      { CIPORT_LOG_LEVEL: 'warn', CIPORT_BENCH_ADMIN_TOKEN: admin },
      'pipe',
    );
    procs.push(gateway);
    const caFile = join(dir, 'data/ca.crt');
    const url = await gatewayUrl(gateway, join(dir, 'data'));
    await startAgent({ dir, url, caFile, admin, ports, procs });
    const token = await mintToken(
      signer,
      ISSUER,
      { project_id: '1', job_project_id: '1' },
      { audience: 'ciport-bench', ttlMs: 3_600_000 },
    );
    const clientEnv = {
      CIPORT_GATEWAY: url,
      CIPORT_CA_FILE: caFile,
      CIPORT_ID_TOKEN: token,
    };
    const envFile = join(dir, 'port.env');
    const open = child([BIN, 'open', 'echo', 'sink', ...AGENT_TARGETS, '--env-file', envFile], clientEnv);
    procs.push(open);
    for (let i = 0; i < 200 && !existsSync(envFile); i++) await sleep(50);
    if (!existsSync(envFile)) throw new Error('ciport open did not become ready within 10 s');
    const env = Object.fromEntries(
      readFileSync(envFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^'|'$/g, '')]),
    );
    const local = (name: string) => ({
      host: env[`CIPORT_${name}_HOST`]!,
      port: Number(env[`CIPORT_${name}_PORT`]),
    });
    const relay = async (target: number) => {
      const exit = await startRole({
        role: 'exit',
        carrier: 'tls',
        port: target,
        certDir: join(dir, 'relay'),
      });
      const entry = await startRole({
        role: 'entry',
        carrier: 'tls',
        port: exit.port,
        certDir: join(dir, 'relay'),
      });
      procs.push(exit.proc, entry.proc);
      return { host: '127.0.0.1', port: entry.port, pids: [exit.proc.pid, entry.proc.pid] };
    };
    const relayEcho = await relay(ports.echo);
    const relaySink = await relay(ports.sink);
    const endpoints: Record<Path, Endpoints> = {
      tls: { echo: relayEcho, sink: relaySink },
      direct: {
        echo: { host: '127.0.0.1', port: ports.echo },
        sink: { host: '127.0.0.1', port: ports.sink },
      },
      port: { echo: local('ECHO'), sink: local('SINK') },
      agent: { echo: local('AGENT_ECHO'), sink: local('AGENT_SINK') },
    };

    const results: Record<string, Record<Path, number[]>> = {};
    const ratios: Record<string, { port: number[]; agent: number[]; tls: number[]; portToTls: number[] }> =
      {};
    // The proxy's CPU per unit of work: client + gateway (+ agent on the agent path).
    const cpu: Record<string, { port: number[]; agent: number[]; tls: number[] }> = {};
    const proxies: Record<Path, (number | undefined)[]> = {
      direct: [],
      tls: [...relayEcho.pids, ...relaySink.pids],
      port: [open.pid, gateway.pid],
      agent: [open.pid, gateway.pid, procs.find((p) => p.spawnargs.includes('agent'))?.pid],
    };
    const proxyCpu = (path: Path) => proxies[path].reduce((sum: number, pid) => sum + cpuMicros(pid), 0);
    const load = [loadavg()[0] as number];
    for (let r = 0; r < rounds; r++) {
      // Rotate which path goes first, so warm-up and drift do not favour one.
      const order = PATHS.map((_, i) => PATHS[(i + r) % PATHS.length] as Path);
      for (const [name, fn, unit] of MEASURES) {
        results[name] ??= { direct: [], port: [], agent: [], tls: [] };
        ratios[name] ??= { port: [], agent: [], tls: [], portToTls: [] };
        cpu[name] ??= { port: [], agent: [], tls: [] };
        const measured: Partial<Record<Path, number>> = {};
        for (const path of order) {
          const before = proxyCpu(path);
          const v = await fn(endpoints[path]);
          const used = proxyCpu(path) - before;
          if (path !== 'direct') cpu[name][path].push((used / unit.units) * unit.scale);
          results[name][path].push(v);
          measured[path] = v;
        }
        ratios[name].port.push((measured.port as number) / (measured.direct as number));
        ratios[name].agent.push((measured.agent as number) / (measured.direct as number));
        ratios[name].tls.push((measured.tls as number) / (measured.direct as number));
        ratios[name].portToTls.push((measured.port as number) / (measured.tls as number));
      }
      load.push(loadavg()[0] as number);
    }

    const sessions = await sessionsPerSecond(url, caFile, token, 100);
    const rows = [
      [
        'measure',
        'direct',
        'through the port',
        'ratio (median per round)',
        'port CPU',
        'via agent',
        'ratio via agent',
        'agent path CPU',
        'bare node:tls relay',
        'ratio',
        'relay CPU',
        'port / tls relay',
      ],
    ];
    for (const [name, , unit] of MEASURES) {
      const v = results[name]!;
      const q = ratios[name]!;
      const c = cpu[name]!;
      rows.push([
        name,
        fmt(median(v.direct)),
        fmt(median(v.port)),
        `${median(q.port).toFixed(2)}x`,
        `${fmt(median(c.port))} ${unit.per}`,
        fmt(median(v.agent)),
        `${median(q.agent).toFixed(2)}x`,
        `${fmt(median(c.agent))} ${unit.per}`,
        fmt(median(v.tls)),
        `${median(q.tls).toFixed(2)}x`,
        `${fmt(median(c.tls))} ${unit.per}`,
        `${median(q.portToTls).toFixed(2)}x`,
      ]);
    }
    return [
      `tunnel: tcp target on loopback; gateway, agent, client and targets in separate processes; median of ${rounds} interleaved rounds`,
      'through the port: client -> gateway (exit) -> target; via agent: client -> gateway -> agent (exit, reverse HTTP/2) -> target; ratios are to direct',
      `CPU: the proxy processes' user + system time per unit of work (client + gateway, + agent via agent); load average ${load.map((l) => l.toFixed(1)).join(' -> ')}`,
      '',
      table(rows),
      '',
      `sessions opened and closed per second (token check + policy + store + audit, sequential): ${fmt(sessions)}`,
    ].join('\n');
  } finally {
    for (const p of procs.reverse()) p.kill('SIGTERM');
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Enroll an agent through the admin API, run `ciport agent` with the echo and sink as its tcp
 * targets, and wait until the gateway lists its connection with both targets.
 */
async function startAgent(options: {
  dir: string;
  url: string;
  caFile: string;
  admin: string;
  ports: { echo: number; sink: number };
  procs: ChildProcess[];
}): Promise<void> {
  const { dir, url, caFile, admin, ports } = options;
  const client = new GatewayClient({ url: new URL(url), ca: [readFileSync(caFile, 'utf8')] });
  try {
    const enrolled = await client.api('POST', '/v1/agents/enroll', {
      bearer: admin,
      body: { name: AGENT_NAME, targets: [...AGENT_TARGETS] },
    });
    const enrollment = (enrolled.body as { token: string }).token;
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `gateway: ${url}
ca_file: ${caFile}
name: ${AGENT_NAME}
data_dir: ${join(dir, 'agent')}
enrollment_token: {env: CIPORT_ENROLLMENT_TOKEN}
targets:
  - {name: ${AGENT_TARGETS[0]}, protocol: tcp, address: 127.0.0.1:${ports.echo}}
  - {name: ${AGENT_TARGETS[1]}, protocol: tcp, address: 127.0.0.1:${ports.sink}}
`,
    );
    const agent = child(
      [BIN, 'agent', '--config', config],
      { CIPORT_LOG_LEVEL: 'warn', CIPORT_ENROLLMENT_TOKEN: enrollment },
      'pipe',
    );
    options.procs.push(agent);
    await lineMatching(agent, new RegExp(`^ciport: agent ${AGENT_NAME} \\(.*\\) serving `), 'stderr');
    // Registered and linking: the gateway routes to it once the link is up and its targets listed.
    for (let i = 0; i < 200; i++) {
      const list = (await client.api('GET', '/v1/agents', { bearer: admin })).body as Array<{
        name: string;
        connections: Array<{ targets: string[] }>;
      }>;
      const up = list.some(
        (a) =>
          a.name === AGENT_NAME &&
          a.connections.some((c) => AGENT_TARGETS.every((t) => c.targets.includes(t))),
      );
      if (up) return;
      await sleep(50);
    }
    throw new Error('the agent did not connect to the gateway within 10 s');
  } finally {
    client.close();
  }
}

export async function gatewayUrl(gateway: ChildProcess, dataDir: string): Promise<string> {
  const m = await lineMatching(gateway, /gateway listening on (https:\/\/\S+)/, 'stderr');
  for (let i = 0; i < 100 && !existsSync(join(dataDir, 'ca.crt')); i++) await sleep(50);
  return m[1]!;
}

async function sessionsPerSecond(url: string, caFile: string, token: string, n: number): Promise<number> {
  const client = new GatewayClient({ url: new URL(url), ca: [readFileSync(caFile, 'utf8')] });
  try {
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      const s = await PortSession.create(client, { token, targets: ['echo'] });
      await s.end();
    }
    return n / ((performance.now() - start) / 1000);
  } finally {
    client.close();
  }
}
