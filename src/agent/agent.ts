// `ciport agent`: dials out to the gateway, upgrades the TLS connection to reverse HTTP/2 (the
// agent is the HTTP/2 *server*), advertises its targets and serves each CONNECT stream the
// gateway opens by dialing the target. Reconnects with jittered exponential backoff.
// docs/agent.md is the contract.
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import {
  constants as h2,
  type IncomingHttpHeaders,
  performServerHandshake,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { isIP, type Socket } from 'node:net';
import { Duplex, pipeline } from 'node:stream';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { TargetConfig } from '../config/schema.js';
import type { ErrorCode } from '../errors/codes.js';
import { asCiportError, CiportError } from '../errors/index.js';
import { AGENT_CONNECT_PATH, AGENT_TARGETS_PATH, AGENT_UPGRADE_PROTOCOL } from '../gateway/agent-hub.js';
import type { Logger } from '../gateway/logger.js';
import { dialTcp } from '../protocols/tcp/exit.js';
import { resetStream } from '../transport/h2.js';
import { type AgentConfig, resolveEnrollmentToken } from './config.js';
import { readCredential, registerAgent, type StoredCredential, writeCredential } from './credential.js';

export const AGENT_VERSION = '0.1.0';

/** Protocols the agent relays byte for byte (no credential injection on the agent yet). */
const RAW_PROTOCOLS = new Set(['tcp', 'redis', 'mysql']);

export interface BackoffOptions {
  /** First retry delay (default 200 ms); each failure multiplies it by `factor` (1.6)… */
  baseMs?: number;
  factor?: number;
  /** …up to this (default 3 000 ms, so a restarted gateway has its agents back within ~3 s). */
  maxMs?: number;
  /** Delay after the gateway refused the credential (default 30 000 ms). */
  refusedMs?: number;
}

export interface AgentOptions {
  log?: Logger | undefined;
  /** CA PEM (default: read from `ca_file`). */
  ca?: string | undefined;
  env?: NodeJS.ProcessEnv;
  backoff?: BackoffOptions;
  /** Ping the gateway this often (default 5 000 ms); no answer in `pingTimeoutMs` (9 000) = dead. */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
}

export interface AgentEvents {
  connected: [{ attempt: number }];
  disconnected: [{ reason: string }];
  /** A connection attempt failed (before the reverse HTTP/2 session existed). */
  failed: [CiportError];
}

/** Jittered exponential backoff: a delay in [d/2, d] where d = min(max, base·factor^attempt). */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random = Math.random): number {
  const base = options.baseMs ?? 200;
  const d = Math.min(options.maxMs ?? 3_000, base * (options.factor ?? 1.6) ** attempt);
  return Math.round(d / 2 + (random() * d) / 2);
}

/** `staging-db:443` → `staging-db` (as the gateway's tunnel does). */
function targetOfAuthority(authority: string | undefined): string | undefined {
  if (!authority) return undefined;
  const host = authority.startsWith('[')
    ? authority.slice(1, authority.indexOf(']'))
    : authority.split(':')[0];
  return host ? host.toLowerCase() : undefined;
}

export class Agent extends EventEmitter<AgentEvents> {
  readonly config: AgentConfig;
  readonly #opt: AgentOptions;
  readonly #targets: Map<string, TargetConfig>;
  readonly #ca: string | undefined;
  #credential: StoredCredential | undefined;
  #session: ServerHttp2Session | undefined;
  #socket: TLSSocket | undefined;
  #closed = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  readonly #upstreams = new Set<Socket>();
  /** CONNECT streams being served now. */
  streams = 0;

  constructor(config: AgentConfig, options: AgentOptions = {}) {
    super();
    this.config = config;
    this.#opt = options;
    this.#targets = new Map(config.targets.map((t) => [t.name, t]));
    this.#ca = options.ca ?? (config.ca_file ? readFileSync(config.ca_file, 'utf8') : undefined);
  }

