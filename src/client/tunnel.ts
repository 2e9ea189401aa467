// Local listeners: one per granted target on 127.0.0.1. Each accepted socket becomes one
// HTTP/2 CONNECT stream to the gateway; bytes flow through `pipeline` both ways, so HTTP/2
// flow control is the backpressure and nothing is buffered without bound.
import type { ClientHttp2Stream } from 'node:http2';
import { constants as h2 } from 'node:http2';
import { createServer, type Server, type Socket } from 'node:net';
import { pipeline } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { serveMysqlClientConnection } from '../exits/mysql/client.js';
import { servePgClientConnection } from '../exits/postgres/client.js';
import { authenticateRedisClient } from '../exits/redis/client.js';
import { GatewayError } from './errors.js';
import { TunnelRefused } from './gateway.js';
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
  /** Who may connect: run on every accepted socket before anything else; refused → closed. */
  checkPeer?: PeerCheck | undefined;
  /** How long a redis application has to authenticate (default 30 s). */
  redisAuthTimeoutMs?: number | undefined;
}

export interface ConnectionStats {
  id: number;
  target: string;
  /** App → gateway. */
  sent: number;
  /** Gateway → app. */
  received: number;
  ms: number;
  /** Why it closed when not normally. */
  error?: string | undefined;
}

const RST_REASONS: Record<number, string> = {
  [h2.NGHTTP2_CANCEL]: 'the gateway cancelled the stream (session ended or idle timeout)',
  [h2.NGHTTP2_CONNECT_ERROR]: 'the connection to the target failed',
  [h2.NGHTTP2_REFUSED_STREAM]: 'the gateway refused the stream',
  [h2.NGHTTP2_ENHANCE_YOUR_CALM]:
    "the session reached its rule's byte limit (CIPORT_E_BYTE_LIMIT): its connections are cut and new ones refused",
  [h2.NGHTTP2_INTERNAL_ERROR]: 'the gateway failed, or the agent carrying the connection went away',
};

/**
 * Reset a stream with `code` (RST_STREAM). Node 20's `close(code)` emits 'aborted'
 * synchronously while the writable side is open; `stream.pipeline` destroys the stream in that
 * handler and the RST_STREAM frame is then never sent, so the peer would keep its end open.
 * Detaching those listeners first lets the frame go out; pipeline still sees 'close'.
 */
