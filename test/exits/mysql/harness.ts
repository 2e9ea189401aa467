// Wires the pieces the way the product will: a local TCP listener (client side, `ciport exec`)
// ⇄ a loopback TCP hop standing in for the HTTP/2 CONNECT stream ⇄ the exit, which connects to
// the real MariaDB with the injected credentials. Also: root admin helpers to create and drop
// least-privilege users and databases with random names.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import mysql from 'mysql2/promise';
import { serveMysqlClientConnection } from '../../../src/exits/mysql/client.js';
import {
  type MysqlConnectedInfo,
  type MysqlExitResult,
  serveMysqlExitStream,
} from '../../../src/exits/mysql/exit.js';
import type { MysqlQueryEvent } from '../../../src/exits/mysql/observe.js';
import type { RelayResult } from '../../../src/exits/mysql/relay.js';
import { MysqlThreadRegistry } from '../../../src/exits/mysql/threads.js';
import type { MysqlUpstreamTarget } from '../../../src/exits/mysql/upstream.js';

export const MARIADB = { host: '127.0.0.1', port: 3306 };
export const MARIADB_ADDRESS = `${MARIADB.host}:${MARIADB.port}`;

export interface PortHarness {
  port: number;
  /** The exit's listener (tunnel streams arrive here). */
  exitPort: number;
  /** End every session of this port the way the gateway does (the exits' AbortSignal). */
  abort(): void;
  otp: string;
  user: string;
  events: MysqlQueryEvent[];
  exitResults: MysqlExitResult[];
  exitErrors: Error[];
  clientResults: RelayResult[];
  clientErrors: Error[];
  connected: MysqlConnectedInfo[];
  /** Tunnel streams the exit has accepted. */
  tunnels: number;
  /** Every byte the listener wrote to the application. */
  toApp(): Buffer;
  close(): Promise<void>;
}

export interface PortOptions {
  upstream: MysqlUpstreamTarget;
  /** Shared between ports to model several sessions at one exit (default: one per port). */
  threads?: MysqlThreadRegistry;
  sessionId?: string;
  otp?: string;
  /** Name the app uses (the local listener's expected user; default "app"). */
  user?: string;
  queryEvents?: boolean;
  maxQueryLength?: number;
  timeoutMs?: number;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
}

export async function startPort(opts: PortOptions): Promise<PortHarness> {
  const otp = opts.otp ?? `otp_${randomBytes(16).toString('hex')}`;
  const captured: Buffer[] = [];
  const sockets = new Set<Socket>();
  const sessions = new AbortController();
  const threads = opts.threads ?? new MysqlThreadRegistry();
  const sessionId = opts.sessionId ?? `ses_${randomBytes(4).toString('hex')}`;
  const h: PortHarness = {
    port: 0,
    exitPort: 0,
    abort: () => sessions.abort(),
    otp,
    user: opts.user ?? 'app',
    events: [],
    exitResults: [],
    exitErrors: [],
    clientResults: [],
    clientErrors: [],
    connected: [],
    tunnels: 0,
    toApp: () => Buffer.concat(captured),
    close: async () => {},
  };
  const exit = createServer({ allowHalfOpen: true }, (stream) => {
    h.tunnels++;
    sockets.add(stream);
    stream.on('close', () => sockets.delete(stream));
    serveMysqlExitStream(stream, {
      upstream: opts.upstream,
      sessionId,
      threads,
      queryEvents: opts.queryEvents,
      maxQueryLength: opts.maxQueryLength,
      onQuery: (e) => h.events.push(e),
      onConnected: (info) => h.connected.push(info),
      signal: sessions.signal,
    }).then(
      (r) => h.exitResults.push(r),
      (e: Error) => h.exitErrors.push(e),
    );
  });
  const exitPort = await listen(exit);
  h.exitPort = exitPort;
  const openTunnel = (): Promise<Duplex> =>
    new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: exitPort, allowHalfOpen: true });
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.once('connect', () => {
        s.removeListener('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
  const local = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const write = socket.write.bind(socket) as (chunk: unknown, ...rest: unknown[]) => boolean;
    socket.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (Buffer.isBuffer(chunk)) captured.push(chunk);
      return write(chunk, ...rest);
    }) as typeof socket.write;
    const end = socket.end.bind(socket) as (...args: unknown[]) => Socket;
    socket.end = ((...args: unknown[]) => {
      if (Buffer.isBuffer(args[0])) captured.push(args[0]);
      return end(...args);
    }) as typeof socket.end;
    serveMysqlClientConnection(socket, {
      password: otp,
      user: h.user,
      openTunnel,
      timeoutMs: opts.timeoutMs,
    }).then(
      (r) => h.clientResults.push(r),
      (e: Error) => h.clientErrors.push(e),
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

/** A root connection to the real MariaDB (no password on this machine's test server). */
export function admin(): Promise<mysql.Connection> {
  return mysql.createConnection({ ...MARIADB, user: 'root' });
}

export const suffix = () => randomBytes(4).toString('hex');

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

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** An application connection through a port (mysql2). */
export const connectApp = (h: PortHarness) =>
  mysql.createConnection({ host: '127.0.0.1', port: h.port, user: h.user, password: h.otp });

/**
 * A user with a fresh database of its own on the real MariaDB (names `<prefix>_<random>`), the
 * root connection that made them (for `setup` statements and checks), and ports whose target is
 * that user; `drop()` closes the ports and drops both.
 */
export async function mariadbTarget(prefix: string) {
  const name = `${prefix}_${suffix()}`;
  const password = `pw-${randomBytes(12).toString('hex')}`;
  const root = await admin();
  await root.query(`CREATE DATABASE \`${name}\``);
  await root.query(`CREATE USER '${name}'@'%' IDENTIFIED BY '${password}'`);
  await root.query(`GRANT ALL ON \`${name}\`.* TO '${name}'@'%'`);
  const ports: PortHarness[] = [];
  return {
    db: name,
    user: name,
    root,
    async port(extra: Partial<PortOptions> = {}): Promise<PortHarness> {
      const h = await startPort({
        upstream: { address: MARIADB_ADDRESS, user: name, password, database: name },
        ...extra,
      });
      ports.push(h);
      return h;
    },
    async drop(): Promise<void> {
      await Promise.all(ports.map((h) => h.close()));
      await root.query(`DROP USER IF EXISTS '${name}'@'%'`);
      await root.query(`DROP DATABASE IF EXISTS \`${name}\``);
      await root.end();
    },
  };
}

/** The mariadb CLI through a port, logged in with its one-time password; `args` after the login. */
export function mariadbCli(h: PortHarness, args: string[]): Promise<Ran> {
  const login = ['--no-defaults', '-h', '127.0.0.1', '-P', String(h.port), '-u', h.user];
  return runClient('mariadb', [...login, ...args], {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    MYSQL_PWD: h.otp,
  });
}
