// The client's one HTTP/2 connection to the gateway (docs/protocol.md): the JSON session API
// and every tunnel (CONNECT stream) share it. It reconnects on the next call when the
// connection drops, so heartbeats survive a gateway restart.
import { readFileSync } from 'node:fs';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants as h2,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http2';
import { rootCertificates } from 'node:tls';
import { CiportError } from '../errors/errors.js';
import { GatewayError, GatewayUnreachableError, oneLine, TlsError } from './errors.js';

export interface GatewayTarget {
  /** `--gateway` or `CIPORT_GATEWAY`. */
  gateway?: string | undefined;
  env: NodeJS.ProcessEnv;
}

/** Resolve and check the gateway URL: https only (tokens travel on it). */
export function gatewayUrl(opts: GatewayTarget): URL {
  const text = opts.gateway ?? opts.env.CIPORT_GATEWAY;
  if (!text) {
    throw new CiportError('CIPORT_E_USAGE', 'no gateway: pass --gateway URL or set CIPORT_GATEWAY');
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CiportError('CIPORT_E_USAGE', `gateway URL "${text}" is not a URL`);
  }
  if (url.protocol !== 'https:') {
    throw new CiportError('CIPORT_E_USAGE', `gateway URL must be https:// (got ${url.protocol}//)`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new CiportError('CIPORT_E_USAGE', 'gateway URL must not carry credentials, a query or a fragment');
  }
  return url;
}

/** System CAs plus the PEM file in `CIPORT_CA_FILE`, if set. */
export function trustedCas(env: NodeJS.ProcessEnv): string[] | undefined {
  const file = env.CIPORT_CA_FILE;
  if (!file) return undefined;
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new CiportError('CIPORT_E_CONFIG_UNREADABLE', `CIPORT_CA_FILE ${file}: cannot read (${reason})`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new CiportError('CIPORT_E_CONFIG_INVALID', `CIPORT_CA_FILE ${file}: no PEM certificate in it`);
  }
  return [...rootCertificates, pem];
}

export interface ApiResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: unknown;
}

export interface RequestOptions {
  /** Bearer credential; never logged. */
  bearer?: string | undefined;
  body?: unknown;
  timeoutMs?: number;
  /** Abort: the stream is cancelled and the request rejects (GatewayUnreachableError). */
  signal?: AbortSignal | undefined;
}

/** A tunnel the gateway refused (`ciport-error` header and status). */
export class TunnelRefused extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

const TLS_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'EPROTO',
]);

function isTlsFailure(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return (
    TLS_CODES.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_') || /CERT/.test(code)
  );
}

const MAX_BODY = 1 << 20;

export interface GatewayClientOptions {
  url: URL;
  ca?: string[] | undefined;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Largest answer body read (default 1 MiB); admin reports (`ciport review`) need more. */
  maxResponseBytes?: number;
}

export class GatewayClient {
  readonly url: URL;
  readonly #ca: string[] | undefined;
  readonly #connectTimeoutMs: number;
  readonly #requestTimeoutMs: number;
  readonly #maxResponseBytes: number;
  #session: ClientHttp2Session | undefined;
  /** Every connection still open, including ones retired by GOAWAY that carry live tunnels. */
  readonly #all = new Set<ClientHttp2Session>();
  #connecting: Promise<ClientHttp2Session> | undefined;
  #closed = false;

  constructor(options: GatewayClientOptions) {
    this.url = options.url;
    this.#ca = options.ca;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#maxResponseBytes = options.maxResponseBytes ?? MAX_BODY;
  }

  /** `host:port` for messages. */
  get where(): string {
    return this.url.host;
  }

