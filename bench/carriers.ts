// `npm run bench -- carriers`: bare two-process relays, side by side, to see what the carrier
// itself costs before any ciport logic (docs/performance.md, "Carrier"). Each carrier runs as
// two processes, as ciport does: an entry (accepts the app's TCP connection, like `ciport open`)
// and an exit (terminates the carrier and dials the target, like the gateway). The targets
// (bench/servers.ts) run in a third process, the load in this one.
//
// Carriers:
// - net: plain TCP between the two relays (no encryption: the floor).
// - tls: one TLS connection per tunnel, default settings.
// - tls-connect: one TLS connection per tunnel opened with an HTTP/1.1 CONNECT request and a
//   bearer header (what a per-tunnel carrier on the gateway's port would do), then raw bytes.
// - h2: one TLS connection, HTTP/2 CONNECT stream per tunnel, Node's default settings.
// - h2-ciport: ciport's settings before issue 11 (1 MiB stream window, 16 MiB connection window,
//   64 MiB session memory); h2-nodelay: the same with Nagle off on the TLS socket; h2-tuned:
//   16 MiB stream and 64 MiB connection windows, 16 MiB max frame size, Nagle off.
//
// Per measure and carrier: the rate, its ratio to direct in the same round, and the CPU time of
// the two relay processes per unit of work (process.cpuUsage over IPC), which the other load on
// the machine disturbs far less than the rate.
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  createSecureServer,
  constants as h2c,
  connect as h2connect,
  type SecureServerOptions,
  type ServerHttp2Stream,
} from 'node:http2';
import { createServer, connect as netConnect } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream';
import { type TLSSocket, connect as tlsConnect, createServer as tlsCreateServer } from 'node:tls';
import { ensureGeneratedTls } from '../src/transport/tls.js';
import { connected, upload } from './clients.js';
import { fmt, median, nodeFlags, table } from './stats.js';

const CARRIERS = ['net', 'tls', 'tls-connect', 'h2', 'h2-ciport', 'h2-nodelay', 'h2-tuned'] as const;
type Carrier = (typeof CARRIERS)[number];
const MB = 1_000_000;
const ROLE_FLAG = '--carrier-role';

// ---------------------------------------------------------------- relay processes

export interface RoleArgs {
  role: 'entry' | 'exit';
  carrier: Carrier;
  /** entry: the exit's port; exit: the target's port. */
  port: number;
  certDir: string;
}

interface H2Tuning {
  settings: { initialWindowSize?: number; maxFrameSize?: number; enablePush: false };
  connectionWindow?: number;
  maxSessionMemory?: number;
  noDelay: boolean;
}

/** h2-ciport: what ciport's client and gateway set before issue 11; h2-nodelay: plus Nagle off. */
function h2Tuning(carrier: Carrier): H2Tuning {
  const ciport = {
    settings: { initialWindowSize: 1 << 20, enablePush: false as const },
    connectionWindow: 16 << 20,
    maxSessionMemory: 64,
  };
  switch (carrier) {
    case 'h2-ciport':
      return { ...ciport, noDelay: false };
    case 'h2-nodelay':
      return { ...ciport, noDelay: true };
    case 'h2-tuned':
      return {
        settings: { initialWindowSize: 16 << 20, maxFrameSize: (1 << 24) - 1, enablePush: false },
        connectionWindow: 64 << 20,
        maxSessionMemory: 256,
        noDelay: true,
      };
    default:
      return { settings: { enablePush: false }, noDelay: false };
  }
}

function h2ServerOptions(carrier: Carrier, tls: { cert: string; key: string }): SecureServerOptions {
  const base: SecureServerOptions = { cert: tls.cert, key: tls.key, ALPNProtocols: ['h2'] };
  const t = h2Tuning(carrier);
  return {
    ...base,
    ...(t.maxSessionMemory ? { maxSessionMemory: t.maxSessionMemory } : {}),
    paddingStrategy: h2c.PADDING_STRATEGY_NONE,
    settings: t.settings,
  };
}

function relay(
  a: NodeJS.ReadWriteStream & { destroy(): void },
  b: NodeJS.ReadWriteStream & { destroy(): void },
) {
  // Each direction ends on its own (half-close): the sink answers after the upload's end.
  let open = 2;
  const done = (err?: Error | null) => {
    if (err || --open === 0) {
      a.destroy();
      b.destroy();
    }
  };
  pipeline(a, b, done);
  pipeline(b, a, done);
}

