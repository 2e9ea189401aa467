// `npm run bench -- tunnel`: what the port costs against a direct loopback connection, measured
// in one run, interleaved and repeated: bulk throughput (1 and 8 connections), small
// request/response round trips, connection setup, and sessions opened per second.
//
// Processes, as in a CI job: the targets (bench/servers.ts), the gateway (`ciport gateway`)
// and the client (`ciport open`) each run in their own process; this process only drives load.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatewayClient, PortSession } from '../src/client/index.js';
import { DevSigner, mintToken } from '../src/identity/index.js';
import { fmt, median, table } from './stats.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/ciport.js');
const ISSUER = 'https://bench-issuer.invalid';
const MB = 1_000_000;

interface Endpoints {
  echo: { host: string; port: number };
  sink: { host: string; port: number };
}

function child(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  stderr: 'pipe' | 'inherit' = 'inherit',
): ChildProcess {
  return spawn(process.execPath, ['--', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', stderr],
  });
}

/** The first line of the child's stdout (or stderr) that matches. */
async function lineMatching(
  proc: ChildProcess,
  re: RegExp,
  stream: 'stdout' | 'stderr' = 'stdout',
): Promise<RegExpExecArray> {
  const rl = createInterface({ input: proc[stream]! });
  for await (const line of rl) {
    const m = re.exec(line);
    if (m) return m;
  }
  throw new Error(`process ended before printing ${re}`);
}

function connected(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Upload `bytes` and wait for the sink's count: MB/s of one connection. */
async function upload(host: string, port: number, bytes: number): Promise<void> {
  const s = await connected(host, port);
  const chunk = Buffer.alloc(256 * 1024, 7);
  let sent = 0;
  const answer = new Promise<string>((resolve, reject) => {
    let text = '';
    s.on('data', (b: Buffer) => {
      text += b.toString();
    });
    s.on('end', () => resolve(text.trim()));
    s.on('error', reject);
  });
  while (sent < bytes) {
    const n = Math.min(chunk.length, bytes - sent);
    sent += n;
    if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n)))
      await new Promise((r) => s.once('drain', r));
  }
  s.end();
  if (Number(await answer) !== bytes) throw new Error(`sink counted ${await answer} of ${bytes} bytes`);
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

export async function benchTunnel(rounds: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-tunnel-'));
  const procs: ChildProcess[] = [];
  try {
    const servers = child([join(ROOT, 'dist/bench/servers.js')]);
    procs.push(servers);
    const ports = JSON.parse((await lineMatching(servers, /^\{.*\}$/))[0]) as { echo: number; sink: number };

    const signer = await DevSigner.ephemeral();
    writeFileSync(join(dir, 'jwks.json'), JSON.stringify(signer.jwks()));
    const config = join(dir, 'gateway.yaml');
    writeFileSync(
      config,
      `listen: 127.0.0.1:0
data_dir: ${join(dir, 'data')}
sessions: {rate_limit: {per_minute: 100000, burst: 100000}}
issuers:
  - {name: bench, kind: gitlab, issuer: ${ISSUER}, audience: ciport-bench, jwks_file: ${join(dir, 'jwks.json')}}
targets:
  - {name: echo, protocol: tcp, address: 127.0.0.1:${ports.echo}}
  - {name: sink, protocol: tcp, address: 127.0.0.1:${ports.sink}}
rules:
  - {name: bench, issuer: bench, when: {project_id: "1"}, allow: [echo, sink]}
`,
    );
    const gateway = child([BIN, 'gateway', '--config', config], { CIPORT_LOG_LEVEL: 'warn' }, 'pipe');
    procs.push(gateway);
    const url = await gatewayUrl(gateway, join(dir, 'data'));
    const token = await mintToken(
      signer,
      ISSUER,
      { project_id: '1', job_project_id: '1' },
      { audience: 'ciport-bench', ttlMs: 3_600_000 },
    );
    const clientEnv = {
      CIPORT_GATEWAY: url,
      CIPORT_CA_FILE: join(dir, 'data/ca.crt'),
      CIPORT_ID_TOKEN: token,
    };
    const envFile = join(dir, 'port.env');
    const open = child([BIN, 'open', 'echo', 'sink', '--env-file', envFile], clientEnv);
    procs.push(open);
    for (let i = 0; i < 200 && !existsSync(envFile); i++) await sleep(50);
    if (!existsSync(envFile)) throw new Error('ciport open did not become ready within 10 s');
    const env = Object.fromEntries(
      readFileSync(envFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^'|'$/g, '')]),
    );
    const viaPort: Endpoints = {
      echo: { host: env.CIPORT_ECHO_HOST!, port: Number(env.CIPORT_ECHO_PORT) },
      sink: { host: env.CIPORT_SINK_HOST!, port: Number(env.CIPORT_SINK_PORT) },
    };
    const direct: Endpoints = {
      echo: { host: '127.0.0.1', port: ports.echo },
      sink: { host: '127.0.0.1', port: ports.sink },
    };

    const results: Record<string, { direct: number[]; port: number[] }> = {};
    const record = (name: string, path: 'direct' | 'port', value: number) => {
      results[name] ??= { direct: [], port: [] };
      results[name][path].push(value);
    };
    const ratios: Record<string, number[]> = {};
    for (let r = 0; r < rounds; r++) {
      // Alternate which path goes first, so warm-up and drift do not favour one.
      const order: Array<['direct' | 'port', Endpoints]> =
        r % 2
          ? [
              ['port', viaPort],
              ['direct', direct],
            ]
          : [
              ['direct', direct],
              ['port', viaPort],
            ];
      for (const [name, fn] of [
        ['bulk MB/s, 1 connection', (e: Endpoints) => bulk(e.sink.host, e.sink.port, 1, 200 * MB)],
        ['bulk MB/s, 8 connections', (e: Endpoints) => bulk(e.sink.host, e.sink.port, 8, 25 * MB)],
        ['round trips/s (64 B)', (e: Endpoints) => roundTrips(e.echo.host, e.echo.port, 3000)],
        ['connections/s (connect + 1 round trip)', (e: Endpoints) => setups(e.echo.host, e.echo.port, 300)],
      ] as const) {
        const measured: Partial<Record<'direct' | 'port', number>> = {};
        for (const [path, e] of order) {
          const v = await fn(e);
          record(name, path, v);
          measured[path] = v;
        }
        ratios[name] = [...(ratios[name] ?? []), (measured.port as number) / (measured.direct as number)];
      }
    }

    const sessions = await sessionsPerSecond(url, join(dir, 'data/ca.crt'), token, 100);
    const rows = [['measure', 'direct', 'through the port', 'ratio (median per round)']];
    for (const [name, v] of Object.entries(results)) {
      rows.push([name, fmt(median(v.direct)), fmt(median(v.port)), `${median(ratios[name]!).toFixed(2)}x`]);
    }
    return [
      `tunnel: tcp target on loopback; gateway, client and targets in separate processes; median of ${rounds} interleaved rounds`,
      '',
      table(rows),
      '',
      `sessions opened and closed per second (token check + policy + store + audit, sequential): ${fmt(sessions)}`,
    ].join('\n');
  } finally {
    for (const p of procs.reverse()) p.kill('SIGTERM');
    await sleep(200);
  }
}

async function gatewayUrl(gateway: ChildProcess, dataDir: string): Promise<string> {
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