  /** The live HTTP/2 session, connecting (again) when there is none. */
  connect(): Promise<ClientHttp2Session> {
    if (this.#closed) return Promise.reject(new GatewayUnreachableError('gateway connection closed'));
    const live = this.#session;
    if (live && !live.closed && !live.destroyed) return Promise.resolve(live);
    this.#connecting ??= this.#dial().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  #dial(): Promise<ClientHttp2Session> {
    return new Promise((resolve, reject) => {
      const session = connect(this.url.origin, {
        ...(this.#ca ? { ca: this.#ca } : {}),
        // Explicit, so that NODE_TLS_REJECT_UNAUTHORIZED=0 in a job's environment (set for its own
        // self-signed services) never sends the ID token to a gateway nobody vouched for.
        rejectUnauthorized: true,
        ALPNProtocols: ['h2'],
        // Bulk tunnels: a larger per-stream window than HTTP/2's 64 KiB default.
        settings: { initialWindowSize: 1 << 20, enablePush: false },
      });
      const timer = setTimeout(() => {
        session.destroy();
        reject(
          new GatewayUnreachableError(
            `cannot reach gateway ${this.where}: no TLS connection within ${this.#connectTimeoutMs} ms`,
          ),
        );
      }, this.#connectTimeoutMs);
      const onError = (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(this.#connectError(err));
      };
      session.once('error', onError);
      session.once('connect', (_session, socket: { setNoDelay?: (on: boolean) => unknown }) => {
        clearTimeout(timer);
        // Nagle off: a tunnel's small writes (a query, its answer) go out at once instead of
        // waiting for the previous segment's ACK (docs/performance.md, "Carrier"). The socket
        // is the real one here (session.socket is a proxy that refuses setNoDelay).
        socket.setNoDelay?.(true);
        session.off('error', onError);
        const alpn = (session.socket as { alpnProtocol?: string | false } | undefined)?.alpnProtocol;
        if (alpn !== undefined && alpn !== 'h2') {
          session.destroy();
          reject(new TlsError(`gateway ${this.where} did not negotiate HTTP/2 (ALPN h2)`));
          return;
        }
        // Errors after connect end the session; the next call reconnects.
        session.on('error', () => {});
        this.#all.add(session);
        session.on('close', () => {
          this.#all.delete(session);
          if (this.#session === session) this.#session = undefined;
        });
        session.on('goaway', () => {
          if (this.#session === session) this.#session = undefined;
        });
        try {
          session.setLocalWindowSize(16 << 20);
        } catch {
          // best effort
        }
        this.#session = session;
        resolve(session);
      });
    });
  }

  #connectError(err: NodeJS.ErrnoException): CiportError {
    if (isTlsFailure(err)) {
      const hint =
        /SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY|CERT_UNTRUSTED/.test(err.code ?? '') && !this.#ca
          ? " (set CIPORT_CA_FILE to the gateway's CA certificate)"
          : '';
      return new TlsError(`TLS handshake with gateway ${this.where} failed: ${err.message}${hint}`, {
        cause: err,
      });
    }
    return new GatewayUnreachableError(`cannot reach gateway ${this.where}: ${err.message}`, { cause: err });
  }

  /** The base path the gateway is served under, without a trailing slash. */
  #path(path: string): string {
    return `${this.url.pathname.replace(/\/+$/, '')}${path}`;
  }

  /** One JSON request; resolves with any status (callers map errors), rejects when unreachable. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<ApiResponse> {
    const session = await this.connect();
    const headers: OutgoingHttpHeaders = {
      [h2.HTTP2_HEADER_METHOD]: method,
      [h2.HTTP2_HEADER_PATH]: this.#path(path),
      accept: 'application/json',
      'user-agent': 'ciport-client',
    };
    if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    if (payload) headers['content-type'] = 'application/json';
    const timeoutMs = options.timeoutMs ?? this.#requestTimeoutMs;
    return new Promise<ApiResponse>((resolve, reject) => {
      let stream: ClientHttp2Stream;
      try {
        stream = session.request(headers, { endStream: payload === undefined });
      } catch (err) {
        reject(
          new GatewayUnreachableError(`gateway ${this.where}: ${(err as Error).message}`, { cause: err }),
        );
        return;
      }
      const timer = setTimeout(() => {
        stream.close(h2.NGHTTP2_CANCEL);
        reject(
          new GatewayUnreachableError(
            `gateway ${this.where} did not answer ${method} ${path} in ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      const onAbort = () => {
        clearTimeout(timer);
        stream.close(h2.NGHTTP2_CANCEL);
        reject(new GatewayUnreachableError(`${method} ${path}: cancelled`));
      };
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener('abort', onAbort, { once: true });
      let status = 0;
      let resHeaders: IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('response', (h) => {
        resHeaders = h;
        status = Number(h[h2.HTTP2_HEADER_STATUS]);
      });
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > this.#maxResponseBytes) {
          stream.close(h2.NGHTTP2_CANCEL);
          return;
        }
        chunks.push(chunk);
      });
      stream.on('error', () => {});
      stream.on('close', () => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        if (!status) {
          reject(
            new GatewayUnreachableError(`gateway ${this.where}: the connection closed before an answer`),
          );
          return;
        }
        if (size > this.#maxResponseBytes) {
          reject(new GatewayError(status, undefined, `gateway answer to ${method} ${path} is too large`));
          return;
        }
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          body = undefined;
        }
        resolve({ status, headers: resHeaders, body });
      });
      if (payload) stream.end(payload);
    });
  }

  /**
   * Like request(), but a non-2xx answer throws a GatewayError carrying the gateway's code,
   * message and (for denials) decision.
   */
  async api(method: string, path: string, options: RequestOptions = {}): Promise<ApiResponse> {
    const res = await this.request(method, path, options);
    if (res.status >= 200 && res.status < 300) return res;
    throw errorFromResponse(res, `${method} ${path}`);
  }

  /** Open a tunnel: a CONNECT stream to `target`, resolved once the gateway answered 200. */
  async openTunnel(target: string, sessionId: string, secret: string): Promise<ClientHttp2Stream> {
    const session = await this.connect();
    return new Promise((resolve, reject) => {
      let stream: ClientHttp2Stream;
      try {
        stream = session.request({
          [h2.HTTP2_HEADER_METHOD]: h2.HTTP2_METHOD_CONNECT,
          [h2.HTTP2_HEADER_AUTHORITY]: `${target}:443`,
          authorization: `Bearer ${secret}`,
          'ciport-session': sessionId,
        });
      } catch (err) {
        reject(
          new GatewayUnreachableError(`gateway ${this.where}: ${(err as Error).message}`, { cause: err }),
        );
        return;
      }
      const timer = setTimeout(() => {
        stream.close(h2.NGHTTP2_CANCEL);
        reject(new TunnelRefused(0, undefined, `no answer from the gateway in ${this.#requestTimeoutMs} ms`));
      }, this.#requestTimeoutMs);
      const onClose = () => {
        clearTimeout(timer);
        reject(
          new TunnelRefused(0, undefined, `stream closed before an answer (code ${stream.rstCode ?? '?'})`),
        );
      };
      const onError = () => {};
      stream.on('error', onError);
      stream.once('close', onClose);
      stream.once('response', (headers) => {
        clearTimeout(timer);
        stream.off('close', onClose);
        const status = Number(headers[h2.HTTP2_HEADER_STATUS]);
        if (status === 200) {
          stream.off('error', onError);
          resolve(stream);
          return;
        }
        const code = headerValue(headers['ciport-error']);
        // Read the (small) error body for the message, then let the stream go.
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => {
          if (chunks.length < 16) chunks.push(c);
        });
        const finish = () => {
          let message = `HTTP ${status}`;
          try {
            const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
              error?: { message?: string };
            };
            if (body.error?.message) message = oneLine(body.error.message);
          } catch {
            // not JSON: keep the status
          }
          reject(new TunnelRefused(status, code, message));
        };
        stream.once('close', finish);
        stream.resume();
      });
    });
  }

  /** Close the connection (in-flight tunnels are cut). */
  close(): void {
    this.#closed = true;
    this.#session = undefined;
    for (const s of this.#all) {
      if (s.destroyed) continue;
      s.close();
      // Do not wait for streams that are already being torn down.
      setTimeout(() => s.destroy(), 1000).unref();
    }
  }
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Turn an error answer into a GatewayError (code, message, decision/end_reason details). */
export function errorFromResponse(res: ApiResponse, what: string): GatewayError {
  const body = (res.body ?? {}) as {
    error?: { code?: unknown; message?: unknown; end_reason?: unknown };
    decision?: unknown;
  };
  const code =
    typeof body.error?.code === 'string' ? body.error.code : headerValue(res.headers['ciport-error']);
  const message =
    typeof body.error?.message === 'string' && body.error.message
      ? body.error.message
      : `gateway answered HTTP ${res.status} to ${what}`;
  const details: Record<string, unknown> = {};
  if (body.decision !== undefined) details.decision = body.decision;
  if (typeof body.error?.end_reason === 'string') details.end_reason = body.error.end_reason;
  return new GatewayError(res.status, code, message, details);
}