async function runExit(args: RoleArgs): Promise<number> {
  const dial = () => netConnect({ host: '127.0.0.1', port: args.port, noDelay: true, allowHalfOpen: true });
  const tls = ensureGeneratedTls(args.certDir, ['localhost', '127.0.0.1']);
  const listen = (server: { listen(port: number, host: string, cb: () => void): void; address(): unknown }) =>
    new Promise<number>((resolve) =>
      server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
    );
  switch (args.carrier) {
    case 'net':
      return listen(
        createServer({ noDelay: true, allowHalfOpen: true }, (s) => {
          s.on('error', () => {});
          relay(
            s,
            dial().on('error', () => s.destroy()),
          );
        }),
      );
    case 'tls':
      return listen(
        tlsCreateServer({ cert: tls.cert, key: tls.key, allowHalfOpen: true }, (s) => {
          s.setNoDelay(true);
          s.on('error', () => {});
          relay(
            s,
            dial().on('error', () => s.destroy()),
          );
        }),
      );
    case 'tls-connect':
      return listen(
        tlsCreateServer(
          { cert: tls.cert, key: tls.key, ALPNProtocols: ['http/1.1'], allowHalfOpen: true },
          (s) => {
            s.setNoDelay(true);
            s.on('error', () => {});
            readHead(s).then(
              (rest) => {
                const up = dial();
                up.on('error', () => s.destroy());
                up.once('connect', () => {
                  s.write('HTTP/1.1 200 OK\r\n\r\n');
                  if (rest.length) up.write(rest);
                  relay(s, up);
                });
              },
              () => s.destroy(),
            );
          },
        ),
      );
    default: {
      const server = createSecureServer(h2ServerOptions(args.carrier, tls));
      server.on('session', (session) => {
        session.on('error', () => {});
        const w = h2Tuning(args.carrier).connectionWindow;
        if (w) session.setLocalWindowSize(w);
      });
      if (h2Tuning(args.carrier).noDelay) server.on('secureConnection', (s: TLSSocket) => s.setNoDelay(true));
      server.on('stream', (stream: ServerHttp2Stream) => {
        stream.on('error', () => {});
        const up = dial();
        up.on('error', () => stream.close(h2c.NGHTTP2_CONNECT_ERROR));
        up.once('connect', () => {
          stream.respond({ ':status': 200 });
          relay(stream, up);
        });
      });
      return listen(server);
    }
  }
}

/** Read an HTTP/1.1 request head; resolves with what followed it. */
function readHead(s: TLSSocket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > 16384) reject(new Error('head too large'));
        return;
      }
      s.off('data', onData);
      s.pause();
      resolve(buf.subarray(end + 4));
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error('closed')));
  });
}