export function resetStream(stream: ClientHttp2Stream, code: number = h2.NGHTTP2_CANCEL): void {
  if (stream.closed || stream.destroyed) return;
  stream.removeAllListeners('aborted');
  stream.close(code);
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export class TargetListener {
  readonly target: string;
  readonly #server: Server;
  readonly #options: ListenerOptions;
  readonly #sockets = new Set<Socket>();
  readonly #streams = new Set<ClientHttp2Stream>();
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
  /** Totals over closed connections; `refused`: closed by the peer check or the redis gate. */
  readonly totals = { connections: 0, sent: 0, received: 0, refused: 0 };

  private constructor(server: Server, options: ListenerOptions) {
    this.#server = server;
    this.#options = options;
    this.target = options.target;
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
    return this.#sockets.size;
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
    this.#sockets.add(socket);
    socket.on('error', () => {});
    const peer = { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort };
    checkPeer(socket).then(
      (verdict) => {
        if (verdict.ok) {
          if (socket.destroyed) this.#sockets.delete(socket);
          else if (!this.#closing) this.#dispatch(socket);
          return;
        }
        this.#refuse(socket, `from ${peer.remoteAddress}:${peer.remotePort}: ${verdict.reason}`);
      },
      (err: unknown) => this.#refuse(socket, `peer check failed: ${(err as Error).message}`),
    );
  }

  /** Close a connection that may not use the port: one line (at most one per 10 s), counted. */
  #refuse(socket: Socket, why: string): void {
    this.#sockets.delete(socket);
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
    if (this.#options.postgres) this.#acceptPg(socket, this.#options.postgres);
    else if (this.#options.mysql) this.#acceptMysql(socket, this.#options.mysql);
    else if (this.#options.redis) this.#acceptRedis(socket, this.#options.redis);
    else this.#relay(socket);
  }

  /** protocol redis: the one-time password first (redis/client.ts), then the plain relay. */
  #acceptRedis(socket: Socket, cred: { password: string }): void {
    this.#sockets.add(socket);
    socket.on('error', () => {});
    socket.setNoDelay(true);
    authenticateRedisClient(socket, {
      password: cred.password,
      timeoutMs: this.#options.redisAuthTimeoutMs,
    }).then(
      (auth) => {
        if (socket.destroyed || this.#closing) {
          this.#sockets.delete(socket);
          socket.destroy();
          return;
        }
        this.#relay(socket, auth.reply);
      },
      (err: unknown) => {
        this.#sockets.delete(socket);
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

  /** Raw relay; `greeting` goes to the application once the tunnel is open (redis `+OK`). */
  #relay(socket: Socket, greeting?: Buffer): void {
    const id = this.#nextId++;
    const started = Date.now();
    const { log, target } = this.#options;
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    let stream: ClientHttp2Stream | undefined;
    let done = false;
    let upDone = false;
    let downDone = false;
    // The app may go away while the tunnel is being opened.
    let appGone = false;
    const onEarlyClose = () => {
      appGone = true;
    };
    socket.once('close', onEarlyClose);
    socket.on('error', () => {});
    const peer = `${socket.remotePort ?? '?'}`;

    /** `farSide`: the gateway or the target's exit cut it (worth a line even when not verbose). */
    const finish = (error?: string, farSide = false) => {
      if (done) return;
      done = true;
      this.#sockets.delete(socket);
      if (stream) this.#streams.delete(stream);
      const stats: ConnectionStats = {
        id,
        target,
        sent: socket.bytesRead,
        received: socket.bytesWritten,
        ms: Date.now() - started,
        error,
      };
      this.totals.connections += 1;
      this.totals.sent += stats.sent;
      this.totals.received += stats.received;
      if (log.verbose) {
        const what = `sent ${formatBytes(stats.sent)}, received ${formatBytes(stats.received)}, ${(stats.ms / 1000).toFixed(2)} s`;
        log.info(`${target}: connection ${id} closed (${what})${error ? `: ${error}` : ''}`);
      } else if (error && farSide && !this.#closing && this.#quietFor(error)) {
        // Quiet on success, but an app's connection cut from the far side is worth one line.
        log.warn(`${target}: connection ${id} closed: ${error}`);
      }
    };

    const abort = (reason: string, farSide = false) => {
      if (stream) resetStream(stream);
      // An abnormal end reaches the app as a reset, not as a clean end of data.
      if (!socket.destroyed) {
        if (typeof socket.resetAndDestroy === 'function' && socket.readyState !== 'opening') {
          try {
            socket.resetAndDestroy();
          } catch {
            socket.destroy();
          }
        } else socket.destroy();
      }
      finish(reason, farSide);
    };

    if (log.verbose) log.info(`${target}: connection ${id} opened (from 127.0.0.1:${peer})`);
    this.#options.open(target).then(
      (s) => {
        stream = s;
        socket.off('close', onEarlyClose);
        if (appGone || this.#closing) {
          resetStream(s);
          finish(this.#closing ? 'listener closed' : 'the application closed the connection first');
          return;
        }
        this.#streams.add(s);
        if (greeting && greeting.length > 0) socket.write(greeting);
        const streamError = (): string => {
          if (this.#closing) return 'the port closed';
          const code = s.rstCode;
          if (code !== undefined && code !== h2.NGHTTP2_NO_ERROR) {
            return RST_REASONS[code] ?? `the gateway reset the stream (HTTP/2 error ${code})`;
          }
          return 'the tunnel stream ended abruptly';
        };
        const bothDone = () => {
          if (upDone && downDone) {
            socket.destroy();
            finish();
          }
        };
        pipeline(socket, s, (err) => {
          if (err) {
            const reset = Boolean(s.rstCode) && !this.#closing;
            const reason = reset || this.#closing ? streamError() : `application socket: ${err.message}`;
            if (reset) this.#options.onTrouble?.(undefined, undefined);
            abort(reason, reset);
            return;
          }
          upDone = true;
          bothDone();
        });
        const downstream = pipelineAsync(s, socket, { end: false });
        downstream.then(undefined, () => {
          const reason = streamError();
          const reset = Boolean(s.rstCode) && !this.#closing;
          if (reset) this.#options.onTrouble?.(undefined, undefined);
          abort(reason, reset);
        });
        downstream.then(
          () => {
            // Node sends END_STREAM before RST_STREAM when the gateway resets a stream whose
            // writable side is open: this end may be the first half of a reset. Look again once
            // the frames that came with it are processed, so the app gets a reset, not a clean FIN.
            setImmediate(() => {
              if (done) return;
              if (s.rstCode && s.rstCode !== h2.NGHTTP2_NO_ERROR && !this.#closing) {
                this.#options.onTrouble?.(undefined, undefined);
                abort(streamError(), true);
                return;
              }
              socket.end();
              downDone = true;
              bothDone();
            });
          },
          () => {},
        );
        s.on('close', () => {
          // Reset by the gateway after both halves ended normally: nothing left to do.
          if (!done && s.rstCode && s.rstCode !== h2.NGHTTP2_NO_ERROR) {
            if (!this.#closing) this.#options.onTrouble?.(undefined, undefined);
            abort(streamError(), true);
          }
        });
      },
      (err: unknown) => {
        socket.off('close', onEarlyClose);
        const refused = err instanceof TunnelRefused ? err : undefined;
        const reason = refused
          ? `refused by the gateway (${refused.status || 'no status'}${refused.code ? ` ${refused.code}` : ''}): ${refused.message}`
          : `cannot open a tunnel: ${(err as Error).message}`;
        const key = refused ? `${refused.status} ${refused.code ?? ''}` : 'unreachable';
        if (!log.verbose && !this.#warned.has(key) && !this.#closing) {
          this.#warned.add(key);
          log.warn(`${target}: connection ${reason}`);
        }
        this.#options.onTrouble?.(refused?.status, refused?.code);
        abort(reason);
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
    const id = this.#nextId++;
    const started = Date.now();
    const { log, target } = this.#options;
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('error', () => {});
    let stream: ClientHttp2Stream | undefined;
    serve(async () => {
      try {
        stream = await this.#options.open(target);
      } catch (err) {
        const refused = err instanceof TunnelRefused ? err : undefined;
        const key = refused ? `${refused.status} ${refused.code ?? ''}` : 'unreachable';
        if (!this.#warned.has(key) && !this.#closing) {
          this.#warned.add(key);
          log.warn(`${target}: connection refused: ${(err as Error).message}`);
        }
        this.#options.onTrouble?.(refused?.status, refused?.code);
        // As a CiportError with the gateway's code, so the application reads that code (a
        // plain Error would reach it as CIPORT_E_INTERNAL).
        throw refused ? new GatewayError(refused.status, refused.code, refused.message) : err;
      }
      if (this.#closing) {
        resetStream(stream);
        throw new Error('the port closed');
      }
      this.#streams.add(stream);
      return stream;
    }).then(
      (error) => {
        if (stream?.rstCode && stream.rstCode !== h2.NGHTTP2_NO_ERROR && !this.#closing) {
          this.#options.onTrouble?.(undefined, undefined);
          const why = RST_REASONS[stream.rstCode];
          if (stream.rstCode === h2.NGHTTP2_ENHANCE_YOUR_CALM && why && this.#quietFor(why)) {
            log.warn(`${target}: connection ${id} closed: ${why}`);
          }
        }
        finish(error?.message);
      },
      (err: unknown) => finish((err as Error).message),
    );
    const finish = (error?: string) => {
      this.#sockets.delete(socket);
      if (stream) {
        this.#streams.delete(stream);
        resetStream(stream);
      }
      socket.destroy();
      this.totals.connections += 1;
      this.totals.sent += socket.bytesRead;
      this.totals.received += socket.bytesWritten;
      if (log.verbose) {
        const what = `sent ${formatBytes(socket.bytesRead)}, received ${formatBytes(socket.bytesWritten)}, ${((Date.now() - started) / 1000).toFixed(2)} s`;
        log.info(`${target}: connection ${id} closed (${what})${error ? `: ${error}` : ''}`);
      }
    };
  }

  /** Stop accepting and cut every connection (the app sees its sockets close). */
  close(): Promise<void> {
    this.#closing = true;
    for (const s of this.#streams) resetStream(s);
    for (const socket of this.#sockets) socket.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
