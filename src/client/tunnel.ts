// Local listeners: one per granted target on 127.0.0.1. Each accepted socket passes the gates
// (peer check, the protocol's local login) and becomes one LocalConnection
// (local-connection.ts): one HTTP/2 CONNECT stream to the gateway, bytes through `pipeline` both
// ways (HTTP/2 flow control is the backpressure, nothing is buffered without bound), settled once.
import { type ClientHttp2Stream, constants as h2 } from 'node:http2';
import { createServer, type Server, type Socket } from 'node:net';
import { serveMysqlClientConnection } from '../exits/mysql/client.js';
import { servePgClientConnection } from '../exits/postgres/client.js';
import { authenticateRedisClient } from '../exits/redis/client.js';
import { AwsEndpoint } from './aws-endpoint.js';
import { GatewayError } from './errors.js';
import { TunnelRefused } from './gateway.js';
import { type ConnectionStats, LocalConnection, resetReason } from './local-connection.js';
import type { PeerCheck } from './peer-uid.js';

export interface TunnelLog {
  verbose: boolean;
  /** Always shown (a refused tunnel is an error the user needs). */
  warn(message: string): void;
  /** Shown with --verbose only. */
  info(message: string): void;
}

export interface ListenerOptions {
  target: string;
  host?: string;
  port: number;
  open: (target: string) => Promise<ClientHttp2Stream>;
  log: TunnelLog;
  /** A stream ended abnormally or was refused with 410: the session may be over. */
  onTrouble?: (status: number | undefined, code: string | undefined) => void;
  /**
   * protocol postgres: the listener speaks PostgreSQL to the app and demands this one-time
   * password (SCRAM-SHA-256) before it opens a tunnel (docs/postgres.md).
   */
  postgres?: { user: string; password: string } | undefined;
  /**
   * protocol mysql (with injected credentials): the listener speaks MySQL to the app and demands
   * this one-time password before it opens a tunnel (docs/mysql.md).
   */
  mysql?: { user: string; password: string } | undefined;
  /**
   * protocol redis: the listener demands `AUTH` (or `HELLO … AUTH`) with this one-time password
   * before it opens a tunnel (docs/redis.md, "The local hop").
   */
  redis?: { password: string } | undefined;
  /**
   * protocol aws: the listener is the container-credentials endpoint (aws-endpoint.ts), which
   * demands this token in `Authorization` and opens one tunnel per request.
   */
  aws?: { token: string } | undefined;
  /** Who may connect: run on every accepted socket before anything else; refused → closed. */
  checkPeer?: PeerCheck | undefined;
  /** How long a redis application has to authenticate (default 30 s). */
  redisAuthTimeoutMs?: number | undefined;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function ignore(): void {}

export class TargetListener {
  readonly target: string;
  readonly #server: Server;
  readonly #options: ListenerOptions;
  /** Sockets still at a gate (peer check, redis AUTH): no connection yet. */
  readonly #gated = new Set<Socket>();
  /** Connections past the gates, until they settle (local-connection.ts). */
  readonly #connections = new Set<LocalConnection>();
  readonly #warned = new Set<string>();
  /** When each abnormal-close reason was last logged (at most one line per reason per 10 s). */
  readonly #lastWarned = new Map<string, number>();

