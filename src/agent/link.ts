// One gateway link of the agent: dial out (TLS, ALPN http/1.1), `GET /v1/agents/connect` with
// `Upgrade: ciport-agent` and the agent credential, then serve reverse HTTP/2 on the socket
// (the agent is the HTTP/2 server). Reconnects with jittered exponential backoff until closed.
// The agent keeps one link per gateway it knows (the configured one plus those discovered).
import { EventEmitter } from 'node:events';
import {
  type IncomingHttpHeaders,
  performServerHandshake,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { isIP, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { ErrorCode } from '../errors/codes.js';
import { asCiportError, CiportError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { AGENT_CONNECT_PATH, AGENT_UPGRADE_PROTOCOL } from '../transport/wire.js';
import { CIPORT_VERSION } from '../version.js';
import type { StoredCredential } from './credential.js';

export const AGENT_VERSION = CIPORT_VERSION;

export interface BackoffOptions {
  /** First retry delay (default 200 ms); each failure multiplies it by `factor` (1.6)… */
  baseMs?: number;
  factor?: number;
  /** …up to this (default 3 000 ms, so a restarted gateway has its agents back within ~3 s). */
  maxMs?: number;
  /** Delay after the gateway refused the credential (default 30 000 ms). */
  refusedMs?: number;
}

/** Jittered exponential backoff: a delay in [d/2, d] where d = min(max, base·factor^attempt). */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random = Math.random): number {
  const base = options.baseMs ?? 200;
  const d = Math.min(options.maxMs ?? 3_000, base * (options.factor ?? 1.6) ** attempt);
  return Math.round(d / 2 + (random() * d) / 2);
}

export interface GatewayLinkOptions {
  url: string;
  /**
   * The credential to present; a function is asked on every connection attempt, so a rotated
   * credential is used from the next connect on (live connections keep going).
   */
  credential: StoredCredential | (() => StoredCredential);
  ca: string | undefined;
  connectTimeoutMs: number;
  log?: Logger | undefined;
  backoff?: BackoffOptions | undefined;
  pingIntervalMs?: number | undefined;
  pingTimeoutMs?: number | undefined;
  /** Every stream the gateway opens on this link. */
  onStream: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, link: GatewayLink) => void;
}

export interface GatewayLinkEvents {
  connected: [{ attempt: number; url: string }];
  disconnected: [{ reason: string; url: string }];
  /** A connection attempt failed (before the reverse HTTP/2 session existed). */
  failed: [CiportError];
}

export class GatewayLink extends EventEmitter<GatewayLinkEvents> {
  readonly url: string;
  /** The gateway instance on the other end, once it said (`POST /v1/gateways`). */
  gatewayId: string | undefined;
  readonly #opt: GatewayLinkOptions;
  #session: ServerHttp2Session | undefined;
  #socket: TLSSocket | undefined;
  #closed = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** Waiting out the long delay after the gateway refused the credential. */
  #refusedWait = false;

  constructor(options: GatewayLinkOptions) {
    super();
    this.url = options.url;
    this.#opt = options;
  }

  get connected(): boolean {
    return Boolean(this.#session && !this.#session.closed && !this.#session.destroyed);
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** The credential the next connection attempt presents. */
  get credential(): StoredCredential {
    const c = this.#opt.credential;
    return typeof c === 'function' ? c() : c;
  }

  /**
   * The credential changed (rotated): a link waiting after a refusal retries now instead of in
   * `refusedMs`. Does nothing to a live connection or an ordinary backoff.
   */
  credentialChanged(): void {
    if (this.#refusedWait) this.#wake?.();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    const session = this.#session;
    if (session && !session.destroyed) {
      await new Promise<void>((resolve) => {
        session.once('close', () => resolve());
        session.close();
        setTimeout(() => session.destroy(), 1_000).unref();
      });
    }
    this.#socket?.destroy();
    await this.#loop;
  }

  async #run(): Promise<void> {
    let attempt = 0;
    while (!this.#closed) {
      let refused = false;
      try {
        await this.#connectOnce(() => {
          attempt = 0;
        });
      } catch (thrown) {
        const err = asCiportError(thrown);
        refused = err.code === 'CIPORT_E_AGENT_UNAUTHORIZED';
        if (!this.#closed) {
          this.#opt.log?.warn({ code: err.code, err: err.message }, 'connection to the gateway failed');
          this.emit('failed', err);
        }
      }
      if (this.#closed) break;
      const b = this.#opt.backoff ?? {};
      const delay = refused ? (b.refusedMs ?? 30_000) : backoffDelay(attempt, b);
      attempt++;
      this.#refusedWait = refused;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = undefined;
      this.#refusedWait = false;
    }
  }

  /**
   * One connection: TLS, upgrade, reverse HTTP/2. Resolves when an established session ends;
   * rejects when it could not be established. `onUp` runs once the session is up.
   */
  async #connectOnce(onUp: () => void): Promise<void> {
    const cred = this.credential;
    const url = new URL(this.url);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(url.port || 443);
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(host) ? {} : { servername: host }),
      ...(this.#opt.ca ? { ca: this.#opt.ca } : {}),
      ALPNProtocols: ['http/1.1'],
      minVersion: 'TLSv1.2',
    });
    // Small round trips (queries) ride this link: no Nagle delay (the gateway's end does the same).
    socket.setNoDelay(true);
    this.#socket = socket;
    const leftover = await new Promise<Buffer>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => fail(new Error('no answer in time')), this.#opt.connectTimeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        socket.off('data', onData);
        socket.destroy();
        reject(
          err instanceof CiportError
            ? err
            : new CiportError(
                (err as NodeJS.ErrnoException).code?.startsWith('ERR_TLS') || /certificate/i.test(err.message)
                  ? 'CIPORT_E_TLS'
                  : 'CIPORT_E_GATEWAY_UNREACHABLE',
                `gateway ${url.host}: ${err.message}`,
              ),
        );
      };
      const onData = (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (buf.length > 16_384) fail(new Error('oversized upgrade answer'));
          return;
        }
        const head = buf.subarray(0, end).toString('latin1');
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
        if (status !== 101) {
          const code = /\r\nciport-error: *([A-Z_]+)/i.exec(head)?.[1] as ErrorCode | undefined;
          const why = refusalMessage(head, buf.subarray(end + 4));
          fail(
            code === 'CIPORT_E_AGENT_UNAUTHORIZED' || status === 401
              ? new CiportError(
                  'CIPORT_E_AGENT_UNAUTHORIZED',
                  `gateway refused agent ${cred.name}'s credential${why ? ` (${why})` : ''}`,
                  // Which credential: a refusal of one already replaced is stale (agent.ts).
                  { details: { agent: cred.id } },
                )
              : new CiportError(
                  'CIPORT_E_GATEWAY_RESPONSE',
                  `gateway answered ${status || 'garbage'} to the agent upgrade`,
                ),
          );
          return;
        }
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('error', fail);
        socket.pause();
        resolve(buf.subarray(end + 4));
      };
      socket.on('data', onData);
      socket.once('error', fail);
      socket.once('close', () => fail(new Error('connection closed')));
      socket.once('secureConnect', () => {
        socket.write(
          `GET ${AGENT_CONNECT_PATH} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: Upgrade\r\n` +
            `Upgrade: ${AGENT_UPGRADE_PROTOCOL}\r\nAuthorization: Bearer ${cred.credential}\r\n` +
            `User-Agent: ciport-agent/${AGENT_VERSION}\r\n\r\n`,
        );
      });
    });
    socket.removeAllListeners('close');
    socket.on('error', () => {});

    // Bytes that arrived with (or right after) the 101 are HTTP/2 already; a native session reads
    // only from the socket's handle, so then a JS stream wrapper feeds them first.
    const buffered = socket.readableLength > 0 ? (socket.read() as Buffer | null) : null;
    const early = buffered ? Buffer.concat([leftover, buffered]) : leftover;
    const transport = early.length > 0 ? prefixed(socket, early) : socket;
    const session = performServerHandshake(
      transport as Socket,
      {
        settings: { enablePush: false, initialWindowSize: 1 << 20 },
        maxSessionMemory: 64,
      } as Parameters<typeof performServerHandshake>[1],
    );
    if (transport === socket) socket.resume();
    this.#session = session;
    session.on('error', () => {});
    session.on('stream', (stream, headers) => this.#opt.onStream(stream, headers, this));
    try {
      session.setLocalWindowSize(16 << 20);
    } catch {
      // gone
    }
    onUp();
    this.#opt.log?.info({ gateway: url.host, agent: cred.id }, 'connected to the gateway');
    this.emit('connected', { attempt: 0, url: this.url });
    const reason = await this.#untilClosed(session, socket);
    this.#session = undefined;
    this.#opt.log?.info({ reason }, 'disconnected from the gateway');
    this.emit('disconnected', { reason, url: this.url });
  }

  #untilClosed(session: ServerHttp2Session, socket: TLSSocket): Promise<string> {
    return new Promise((resolve) => {
      let reason = 'connection lost';
      let outstanding: NodeJS.Timeout | undefined;
      const interval = setInterval(() => {
        if (outstanding) return;
        outstanding = setTimeout(() => {
          reason = 'keepalive timeout';
          session.destroy();
          socket.destroy();
        }, this.#opt.pingTimeoutMs ?? 9_000);
        try {
          session.ping((err) => {
            if (err) return;
            clearTimeout(outstanding);
            outstanding = undefined;
          });
        } catch {
          session.destroy();
        }
      }, this.#opt.pingIntervalMs ?? 5_000);
      session.once('goaway', () => {
        reason = 'gateway closed the connection';
      });
      session.once('close', () => {
        clearInterval(interval);
        clearTimeout(outstanding);
        socket.destroy();
        resolve(this.#closed ? 'agent stopped' : reason);
      });
    });
  }
}

/**
 * The `error.message` of a refusal's JSON body when it arrived with the head (e.g. "agent
 * credential expired at …"), cut to 200 characters; undefined otherwise.
 */
function refusalMessage(head: string, rest: Buffer): string | undefined {
  const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? -1);
  if (length <= 0 || rest.length < length) return undefined;
  try {
    const body = JSON.parse(rest.subarray(0, length).toString('utf8')) as { error?: { message?: unknown } };
    const message = body.error?.message;
    return typeof message === 'string' ? message.slice(0, 200) : undefined;
  } catch {
    return undefined;
  }
}

/** A JS duplex over `socket` that first yields `first` (bytes read before HTTP/2 took over). */
function prefixed(socket: TLSSocket, first: Buffer): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  d.push(first);
  socket.on('data', (c: Buffer) => {
    if (!d.push(c)) socket.pause();
  });
  socket.once('end', () => d.push(null));
  socket.once('close', () => d.destroy());
  socket.resume();
  return d;
}

/** `ciport agent`: load the credential (registering if needed) and start serving. */