async function runEntry(args: RoleArgs): Promise<number> {
  const opts = { host: '127.0.0.1', port: args.port };
  const tlsOpts = { ...opts, rejectUnauthorized: false, allowHalfOpen: true };
  let session: ClientHttp2Session | undefined;
  const h2session = (): Promise<ClientHttp2Session> => {
    if (session && !session.destroyed) return Promise.resolve(session);
    const t = h2Tuning(args.carrier);
    const s = h2connect(`https://127.0.0.1:${args.port}`, {
      rejectUnauthorized: false,
      ...(t.noDelay
        ? {
            createConnection: () => {
              const socket = tlsConnect({
                host: '127.0.0.1',
                port: args.port,
                rejectUnauthorized: false,
                ALPNProtocols: ['h2'],
              });
              socket.setNoDelay(true);
              return socket;
            },
          }
        : {}),
      ...(t.maxSessionMemory ? { maxSessionMemory: t.maxSessionMemory } : {}),
      paddingStrategy: h2c.PADDING_STRATEGY_NONE,
      settings: t.settings,
    });
    session = s;
    s.on('error', () => {});
    return new Promise((resolve) =>
      s.once('connect', () => {
        if (t.connectionWindow) s.setLocalWindowSize(t.connectionWindow);
        resolve(s);
      }),
    );
  };
  const server = createServer({ noDelay: true, pauseOnConnect: true, allowHalfOpen: true }, (app) => {
    app.on('error', () => {});
    switch (args.carrier) {
      case 'net': {
        const c = netConnect({ ...opts, noDelay: true, allowHalfOpen: true });
        c.on('error', () => app.destroy());
        relay(app, c);
        app.resume();
        return;
      }
      case 'tls': {
        const c = tlsConnect(tlsOpts);
        c.setNoDelay(true);
        c.on('error', () => app.destroy());
        relay(app, c);
        app.resume();
        return;
      }
      case 'tls-connect': {
        const c = tlsConnect({ ...tlsOpts, ALPNProtocols: ['http/1.1'] });
        c.setNoDelay(true);
        c.on('error', () => app.destroy());
        c.write('CONNECT sink:443 HTTP/1.1\r\nhost: sink:443\r\nauthorization: Bearer x\r\n\r\n');
        readHead(c as TLSSocket).then(
          (rest) => {
            if (rest.length) app.write(rest);
            relay(app, c);
            c.resume();
            app.resume();
          },
          () => app.destroy(),
        );
        return;
      }
      default:
        void h2session().then((s) => {
          const stream: ClientHttp2Stream = s.request({ ':method': 'CONNECT', ':authority': 'sink:443' });
          stream.on('error', () => app.destroy());
          stream.once('response', () => {
            relay(app, stream);
            app.resume();
          });
        });
    }
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
}

if (process.argv[2] === ROLE_FLAG) {
  const args = JSON.parse(process.argv[3] as string) as RoleArgs;
  const port = await (args.role === 'exit' ? runExit(args) : runEntry(args));
  process.on('message', (m) => {
    if (m === 'cpu') {
      const u = process.cpuUsage();
      process.send?.({ cpu: u.user + u.system });
    }
  });
  // The driver went away (killed, crashed): so do we.
  process.on('disconnect', () => process.exit(0));
  process.send?.({ port });
}

// ---------------------------------------------------------------- driver

export interface Relay {
  proc: ChildProcess;
  port: number;
}

/** Start one relay process (also used by bench/tunnel.ts for its bare TLS relay path). */
export function startRole(args: RoleArgs): Promise<Relay> {
  const proc = fork(new URL(import.meta.url).pathname, [ROLE_FLAG, JSON.stringify(args)], {
    execArgv: nodeFlags(),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    proc.once('message', (m: { port: number }) => resolve({ proc, port: m.port }));
    proc.once('exit', (code) => reject(new Error(`${args.role} ${args.carrier} exited (${code})`)));
  });
}

function cpuOf(proc: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    const on = (m: { cpu?: number }) => {
      if (m.cpu === undefined) return;
      proc.off('message', on);
      resolve(m.cpu);
    };
    proc.on('message', on);
    proc.send('cpu');
  });
}

async function roundTrips(port: number, n: number): Promise<void> {
  const s = await connected('127.0.0.1', port);
  const msg = Buffer.alloc(64, 1);
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
  s.destroy();
}

async function setups(port: number, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const s = await connected('127.0.0.1', port);
    await new Promise<void>((resolve) => {
      s.once('data', () => resolve());
      s.write('ping');
    });
    s.destroy();
  }
}

interface Measure {
  name: string;
  target: 'sink' | 'echo';
  /** Units of work per run, and what one is called. */
  units: number;
  unit: string;
  /** CPU per unit is shown in this scale. */
  cpuScale: number;
  cpuUnit: string;
  run: (port: number) => Promise<void>;
}

const MEASURES: Measure[] = [
  {
    name: 'bulk, 1 connection',
    target: 'sink',
    units: 200,
    unit: 'MB/s',
    cpuScale: 1e6 / 1000,
    cpuUnit: 's/GB',
    run: (p) => upload('127.0.0.1', p, 200 * MB),
  },
  {
    name: 'bulk, 8 connections',
    target: 'sink',
    units: 200,
    unit: 'MB/s',
    cpuScale: 1e6 / 1000,
    cpuUnit: 's/GB',
    run: (p) => Promise.all(Array.from({ length: 8 }, () => upload('127.0.0.1', p, 25 * MB))).then(() => {}),
  },
  {
    name: 'round trips (64 B)',
    target: 'echo',
    units: 3000,
    unit: '/s',
    cpuScale: 1,
    cpuUnit: 'µs each',
    run: (p) => roundTrips(p, 3000),
  },
  {
    name: 'connections (connect + 1 round trip)',
    target: 'echo',
    units: 300,
    unit: '/s',
    cpuScale: 1000,
    cpuUnit: 'ms each',
    run: (p) => setups(p, 300),
  },
];