  get connected(): boolean {
    return Boolean(this.#session && !this.#session.closed && !this.#session.destroyed);
  }

  get agentId(): string | undefined {
    return this.#credential?.id;
  }

  /** The targets this agent advertises (those it can serve). */
  advertised(): Array<{ name: string; protocol: string }> {
    return this.config.targets
      .filter((t) => RAW_PROTOCOLS.has(t.protocol))
      .map((t) => ({ name: t.name, protocol: t.protocol }));
  }

  /** Load the credential, registering with the enrollment token when there is none yet. */
  async ensureCredential(): Promise<StoredCredential> {
    this.#credential ??= readCredential(this.config.data_dir);
    if (this.#credential) return this.#credential;
    const token = resolveEnrollmentToken(this.config, this.#opt.env);
    let cred: StoredCredential;
    // The gateway may not be up yet: retry while it is unreachable; a refused token is final.
    for (let attempt = 0; ; attempt++) {
      try {
        cred = await registerAgent(this.config.gateway, token, { ca: this.#ca });
        break;
      } catch (thrown) {
        const err = asCiportError(thrown);
        if (err.code !== 'CIPORT_E_GATEWAY_UNREACHABLE' || this.#closed) throw err;
        this.#opt.log?.warn({ err: err.message }, 'registration: gateway unreachable, retrying');
        await new Promise((r) => setTimeout(r, backoffDelay(attempt, this.#opt.backoff)));
      }
    }
    writeCredential(this.config.data_dir, cred);
    this.#opt.log?.info({ agent: cred.id, name: cred.name }, 'agent registered with the gateway');
    this.#credential = cred;
    return cred;
  }

  /** Register if needed, then keep a connection to the gateway until close(). */
  async start(): Promise<void> {
    await this.ensureCredential();
    for (const t of this.config.targets) {
      if (!RAW_PROTOCOLS.has(t.protocol)) {
        this.#opt.log?.warn(
          { target: t.name, protocol: t.protocol },
          'protocol not served by the agent yet: not advertised',
        );
      }
    }
    this.#loop ??= this.#run();
  }

  /** Resolves once connected (rejects after `timeoutMs`). */
  waitConnected(timeoutMs = 10_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('connected', on);
        reject(new Error('agent not connected in time'));
      }, timeoutMs);
      const on = () => {
        clearTimeout(t);
        resolve();
      };
      this.once('connected', on);
    });
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
    for (const u of this.#upstreams) u.destroy();
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
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /**
   * One connection: TLS, upgrade, reverse HTTP/2. Resolves when an established session ends;
   * rejects when it could not be established. `onUp` runs once the session is up.
   */
  async #connectOnce(onUp: () => void): Promise<void> {
    const cred = this.#credential as StoredCredential;
    const url = new URL(this.config.gateway);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(url.port || 443);
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(host) ? {} : { servername: host }),
      ...(this.#ca ? { ca: this.#ca } : {}),
      ALPNProtocols: ['http/1.1'],
      minVersion: 'TLSv1.2',
    });
    this.#socket = socket;
    const leftover = await new Promise<Buffer>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => fail(new Error('no answer in time')), this.config.connect_timeout);
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
          fail(
            code === 'CIPORT_E_AGENT_UNAUTHORIZED' || status === 401
              ? new CiportError(
                  'CIPORT_E_AGENT_UNAUTHORIZED',
                  `gateway refused agent ${cred.name}'s credential`,
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
    session.on('stream', (stream, headers) => this.#serve(stream, headers));
    try {
      session.setLocalWindowSize(16 << 20);
    } catch {
      // gone
    }
    onUp();
    this.#opt.log?.info({ gateway: url.host, agent: cred.id }, 'connected to the gateway');
    this.emit('connected', { attempt: 0 });
    const reason = await this.#untilClosed(session, socket);
    this.#session = undefined;
    this.#opt.log?.info({ reason }, 'disconnected from the gateway');
    this.emit('disconnected', { reason });
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

  #serve(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => {});
    const method = headers[':method'];
    if (method === 'GET' && headers[':path'] === AGENT_TARGETS_PATH) {
      const body = JSON.stringify({
        name: this.config.name,
        version: AGENT_VERSION,
        targets: this.advertised(),
      });
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(body);
      return;
    }
    if (method !== 'CONNECT') {
      refuse(stream, new CiportError('CIPORT_E_NOT_FOUND', 'agents serve CONNECT and GET /v1/targets'));
      return;
    }
    const name = targetOfAuthority(headers[':authority']);
    const target = name ? this.#targets.get(name) : undefined;
    if (!target) {
      refuse(
        stream,
        new CiportError('CIPORT_E_TARGET_UNKNOWN', `agent ${this.config.name} serves no target ${name}`),
      );
      return;
    }
    if (!RAW_PROTOCOLS.has(target.protocol)) {
      refuse(
        stream,
        new CiportError(
          'CIPORT_E_PROTOCOL_NOT_IMPLEMENTED',
          `agent ${this.config.name}: protocol ${target.protocol} is not served by agents yet`,
        ),
      );
      return;
    }
    void this.#relay(stream, target);
  }

  async #relay(stream: ServerHttp2Stream, target: TargetConfig): Promise<void> {
    const abort = new AbortController();
    const onEarlyClose = () => abort.abort();
    stream.once('close', onEarlyClose);
    this.streams++;
    let upstream: Socket;
    try {
      upstream = await dialTcp(target.address, {
        timeoutMs: this.config.connect_timeout,
        signal: abort.signal,
      });
    } catch (thrown) {
      stream.off('close', onEarlyClose);
      this.streams--;
      const err = asCiportError(thrown);
      this.#opt.log?.warn({ target: target.name, err: err.message }, 'target unreachable from the agent');
      refuse(
        stream,
        new CiportError(
          'CIPORT_E_UPSTREAM_UNREACHABLE',
          `target ${target.name} is unreachable from agent ${this.config.name}`,
        ),
      );
      return;
    }
    stream.off('close', onEarlyClose);
    if (stream.destroyed || stream.closed) {
      upstream.destroy();
      this.streams--;
      return;
    }
    this.#upstreams.add(upstream);
    stream.setMaxListeners(32);
    stream.respond({ ':status': 200 });
    upstream.on('error', () => resetStream(stream, h2.NGHTTP2_CONNECT_ERROR));
    pipeline(stream, upstream, () => {});
    pipeline(upstream, stream, () => {});
    stream.once('close', () => {
      upstream.destroy();
      this.#upstreams.delete(upstream);
      this.streams--;
    });
    upstream.resume();
  }
}

function refuse(stream: ServerHttp2Stream, err: CiportError): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  const body = JSON.stringify({ error: err.toJSON() });
  stream.respond({ ':status': err.httpStatus, 'content-type': 'application/json', 'ciport-error': err.code });
  stream.end(body);
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
export async function startAgent(config: AgentConfig, options: AgentOptions = {}): Promise<Agent> {
  const agent = new Agent(config, options);
  await agent.start();
  return agent;
}