  #quietFor(reason: string): boolean {
    const now = Date.now();
    if (now - (this.#lastWarned.get(reason) ?? 0) < 10_000) return false;
    this.#lastWarned.set(reason, now);
    return true;
  }
  #nextId = 1;
  #closing = false;
  /** protocol aws: the HTTP endpoint the accepted sockets are handed to. */
  readonly #aws: AwsEndpoint | undefined;
  /** Totals over closed connections; `refused`: closed by the peer check or the redis gate. */
  readonly totals = { connections: 0, sent: 0, received: 0, refused: 0 };

  private constructor(server: Server, options: ListenerOptions) {
    this.#server = server;
    this.#options = options;
    this.target = options.target;
    this.#aws = options.aws
      ? new AwsEndpoint({
          target: options.target,
          token: options.aws.token,
          open: options.open,
          onTrouble: options.onTrouble,
          warn: (m) => options.log.warn(m),
        })
      : undefined;
  }

  /** Listen now; resolves once the port accepts connections. */
  static listen(options: ListenerOptions): Promise<TargetListener> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
    const listener = new TargetListener(server, options);
    server.on('connection', (socket) => listener.#accept(socket));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: options.host ?? '127.0.0.1', port: options.port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', (err) => options.log.warn(`${options.target}: listener error: ${err.message}`));
        resolve(listener);
      });
    });
  }

  get host(): string {
    const a = this.#server.address();
    return a && typeof a === 'object' ? a.address : '127.0.0.1';
  }

  get port(): number {
    const a = this.#server.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  get activeConnections(): number {
    return this.#gated.size + this.#connections.size + (this.#aws?.activeConnections ?? 0);
  }

  /** Who is calling first (peer check), then the protocol's local gate, then the tunnel. */
  #accept(socket: Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    const { checkPeer } = this.#options;
    if (!checkPeer) {
      this.#dispatch(socket);
      return;
    }
    this.#enterGate(socket);
    const peer = { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort };
    checkPeer(socket).then(
      (verdict) => {
        if (!verdict.ok)
          this.#refuse(socket, `from ${peer.remoteAddress}:${peer.remotePort}: ${verdict.reason}`);
        else if (this.#passGate(socket)) this.#dispatch(socket);
      },
      (err: unknown) => this.#refuse(socket, `peer check failed: ${(err as Error).message}`),
    );
  }

  #enterGate(socket: Socket): void {
    this.#gated.add(socket);
    socket.on('error', ignore);
  }

  /** Through a gate: false (and closed) when it went away or the port closed meanwhile. */
  #passGate(socket: Socket): boolean {
    this.#gated.delete(socket);
    if (!socket.destroyed && !this.#closing) return true;
    socket.destroy();
    return false;
  }

  /** Close a connection that may not use the port: one line (at most one per 10 s), counted. */
  #refuse(socket: Socket, why: string): void {
    this.#gated.delete(socket);
    socket.destroy();
    this.totals.refused += 1;
    if (!this.#closing && this.#quietFor('refused')) {
      const { target } = this.#options;
      this.#options.log.warn(
        `${target}: refused a local connection ${why} (${this.totals.refused} refused so far; CIPORT_E_LOCAL_PEER_REFUSED)`,
      );
    }
  }

  #dispatch(socket: Socket): void {
    if (this.#aws) this.#aws.accept(socket);
    else if (this.#options.postgres) this.#acceptPg(socket, this.#options.postgres);
    else if (this.#options.mysql) this.#acceptMysql(socket, this.#options.mysql);
    else if (this.#options.redis) this.#acceptRedis(socket, this.#options.redis);
    else this.#relay(socket);
  }

  /** protocol redis: the one-time password first (redis/client.ts), then the plain relay. */
  #acceptRedis(socket: Socket, cred: { password: string }): void {
    this.#enterGate(socket);
    socket.setNoDelay(true);
    authenticateRedisClient(socket, {
      password: cred.password,
      timeoutMs: this.#options.redisAuthTimeoutMs,
    }).then(
      (auth) => {
        if (this.#passGate(socket)) this.#relay(socket, auth.reply);
      },
      (err: unknown) => {
        this.#gated.delete(socket);
        const reason = (err as { details?: { reason?: string } }).details?.reason ?? 'error';
        // An application that hung up (or sent QUIT) before AUTH was not refused.
        if (reason === 'closed' || reason === 'quit') return;
        this.totals.refused += 1;
        // The application's own mistake (a missing REDISCLI_AUTH) deserves a line.
        if (!this.#closing && this.#quietFor(`redis ${reason}`)) {
          this.#options.log.warn(`${this.#options.target}: connection closed: ${(err as Error).message}`);
        }
      },
    );
  }

  /**
   * A connection past the gates: numbered, and tracked until it settles; `onEnd` says what its
   * end means for the port (after the totals count it).
   */
  #connection(socket: Socket, onEnd: (stats: ConnectionStats) => void): LocalConnection {
    const conn = new LocalConnection(socket, {
      id: this.#nextId++,
      target: this.target,
      onSettle: (stats) => {
        this.#connections.delete(conn);
        this.totals.connections += 1;
        this.totals.sent += stats.sent;
        this.totals.received += stats.received;
        onEnd(stats);
      },
    });
    this.#connections.add(conn);
    return conn;
  }

  /**
   * The code the far side cut a connection with (unless the port itself is closing): the session
   * may be over, so the port checks it now.
   */
  #farSideCut(stats: ConnectionStats): number | undefined {
    if (stats.farReset === undefined || this.#closing) return undefined;
    this.#options.onTrouble?.(undefined, undefined);
    return stats.farReset;
  }

  /** The --verbose line for a closed connection. */
  #logClosed(stats: ConnectionStats): void {
    const what = `sent ${formatBytes(stats.sent)}, received ${formatBytes(stats.received)}, ${(stats.ms / 1000).toFixed(2)} s`;
    this.#options.log.info(
      `${stats.target}: connection ${stats.id} closed (${what})${stats.error ? `: ${stats.error}` : ''}`,
    );
  }

  /**
   * Opening a tunnel failed: `line` said once per kind of refusal (unless the port is closing),
   * and the port checks its session. Returns the gateway's refusal, when it was one.
   */
  #openFailed(err: unknown, line: string | undefined): TunnelRefused | undefined {
    const refused = err instanceof TunnelRefused ? err : undefined;
    const key = refused ? `${refused.status} ${refused.code ?? ''}` : 'unreachable';
    if (line !== undefined && !this.#warned.has(key) && !this.#closing) {
      this.#warned.add(key);
      this.#options.log.warn(`${this.target}: connection ${line}`);
    }
    this.#options.onTrouble?.(refused?.status, refused?.code);
    return refused;
  }

  /** Raw relay; `greeting` goes to the application once the tunnel is open (redis `+OK`). */
  #relay(socket: Socket, greeting?: Buffer): void {
    const { log, target } = this.#options;
    const conn = this.#connection(socket, (stats) => {
      const farReset = this.#farSideCut(stats);
      if (log.verbose) this.#logClosed(stats);
      else if (stats.error && farReset !== undefined && this.#quietFor(stats.error)) {
        // Quiet on success, but an app's connection cut from the far side is worth one line.
        log.warn(`${target}: connection ${stats.id} closed: ${stats.error}`);
      }
    });
    if (log.verbose)
      log.info(`${target}: connection ${conn.id} opened (from 127.0.0.1:${socket.remotePort ?? '?'})`);
    this.#options.open(target).then(
      (stream) => conn.relay(stream, greeting),
      (err: unknown) => {
        const refused = err instanceof TunnelRefused ? err : undefined;
        const reason = refused
          ? `refused by the gateway (${refused.status || 'no status'}${refused.code ? ` ${refused.code}` : ''}): ${refused.message}`
          : `cannot open a tunnel: ${(err as Error).message}`;
        this.#openFailed(err, log.verbose ? undefined : reason);
        conn.abort(reason);
      },
    );
  }

  /** protocol postgres: local SCRAM with the one-time password, then one stream per connection. */
  #acceptPg(socket: Socket, cred: { user: string; password: string }): void {
    this.#acceptLogin(socket, (openTunnel) =>
      servePgClientConnection(socket, { password: cred.password, user: cred.user, openTunnel }).then((r) =>
        r.kind === 'session' ? r.error : undefined,
      ),
    );
  }

  /** protocol mysql: the one-time password (mysql_native_password), then one stream per connection. */
  #acceptMysql(socket: Socket, cred: { user: string; password: string }): void {
    this.#acceptLogin(socket, (openTunnel) =>
      serveMysqlClientConnection(socket, { password: cred.password, user: cred.user, openTunnel }).then(
        (r) => r.error,
      ),
    );
  }

  /**
   * A protocol whose listener logs the app in with the one-time password before it opens one
   * stream (postgres, mysql). `serve` resolves with why the relay ended abnormally, if it did.
   */
  #acceptLogin(
    socket: Socket,
    serve: (openTunnel: () => Promise<ClientHttp2Stream>) => Promise<Error | undefined>,
  ): void {
    const { log, target } = this.#options;
    const conn = this.#connection(socket, (stats) => {
      const farReset = this.#farSideCut(stats);
      // The protocol told the application in its own terms; the byte limit deserves a line too.
      if (farReset === h2.NGHTTP2_ENHANCE_YOUR_CALM) {
        const why = resetReason(farReset);
        if (this.#quietFor(why)) log.warn(`${target}: connection ${stats.id} closed: ${why}`);
      }
      if (log.verbose) this.#logClosed(stats);
    });
    serve(async () => {
      let stream: ClientHttp2Stream;
      try {
        stream = await this.#options.open(target);
      } catch (err) {
        const refused = this.#openFailed(err, `refused: ${(err as Error).message}`);
        // As a CiportError with the gateway's code, so the application reads that code (a
        // plain Error would reach it as CIPORT_E_INTERNAL).
        throw refused ? new GatewayError(refused.status, refused.code, refused.message) : err;
      }
      // Over already (the port closed, the login gave up waiting): attach reset the stream.
      if (!conn.attach(stream)) throw new Error(conn.stats?.error ?? 'the connection is over');
      return stream;
    }).then(
      (error) => conn.close(error?.message),
      (err: unknown) => conn.close((err as Error).message),
    );
  }

  /** Stop accepting and cut every connection (the app sees its sockets close). */
  close(): Promise<void> {
    this.#closing = true;
    for (const conn of this.#connections) conn.close('the port closed');
    for (const socket of this.#gated) socket.destroy();
    const served = this.#aws?.close();
    return Promise.all([served, new Promise<void>((resolve) => this.#server.close(() => resolve()))]).then(
      () => {},
    );
  }
}