type Path = 'direct' | Carrier;

function push(into: Record<string, Record<string, number[]>>, measure: string, path: string, v: number) {
  const byPath = into[measure] ?? {};
  into[measure] = byPath;
  const list = byPath[path] ?? [];
  byPath[path] = list;
  list.push(v);
}

export async function benchCarriers(rounds: number): Promise<string> {
  const certDir = mkdtempSync(join(tmpdir(), 'ciport-bench-carriers-'));
  const procs: ChildProcess[] = [];
  const load = [loadavg()[0]];
  try {
    const servers = fork(new URL('./servers.js', import.meta.url).pathname, [], {
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    });
    procs.push(servers);
    const ports = await new Promise<{ echo: number; sink: number }>((resolve) => {
      let text = '';
      servers.stdout!.on('data', (b: Buffer) => {
        text += b.toString();
        if (text.includes('\n')) resolve(JSON.parse(text.split('\n')[0] as string));
      });
    });
    // One relay pair per carrier and target.
    const pairs = new Map<string, { entry: Relay; exit: Relay }>();
    for (const carrier of CARRIERS) {
      for (const target of ['sink', 'echo'] as const) {
        const exit = await startRole({ role: 'exit', carrier, port: ports[target], certDir });
        const entry = await startRole({ role: 'entry', carrier, port: exit.port, certDir });
        procs.push(exit.proc, entry.proc);
        pairs.set(`${carrier}/${target}`, { entry, exit });
      }
    }
    const paths: Path[] = ['direct', ...CARRIERS];
    const rate: Record<string, Record<string, number[]>> = {};
    const ratio: Record<string, Record<string, number[]>> = {};
    const cpu: Record<string, Record<string, number[]>> = {};
    for (let r = 0; r < rounds; r++) {
      const order = paths.map((_, i) => paths[(i + r) % paths.length] as Path);
      for (const m of MEASURES) {
        rate[m.name] ??= {};
        ratio[m.name] ??= {};
        cpu[m.name] ??= {};
        const got: Partial<Record<Path, number>> = {};
        for (const path of order) {
          const pair = path === 'direct' ? undefined : pairs.get(`${path}/${m.target}`);
          const port = pair ? pair.entry.port : ports[m.target];
          const before = pair ? (await cpuOf(pair.entry.proc)) + (await cpuOf(pair.exit.proc)) : 0;
          const start = performance.now();
          if (process.env.BENCH_VERBOSE) process.stderr.write(`${m.name} ${path}\n`);
          await m.run(port);
          const seconds = (performance.now() - start) / 1000;
          const after = pair ? (await cpuOf(pair.entry.proc)) + (await cpuOf(pair.exit.proc)) : 0;
          const v = m.units / seconds;
          got[path] = v;
          push(rate, m.name, path, v);
          if (pair) push(cpu, m.name, path, (after - before) / m.units / m.cpuScale);
        }
        for (const path of CARRIERS) push(ratio, m.name, path, got[path]! / got.direct!);
      }
      load.push(loadavg()[0]);
    }
    const out: string[] = [
      `carriers: bare two-process relays (entry + exit) between a load process and the targets; median of ${rounds} interleaved rounds; CPU = both relay processes; load average ${load.map((l) => (l ?? 0).toFixed(1)).join(' → ')}`,
      '',
    ];
    for (const m of MEASURES) {
      const rows = [[m.name, m.unit, 'ratio to direct', `relay CPU, ${m.cpuUnit}`]];
      rows.push(['direct', fmt(median(rate[m.name]!.direct!)), '1.00x', '—']);
      for (const c of CARRIERS) {
        rows.push([
          c,
          fmt(median(rate[m.name]![c]!)),
          `${median(ratio[m.name]![c]!).toFixed(2)}x`,
          fmt(median(cpu[m.name]![c]!)),
        ]);
      }
      out.push(table(rows), '');
    }
    return out.join('\n');
  } finally {
    for (const p of procs.reverse()) p.kill('SIGTERM');
    rmSync(certDir, { recursive: true, force: true });
  }
}
