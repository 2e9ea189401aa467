// Wires the pieces the way the product will: a local TCP listener (client side, `ciport exec`)
// ⇄ a loopback TCP hop standing in for the HTTP/2 CONNECT stream (half-close capable, like a
// stream) ⇄ the exit, which connects to the real PostgreSQL with the injected credentials.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { CancelRegistry } from '../../../src/exits/postgres/cancel.js';
import { servePgClientConnection } from '../../../src/exits/postgres/client.js';
import {
  type PgExitResult,
  type PgUpstreamTarget,
  servePgExitStream,
} from '../../../src/exits/postgres/exit.js';
import type { QueryEvent } from '../../../src/exits/postgres/relay.js';
import type { PgAuthMethod } from '../../../src/exits/postgres/upstream.js';
import { cleanEnv } from '../../fixtures/pg-server.js';

export interface PortHarness {
  port: number;
  otp: string;
  user: string;
  database: string;
  events: QueryEvent[];
  exitResults: PgExitResult[];
  exitErrors: Error[];
  clientErrors: Error[];
  connected: { auth: PgAuthMethod; tls: boolean; processId: number | undefined }[];
  registry: CancelRegistry;
  /** Tunnel streams the exit has accepted. */
  tunnels: number;
  /** Every byte the exit sent towards the application, and every byte the listener wrote to it. */
  toApp(): Buffer;
  env(extra?: Record<string, string>): Record<string, string>;
  url(password?: string): string;
  close(): Promise<void>;
}

export interface PortOptions {
  upstream: PgUpstreamTarget;
  otp?: string;
  /** Name the app uses (the local listener's expected user; default the upstream's). */
  user?: string;
  database?: string;
  queryEvents?: boolean;
  maxQueryLength?: number;
  sessionId?: string;
  registry?: CancelRegistry;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
}

export async function startPort(opts: PortOptions): Promise<PortHarness> {
  const otp = opts.otp ?? `otp_${randomBytes(16).toString('hex')}`;
  const registry = opts.registry ?? new CancelRegistry();
  const sessionId = opts.sessionId ?? `ses_${randomBytes(4).toString('hex')}`;
  const captured: Buffer[] = [];
  const sockets = new Set<Socket>();
  const h: PortHarness = {
    port: 0,
    otp,
    user: opts.user ?? opts.upstream.user,
    database: opts.database ?? opts.upstream.database ?? opts.upstream.user,
    events: [],
    exitResults: [],
    exitErrors: [],
    clientErrors: [],
    connected: [],
    registry,
    tunnels: 0,
    toApp: () => Buffer.concat(captured),
    env: (extra = {}) =>
      cleanEnv({
        PGHOST: '127.0.0.1',
        PGPORT: String(h.port),
        PGUSER: h.user,
        PGPASSWORD: otp,
        PGDATABASE: h.database,
        PGCONNECT_TIMEOUT: '15',
        ...extra,
      }),
    url: (password = otp) =>
      `postgresql://${encodeURIComponent(h.user)}:${encodeURIComponent(password)}@127.0.0.1:${h.port}/${h.database}`,
    close: async () => {},
  };

  const exit = createServer({ allowHalfOpen: true }, (stream) => {
    h.tunnels++;
    sockets.add(stream);
    stream.on('close', () => sockets.delete(stream));
    servePgExitStream(stream, {
      sessionId,
      upstream: opts.upstream,
      cancelRegistry: registry,
      queryEvents: opts.queryEvents,
      maxQueryLength: opts.maxQueryLength,
      onQuery: (e) => h.events.push(e),
      onConnected: (info) => h.connected.push(info),
    }).then(
      (r) => h.exitResults.push(r),
      (e: Error) => h.exitErrors.push(e),
    );
  });
  const exitPort = await listen(exit);

  const openTunnel = (): Promise<Duplex> =>
    new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: exitPort, allowHalfOpen: true });
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('data', (chunk: Buffer) => captured.push(chunk));
      s.once('connect', () => {
        s.removeListener('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });

  const local = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // Record what the listener itself writes to the application (SASL, errors, relayed bytes).
    const keep = (chunk: unknown) => {
      if (Buffer.isBuffer(chunk)) captured.push(chunk);
      else if (typeof chunk === 'string') captured.push(Buffer.from(chunk));
    };
    const write = socket.write.bind(socket) as (chunk: unknown, ...rest: unknown[]) => boolean;
    socket.write = ((chunk: unknown, ...rest: unknown[]) => {
      keep(chunk);
      return write(chunk, ...rest);
    }) as typeof socket.write;
    const end = socket.end.bind(socket) as (...args: unknown[]) => Socket;
    socket.end = ((...args: unknown[]) => {
      if (typeof args[0] !== 'function') keep(args[0]);
      return end(...args);
    }) as typeof socket.end;
    servePgClientConnection(socket, { password: otp, user: h.user, openTunnel }).catch((e: Error) =>
      h.clientErrors.push(e),
    );
  });
  h.port = await listen(local);
  h.close = async () => {
    for (const s of sockets) s.destroy();
    await Promise.all([
      new Promise<void>((r) => local.close(() => r())),
      new Promise<void>((r) => exit.close(() => r())),
    ]);
  };
  return h;
}

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a client program to completion (never rejects), with a hard timeout. */
export function runClient(
  file: string,
  args: string[],
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === 'number'
          ? (err as { code: number }).code
          : null
        : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** Start a program and return it plus a promise of its outcome. */
export function spawnClient(file: string, args: string[], env: Record<string, string>) {
  const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const done = new Promise<Ran>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}
