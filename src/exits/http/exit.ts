// Protocol `http`, exit side. Each tunnelled app connection (a Duplex: an HTTP/2 CONNECT stream
// in production, any socket in tests) is handed to one `http.Server` per target, which parses
// the app's HTTP/1.1 requests; each request is forwarded to the upstream (HTTP or HTTPS with
// certificate verification) with the client's credentials removed and the target's injected.
//
// Bodies stream both ways with backpressure (pipe/pipeline, never buffered); WebSocket and other
// Upgrade requests are relayed: the upstream's 101 is passed back and the two sockets are piped.
// One `http.request` audit event per request (per upgraded tunnel, when it closes): method, path
// without the query string (query strings carry API keys too often; `includeQuery` opts in),
// status, body bytes each way and duration. No header values, no bodies, no secrets.
//
// Decisions an operator may look for:
// - `Authorization` and `Proxy-Authorization` from the app are always removed (also for targets
//   without credentials): ciport holds that position. A custom injected header is replaced too.
// - Host is the upstream's (`tls.servername` if set, else the address host; port unless default).
//   No Via / X-Forwarded-* is added: the app's address is a runner's loopback.
// - `tls: true` trusts the system CAs; `tls.ca` trusts only that CA. Verification is never off.
// - Only origin-form targets (`/path`) are accepted; CONNECT and TRACE are refused (405
//   CIPORT_E_METHOD_NOT_ALLOWED): an upstream answering TRACE echoes the injected credential.
// - http.Server never sees the connection itself but an Http1Transport (transport.ts): fed an
//   HTTP/2 stream directly, Node 20 sends response heads from freed memory.
// - Expect: 100-continue is relayed, so an upstream refusal arrives before a large body is sent.
// - A GET/HEAD/OPTIONS without body is retried once on a fresh connection when a pooled
//   keep-alive connection turns out closed; nothing else is ever replayed.
// - Request and response trailers are not forwarded; 1xx other than 100/101 are not relayed.
// - `aws_sigv4` targets: each request (upgrade requests too) is signed at the exit (sigv4.ts); the
//   body is buffered to be hashed, up to 8 MiB (413 CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE), except
//   S3 over TLS (UNSIGNED-PAYLOAD, streamed). No AWS credentials: 502
//   CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE.
// - Upstream failures are 502 CIPORT_E_HTTP_UPSTREAM (timeouts included) with
//   `{"error": {"code", "message"}}` and a `ciport-error` header; a failure after the response
//   started cuts the app connection (the only honest signal left).

import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import type { Secret } from '../../config/secret.js';
import { CiportError, type ErrorCode } from '../../errors/index.js';
import { ERROR_HEADER, errorBody } from '../../transport/wire.js';
import { splitHostPort } from '../tcp/exit.js';
import { clientResponseHeaders, headerValue, responseHead, upstreamRequestHeaders } from './headers.js';
import {
  checkHttpInjection,
  type HttpInjection,
  injectedHeader,
  noteUpstreamStatus,
  replacedHeaders,
} from './injection.js';
import { createSigV4Signer, MAX_SIGNED_BODY, type SigV4Signer, signedBodies } from './sigv4.js';
import { Http1Transport } from './transport.js';

/** TLS to the upstream: off, on with the system's CAs, or with a private CA and/or SNI name. */
export type HttpUpstreamTls =
  | boolean
  | { ca?: Secret | string | undefined; servername?: string | undefined }
  | undefined;

/** What the exit needs to know about an `http` target. */
export interface HttpExitTarget {
  readonly name: string;
  /** Upstream `host:port` (`[v6]:port`). */
  readonly address: string;
  readonly tls?: HttpUpstreamTls;
  readonly injection: HttpInjection;
}

/** One proxied request (or one upgraded tunnel, reported when it closes). */
export interface HttpRequestEvent {
  type: 'http.request';
  target: string;
  method: string;
  /** Request path; the query string only with `includeQuery`. At most 2048 characters. */
  path: string;
  /** Status sent to the app; 0 when the app went away before any response. */
  status: number;
  /** Body bytes from the app towards the upstream (after an upgrade: all tunnelled bytes). */
  bytes_in: number;
  /** Body bytes from the upstream towards the app (after an upgrade: all tunnelled bytes). */
  bytes_out: number;
  duration_ms: number;
  /** Present when the request was an Upgrade (WebSocket) request. */
  upgrade?: true;
  /** Present when the exit answered itself instead of relaying the upstream's response. */
  error?: ErrorCode;
  /** Present when the exchange was cut before it completed (either side went away). */
  aborted?: true;
}

export interface HttpExitHooks {
  onRequest(event: HttpRequestEvent): void;
}

export interface HttpExitOptions {
  /** Largest request head from the app, and response head from the upstream (431 / 502). */
  maxHeaderBytes?: number;
  /** The app must send a complete request head within this (408). */
  headersTimeoutMs?: number;
  /** The app must send a whole request, body included, within this (408); 0: no limit. */
  requestTimeoutMs?: number;
  /** An idle keep-alive app connection is closed after this. */
  keepAliveTimeoutMs?: number;
  /** An app connection, upstream socket or upgraded tunnel without traffic for this long is closed. */
  idleTimeoutMs?: number;
  /** TCP connect to the upstream (502). */
  connectTimeoutMs?: number;
  /** Upstream response head, counted from the end of the request body (502). */
  responseTimeoutMs?: number;
  /** Idle pooled upstream sockets are closed after this (keep it below the upstream's keep-alive). */
  upstreamKeepAliveMs?: number;
  /** Upstream sockets per target, pooled across app connections. */
  maxUpstreamSockets?: number;
  /** Put the query string into events' `path` (off: it often carries keys). */
  includeQuery?: boolean;
  /** How often header/request timeouts are checked. */
  timeoutCheckIntervalMs?: number;
}

const DEFAULTS: Required<HttpExitOptions> = {
  maxHeaderBytes: 16_384,
  headersTimeoutMs: 30_000,
  requestTimeoutMs: 0,
  keepAliveTimeoutMs: 60_000,
  idleTimeoutMs: 300_000,
  connectTimeoutMs: 10_000,
  responseTimeoutMs: 120_000,
  upstreamKeepAliveMs: 4_000,
  maxUpstreamSockets: 256,
  includeQuery: false,
  timeoutCheckIntervalMs: 1_000,
};

const MAX_EVENT_PATH = 2048;
const NO_BODY_BY_DEFAULT = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS']);
/**
 * An upstream answering TRACE reflects the request, injected credential included. (IIS's TRACK
 * never gets here: Node's strict parser refuses unknown methods, 400.)
 */
const REFUSED_METHODS = new Set(['TRACE']);
/** Requests retried once on a fresh socket when a pooled one turns out to be closed. */
const RETRYABLE = new Set(['GET', 'HEAD', 'OPTIONS']);

/** A per-target HTTP exit: one HTTP server and one upstream connection pool, many app connections. */
export interface HttpExit {
  readonly target: HttpExitTarget;
  /** Serve one app connection; `hooks` receive its requests' events. */
  serve(conn: Duplex, hooks: HttpExitHooks): void;
  /** App connections (including upgraded tunnels) currently open. */
  readonly connections: number;
  /** True once close() ran; serve() then refuses connections. */
  readonly closed: boolean;
  /** Destroy every open connection and the upstream pool. */
  close(): void;
}

/**
 * Build the exit for one `http` target. Throws ConfigError when the injection cannot be sent
 * (unresolved or malformed secret), so a bad target fails at start rather than per request.
 */
export function createHttpExit(target: HttpExitTarget, options: HttpExitOptions = {}): HttpExit {
  const opts = { ...DEFAULTS, ...options };
  checkHttpInjection(target.name, target.injection);
  const upstream = upstreamOf(target, opts);
  const replaced = replacedHeaders(target.injection);
  const sigv4 =
    target.injection.kind === 'aws_sigv4'
      ? createSigV4Signer(target.name, target.injection, upstream.secure)
      : undefined;
  const hooksOf = new WeakMap<object, HttpExitHooks>();
  const open = new Set<Duplex>();
  let closed = false;

  const server = http.createServer({
    maxHeaderSize: opts.maxHeaderBytes,
    headersTimeout: opts.headersTimeoutMs,
    requestTimeout: opts.requestTimeoutMs,
    keepAliveTimeout: opts.keepAliveTimeoutMs,
    connectionsCheckingInterval: opts.timeoutCheckIntervalMs,
    // The app's bytes reach us through a tunnel: reject malformed requests strictly.
    insecureHTTPParser: false,
    requireHostHeader: false,
  });
  server.timeout = opts.idleTimeoutMs;
  // The server never listens: connections are emitted into it. Its header/request timeout
  // checker starts on 'listening', so start it explicitly (it is unref'd).
  server.emit('listening');

  const emit = (socket: object, event: HttpRequestEvent) => {
    const hooks = hooksOf.get(socket);
    try {
      hooks?.onRequest(event);
    } catch {
      // An audit hook failing must not break the proxied exchange.
    }
  };

  const context: RequestContext = { target, upstream, replaced, sigv4, opts, emit };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => proxyRequest(context, req, res, false));
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) =>
    proxyRequest(context, req, res, true),
  );
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
    proxyUpgrade(context, req, socket, head),
  );
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {});
    const err = new CiportError('CIPORT_E_METHOD_NOT_ALLOWED', 'CONNECT is not supported by an http target');
    socket.end(rawErrorResponse(405, 'Method Not Allowed', err));
    emit(socket, baseEvent(context, req, Date.now(), { status: 405, error: err.code }));
  });

  // Requests Node's parser refuses (malformed, head too large, head too slow): answer with the
  // exit's JSON error and end the connection gracefully (Node's default destroys it right after
  // writing, which on an HTTP/2 stream resets it before the answer arrives).
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    // The app went away (reset, or closed mid-request): nobody to answer.
    const gone = err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE';
    if (gone || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const [status, reason, cerr] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? ([
            431,
            'Request Header Fields Too Large',
            new CiportError(
              'CIPORT_E_HEADERS_TOO_LARGE',
              `request head exceeds ${opts.maxHeaderBytes} bytes`,
            ),
          ] as const)
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? ([
              408,
              'Request Timeout',
              new CiportError('CIPORT_E_REQUEST_TIMEOUT', 'the request did not arrive in time'),
            ] as const)
          : ([400, 'Bad Request', usage(`malformed HTTP request (${err.code ?? 'parse error'})`)] as const);
    socket.end(rawErrorResponse(status, reason, cerr));
    const timer = setTimeout(() => socket.destroy(), 2_000);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    emit(socket, {
      type: 'http.request',
      target: target.name,
      method: '',
      path: '',
      status,
      bytes_in: 0,
      bytes_out: 0,
      duration_ms: 0,
      error: cerr.code,
    });
  });

  return {
    target,
    serve(conn, hooks) {
      if (closed) {
        conn.destroy();
        return;
      }
      // Never the connection itself: see transport.ts for what Node's http.Server does to an
      // HTTP/2 stream's memory.
      const transport = new Http1Transport(conn);
      hooksOf.set(transport, hooks);
      open.add(conn);
      conn.once('close', () => open.delete(conn));
      server.emit('connection', transport);
    },
    get connections() {
      return open.size;
    },
    get closed() {
      return closed;
    },
    close() {
      closed = true;
      for (const conn of open) conn.destroy();
      open.clear();
      server.close();
      upstream.agent.destroy();
    },
  };
}

// ---- upstream ---------------------------------------------------------------------------------

interface Upstream {
  address: string;
  host: string;
  port: number;
  /** Host header value. */
  hostHeader: string;
  secure: boolean;
  agent: http.Agent;
  /** Connection options shared by pooled and upgrade requests (TLS verification included). */
  connect: https.RequestOptions;
}

function upstreamOf(target: HttpExitTarget, opts: Required<HttpExitOptions>): Upstream {
  const { host, port } = splitHostPort(target.address);
  const secure = target.tls !== undefined && target.tls !== false;
  const tls = typeof target.tls === 'object' ? target.tls : {};
  const ca = tls.ca === undefined ? undefined : typeof tls.ca === 'string' ? tls.ca : tls.ca.reveal();
  const servername = tls.servername ?? (isIP(host) ? undefined : host);
  const nameForHost = tls.servername ?? (isIP(host) === 6 ? `[${host}]` : host);
  const hostHeader = port === (secure ? 443 : 80) ? nameForHost : `${nameForHost}:${port}`;
  // Verification is never turned off: a private CA is configured with `tls.ca`.
  const tlsOptions: https.AgentOptions = {
    rejectUnauthorized: true,
    ...(ca === undefined ? {} : { ca }),
    ...(servername === undefined ? {} : { servername }),
  };
  const connect: https.RequestOptions = secure ? { host, port, ...tlsOptions } : { host, port };
  const agentOptions: https.AgentOptions = {
    keepAlive: true,
    maxSockets: opts.maxUpstreamSockets,
    maxFreeSockets: Math.min(opts.maxUpstreamSockets, 32),
    scheduling: 'lifo',
    timeout: opts.upstreamKeepAliveMs,
  };
  const agent = secure ? new https.Agent({ ...agentOptions, ...tlsOptions }) : new http.Agent(agentOptions);
  return { address: target.address, host, port, hostHeader, secure, agent, connect };
}

function upstreamRequest(upstream: Upstream, options: https.RequestOptions): ClientRequest {
  return (upstream.secure ? https : http).request({ ...upstream.connect, ...options, setHost: false });
}

/** Turn an upstream failure into the 502 error the app sees. Messages carry no header values. */
function upstreamError(upstream: Upstream, err: unknown, maxHeaderBytes: number): CiportError {
  const e = err as NodeJS.ErrnoException;
  const code = e?.code ?? '';
  const where = `upstream ${upstream.address}`;
  let message: string;
  let reason: string;
  if (e instanceof UpstreamTimeout) {
    message = `${where}: ${e.message}`;
    reason = 'timeout';
  } else if (TLS_VERIFY_CODES.has(code) || code.includes('CERT')) {
    message = `TLS verification of ${where} failed (${code}): ${e.message}`;
    reason = 'tls';
  } else if (
    code.startsWith('ERR_SSL_') ||
    code.startsWith('ERR_TLS_') ||
    (upstream.secure && code === 'EPROTO')
  ) {
    // OpenSSL's text: "...:SSL routines:<function>:<reason>:<file>:<line>:" — keep the reason.
    const why = /SSL routines:[^:]*:([^:]+)/.exec(e.message ?? '')?.[1];
    message = `TLS handshake with ${where} failed (${code}${why ? `: ${why}` : ''})`;
    reason = 'tls';
  } else if (code === 'HPE_HEADER_OVERFLOW') {
    message = `${where} sent response headers larger than ${maxHeaderBytes} bytes`;
    reason = 'protocol';
  } else if (code.startsWith('HPE_') || code === 'ERR_INVALID_CHAR' || code === 'ERR_INVALID_HTTP_TOKEN') {
    message = `${where} sent an invalid HTTP response (${code})`;
    reason = 'protocol';
  } else if (
    ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL'].includes(code)
  ) {
    message = `cannot connect to ${where} (${code})`;
    reason = 'connect';
  } else if (code === 'ECONNRESET' || code === 'EPIPE' || e?.message === 'socket hang up') {
    message = `${where} closed the connection before responding${code ? ` (${code})` : ''}`;
    reason = 'reset';
  } else if (/^E[A-Z]+$/.test(code)) {
    // A system error (errno): its message names the syscall and address, nothing else.
    message = `request to ${where} failed (${code}): ${e.message}`;
    reason = 'other';
  } else {
    // Node's own errors may quote header values in their messages: only the code goes out.
    message = `request to ${where} failed (${code || 'unknown error'})`;
    reason = 'other';
  }
  return new CiportError('CIPORT_E_HTTP_UPSTREAM', message, { cause: err, details: { reason } });
}

const TLS_VERIFY_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REVOKED',
  'CERT_SIGNATURE_FAILURE',
  'HOSTNAME_MISMATCH',
]);

class UpstreamTimeout extends Error {}

/** http.request threw synchronously (e.g. a header Node refuses): no message, it may quote values. */
function unbuildable(upstream: Upstream, err: unknown): CiportError {
  const code = (err as NodeJS.ErrnoException)?.code ?? 'unknown error';
  return new CiportError(
    'CIPORT_E_HTTP_UPSTREAM',
    `cannot build the request to upstream ${upstream.address} (${code})`,
    {
      details: { reason: 'protocol' },
    },
  );
}

// ---- requests ---------------------------------------------------------------------------------

interface RequestContext {
  target: HttpExitTarget;
  upstream: Upstream;
  replaced: ReadonlySet<string>;
  /** Present for `aws_sigv4` targets: signs each request. */
  sigv4: SigV4Signer | undefined;
  opts: Required<HttpExitOptions>;
  emit(socket: object, event: HttpRequestEvent): void;
}

function eventPath(url: string | undefined, includeQuery: boolean): string {
  const raw = url ?? '';
  const path = includeQuery ? raw : (raw.split('?', 1)[0] ?? '');
  return path.length > MAX_EVENT_PATH ? path.slice(0, MAX_EVENT_PATH) : path;
}

function baseEvent(
  ctx: RequestContext,
  req: IncomingMessage,
  started: number,
  fields: Partial<HttpRequestEvent>,
): HttpRequestEvent {
  return {
    type: 'http.request',
    target: ctx.target.name,
    method: req.method ?? '',
    path: eventPath(req.url, ctx.opts.includeQuery),
    status: 0,
    bytes_in: 0,
    bytes_out: 0,
    duration_ms: Date.now() - started,
    ...fields,
  };
}

/** Origin-form (`/path?q`) or `*` for OPTIONS; absolute-form means the app used us as a proxy. */
function originForm(req: IncomingMessage): boolean {
  const url = req.url ?? '';
  return url.startsWith('/') || (url === '*' && req.method === 'OPTIONS');
}

function refusedMethod(req: IncomingMessage): CiportError | undefined {
  const method = req.method ?? '';
  if (!REFUSED_METHODS.has(method)) return undefined;
  return new CiportError(
    'CIPORT_E_METHOD_NOT_ALLOWED',
    `${method} is refused by an http target: the upstream would echo the injected credential`,
  );
}

function proxyRequest(
  ctx: RequestContext,
  req: IncomingMessage,
  res: ServerResponse,
  expectContinue: boolean,
): void {
  const started = Date.now();
  const { upstream, opts } = ctx;
  const socket = req.socket;
  let bytesIn = 0;
  let bytesOut = 0;
  let error: ErrorCode | undefined;
  let reported = false;
  let current: ClientRequest | undefined;

  const report = () => {
    if (reported) return;
    reported = true;
    const aborted = !res.writableFinished;
    ctx.emit(
      socket,
      baseEvent(ctx, req, started, {
        status: res.headersSent ? res.statusCode : 0,
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        ...(error === undefined ? {} : { error }),
        ...(aborted ? { aborted: true as const } : {}),
      }),
    );
  };
  res.once('close', () => {
    if (!res.writableFinished) current?.destroy();
    report();
  });
  req.on('data', (chunk: Buffer) => {
    bytesIn += chunk.length;
  });
  req.on('error', () => current?.destroy());

  if (!originForm(req)) {
    error = 'CIPORT_E_USAGE';
    sendError(
      req,
      res,
      400,
      new CiportError(
        'CIPORT_E_USAGE',
        'only origin-form request targets (/path) are accepted: use the exported URL, not a proxy setting',
      ),
    );
    return;
  }
  const refused = refusedMethod(req);
  if (refused) {
    error = refused.code;
    sendError(req, res, 405, refused);
    return;
  }

  const hasBody =
    headerValue(req.rawHeaders, 'transfer-encoding') !== undefined ||
    Number(headerValue(req.rawHeaders, 'content-length') ?? '0') > 0;
  // A body to be hashed for SigV4 is read whole before anything goes upstream.
  const buffered = ctx.sigv4 !== undefined && !ctx.sigv4.streamsBody && hasBody;
  let body: Buffer | undefined;
  let headers = upstreamRequestHeaders(req.rawHeaders, {
    host: upstream.hostHeader,
    replaced: ctx.replaced,
    injected: injectedHeaderFor(ctx.target.injection),
    upgrade: undefined,
    keepExpect: expectContinue && !buffered,
  });
  // A body-less request keeps its framing: without this Node would chunk an empty POST body.
  if (
    !hasBody &&
    !NO_BODY_BY_DEFAULT.has(req.method ?? '') &&
    headerValue(headers, 'content-length') === undefined
  ) {
    headers.push('Content-Length', '0');
  }

  const fail = (err: unknown) => {
    if (res.destroyed) return; // the app is gone: nobody to tell
    if (res.headersSent) {
      // Mid-response: the only honest signal left is cutting the connection.
      res.destroy();
      return;
    }
    const cerr = err instanceof CiportError ? err : upstreamError(upstream, err, opts.maxHeaderBytes);
    error = cerr.code;
    sendError(req, res, 502, cerr);
  };

  const send = (attempt: number) => {
    let upReq: ClientRequest;
    try {
      upReq = upstreamRequest(upstream, {
        method: req.method,
        path: req.url,
        headers,
        // The retry dials a connection of its own rather than another pooled one.
        agent: attempt === 0 ? upstream.agent : false,
        timeout: opts.idleTimeoutMs,
        maxHeaderSize: opts.maxHeaderBytes,
      });
    } catch (err) {
      fail(unbuildable(upstream, err));
      return;
    }
    current = upReq;
    let responded = false;
    const timers = upstreamTimers(upReq, opts, () => responded);

    upReq.on('timeout', () => upReq.destroy(new UpstreamTimeout(`no traffic for ${opts.idleTimeoutMs} ms`)));
    upReq.on('error', (err) => {
      timers.clear();
      if (responded) return; // the response pipeline reports its own failure
      if (
        attempt === 0 &&
        upReq.reusedSocket &&
        !hasBody &&
        RETRYABLE.has(req.method ?? '') &&
        !(err instanceof UpstreamTimeout) &&
        !res.destroyed
      ) {
        send(1); // a pooled keep-alive socket the upstream had closed: retry once, freshly dialled
        return;
      }
      fail(err);
    });
    if (expectContinue) upReq.on('continue', () => res.writeContinue());
    upReq.on('response', (upRes: IncomingMessage) => {
      responded = true;
      timers.clear();
      const status = upRes.statusCode ?? 502;
      noteUpstreamStatus(ctx.target.injection, status);
      // A response before the whole request body arrived: finish this exchange, then close.
      if (!req.complete) res.shouldKeepAlive = false;
      try {
        res.writeHead(status, upRes.statusMessage || undefined, clientResponseHeaders(upRes.rawHeaders));
      } catch (err) {
        upRes.destroy();
        responded = false;
        fail(
          new CiportError(
            'CIPORT_E_HTTP_UPSTREAM',
            `upstream ${upstream.address} sent a response header Node refuses`,
            {
              cause: err,
              details: { reason: 'protocol' },
            },
          ),
        );
        return;
      }
      upRes.on('data', (chunk: Buffer) => {
        bytesOut += chunk.length;
      });
      pipeline(upRes, res, () => {
        // Errors are visible in the event (aborted); nothing else to do.
      });
    });

    if (body !== undefined) {
      upReq.end(body);
    } else if (hasBody && attempt === 0) {
      req.pipe(upReq);
    } else {
      upReq.end();
    }
  };
  const sigv4 = ctx.sigv4;
  if (!sigv4) {
    send(0);
    return;
  }
  // A streamed body waits, unread, while the request is signed (pipe() resumes it).
  if (!buffered) req.pause();
  // Bytes of this body counted in the process's budget (signedBodies), given back when done.
  let reserved = 0;
  res.once('close', () => signedBodies.give(reserved));
  const reserve = (n: number) => {
    if (!signedBodies.take(n)) throw signedBodiesBusy();
    reserved += n;
  };
  const signThenSend = async () => {
    if (buffered) {
      const declared = Number(headerValue(req.rawHeaders, 'content-length') ?? '0');
      if (declared > MAX_SIGNED_BODY) throw signedBodyTooLarge();
      reserve(declared);
      // The app waits for 100 Continue before sending the body the exit must read first.
      if (expectContinue) res.writeContinue();
      body = await readBody(req, MAX_SIGNED_BODY, (n) => {
        if (n > reserved) reserve(n - reserved);
      });
      headers = [...withoutField(headers, 'content-length'), 'Content-Length', String(body.length)];
    }
    headers.push(...(await sigv4.sign(req.method ?? 'GET', req.url ?? '/', headers, body)));
  };
  signThenSend().then(
    () => {
      if (!res.destroyed) send(0);
    },
    (err: unknown) => {
      if (
        err instanceof CiportError &&
        (err.code === 'CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE' || err.code === 'CIPORT_E_AWS_SIGV4_BUSY')
      ) {
        if (res.destroyed) return;
        error = err.code;
        sendError(req, res, err.httpStatus, err);
        return;
      }
      fail(err);
    },
  );
}

function signedBodyTooLarge(): CiportError {
  return new CiportError(
    'CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE',
    `the request body exceeds ${MAX_SIGNED_BODY} bytes: a SigV4 signature covers the body's hash, so the exit buffers it, up to that size`,
  );
}

function signedBodiesBusy(): CiportError {
  return new CiportError(
    'CIPORT_E_AWS_SIGV4_BUSY',
    'the exit is holding as many request bodies to sign as it may (all SigV4 targets together): retry later',
  );
}

/**
 * The request body, whole; rejects past `limit` bytes, when the request is cut, or when `grow`
 * (told the size read so far, before it is kept) throws.
 */
function readBody(req: IncomingMessage, limit: number, grow: (size: number) => void): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        done();
        reject(signedBodyTooLarge());
        return;
      }
      try {
        grow(size);
      } catch (err) {
        done();
        reject(err);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(Buffer.concat(chunks));
    };
    const onClose = () => {
      done();
      reject(new Error('the request was cut before its body arrived'));
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('close', onClose);
  });
}

/** A raw header list without the fields named `name` (lower-case). */
function withoutField(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() !== name) out.push(raw[i] as string, raw[i + 1] as string);
  }
  return out;
}

function injectedHeaderFor(injection: HttpInjection): { name: string; value: string } | undefined {
  const h = injectedHeader(injection);
  if (!h) return undefined;
  // Send the conventional spelling; HTTP field names are case-insensitive.
  return {
    name:
      h.name === 'authorization' ? 'Authorization' : injection.kind === 'header' ? injection.header : h.name,
    value: h.value,
  };
}

/** Connect and response-head deadlines of one upstream request. */
function upstreamTimers(upReq: ClientRequest, opts: Required<HttpExitOptions>, responded: () => boolean) {
  let connectTimer: NodeJS.Timeout | undefined;
  let responseTimer: NodeJS.Timeout | undefined;
  const clear = () => {
    clearTimeout(connectTimer);
    clearTimeout(responseTimer);
  };
  upReq.once('socket', (s: Socket) => {
    if (!s.connecting) return;
    connectTimer = setTimeout(
      () => upReq.destroy(new UpstreamTimeout(`no TCP connection within ${opts.connectTimeoutMs} ms`)),
      opts.connectTimeoutMs,
    );
    s.once('connect', () => clearTimeout(connectTimer));
  });
  upReq.once('finish', () => {
    if (responded()) return;
    responseTimer = setTimeout(
      () => upReq.destroy(new UpstreamTimeout(`no response within ${opts.responseTimeoutMs} ms`)),
      opts.responseTimeoutMs,
    );
  });
  upReq.once('close', clear);
  return { clear };
}

function usage(message: string): CiportError {
  return new CiportError('CIPORT_E_USAGE', message);
}

/** The JSON error response of the exit itself (400, 502). */
function sendError(req: IncomingMessage, res: ServerResponse, status: number, err: CiportError): void {
  const body = errorBody(err);
  const headers: Record<string, string> = {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': String(Buffer.byteLength(body)),
    [ERROR_HEADER]: err.code,
  };
  if (!req.complete) {
    // The request body was not (fully) read: drain what is in flight and close afterwards.
    headers.connection = 'close';
    req.unpipe();
    req.resume();
  }
  res.writeHead(status, headers);
  res.end(body);
}

function rawErrorResponse(status: number, reason: string, err: CiportError): string {
  const body = errorBody(err);
  return (
    responseHead(status, reason, [
      'Content-Type',
      'application/json; charset=utf-8',
      'Cache-Control',
      'no-store',
      'Content-Length',
      String(Buffer.byteLength(body)),
      ERROR_HEADER,
      err.code,
      'Connection',
      'close',
    ]) + body
  );
}

// ---- upgrades ---------------------------------------------------------------------------------

function proxyUpgrade(ctx: RequestContext, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const started = Date.now();
  const { upstream, opts } = ctx;
  let bytesIn = 0;
  let bytesOut = 0;
  let status = 0;
  let error: ErrorCode | undefined;
  let upSocket: Duplex | undefined;
  let reported = false;
  let upReq: ClientRequest | undefined;

  const report = () => {
    if (reported) return;
    reported = true;
    ctx.emit(
      socket,
      baseEvent(ctx, req, started, {
        status,
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        upgrade: true,
        ...(error === undefined ? {} : { error }),
        ...(status === 0 ? { aborted: true as const } : {}),
      }),
    );
  };
  // The HTTP server has let go of the socket: its errors and lifetime are ours now.
  socket.on('error', () => socket.destroy());
  socket.once('close', () => {
    upSocket?.destroy();
    upReq?.destroy();
    report();
  });
  setIdleTimeout(socket, opts.idleTimeoutMs, () => socket.destroy());

  const answer = (code: number, reason: string, err: CiportError) => {
    status = code;
    error = err.code;
    socket.end(rawErrorResponse(code, reason, err));
  };

  if (!originForm(req)) {
    answer(
      400,
      'Bad Request',
      new CiportError('CIPORT_E_USAGE', 'only origin-form request targets (/path) are accepted'),
    );
    return;
  }
  const refused = refusedMethod(req);
  if (refused) {
    answer(405, 'Method Not Allowed', refused);
    return;
  }

  const headers = upstreamRequestHeaders(req.rawHeaders, {
    host: upstream.hostHeader,
    replaced: ctx.replaced,
    injected: injectedHeaderFor(ctx.target.injection),
    upgrade: headerValue(req.rawHeaders, 'upgrade') ?? '',
    keepExpect: false,
  });
  // SigV4 targets sign the upgrade request first (API Gateway WebSocket APIs want it signed).
  if (!ctx.sigv4) {
    dial();
    return;
  }
  ctx.sigv4.sign(req.method ?? 'GET', req.url ?? '/', headers, undefined).then(
    (signature) => {
      if (socket.destroyed) return;
      headers.push(...signature);
      dial();
    },
    (err: unknown) =>
      answer(502, 'Bad Gateway', err instanceof CiportError ? err : upstreamError(upstream, err, 0)),
  );

  function dial(): void {
    // An upgraded connection is never returned to a pool: dial a fresh one.
    let dialled: ClientRequest;
    try {
      dialled = upstreamRequest(upstream, {
        method: req.method,
        path: req.url,
        headers,
        agent: false,
        timeout: opts.idleTimeoutMs,
        maxHeaderSize: opts.maxHeaderBytes,
      });
    } catch (err) {
      answer(502, 'Bad Gateway', unbuildable(upstream, err));
      return;
    }
    upReq = dialled;
    const timers = upstreamTimers(dialled, opts, () => status !== 0);
    dialled.on('timeout', () =>
      dialled.destroy(new UpstreamTimeout(`no traffic for ${opts.idleTimeoutMs} ms`)),
    );
    dialled.on('error', (err) => {
      timers.clear();
      if (status !== 0 || socket.destroyed) return;
      answer(502, 'Bad Gateway', upstreamError(upstream, err, opts.maxHeaderBytes));
    });

    dialled.on('upgrade', (upRes: IncomingMessage, up: Socket, upHead: Buffer) => {
      timers.clear();
      upSocket = up;
      status = upRes.statusCode ?? 101;
      if (socket.destroyed) {
        up.destroy();
        return;
      }
      up.on('error', () => up.destroy());
      up.once('close', () => socket.destroy());
      up.setTimeout(0);
      setIdleTimeout(up, opts.idleTimeoutMs, () => up.destroy());
      socket.write(
        responseHead(
          status,
          upRes.statusMessage || 'Switching Protocols',
          clientResponseHeaders(upRes.rawHeaders, { upgrade: true }),
        ),
      );
      if (upHead.length > 0) {
        bytesOut += upHead.length;
        socket.write(upHead);
      }
      if (head.length > 0) {
        bytesIn += head.length;
        up.write(head);
      }
      socket.on('data', (chunk: Buffer) => {
        bytesIn += chunk.length;
      });
      up.on('data', (chunk: Buffer) => {
        bytesOut += chunk.length;
      });
      socket.pipe(up);
      up.pipe(socket);
    });

    dialled.on('response', (upRes: IncomingMessage) => {
      // The upstream declined the upgrade: relay its answer as a plain response, then close.
      timers.clear();
      status = upRes.statusCode ?? 502;
      noteUpstreamStatus(ctx.target.injection, status);
      socket.write(
        responseHead(status, upRes.statusMessage || '', [
          ...clientResponseHeaders(upRes.rawHeaders),
          'Connection',
          'close',
        ]),
      );
      upRes.on('data', (chunk: Buffer) => {
        bytesOut += chunk.length;
      });
      pipeline(upRes, socket, () => socket.destroy());
    });

    dialled.end();
  }
}

/** Idle timeout on a Duplex that may or may not support setTimeout (sockets and HTTP/2 streams do). */
function setIdleTimeout(stream: Duplex, ms: number, onTimeout: () => void): void {
  const s = stream as Duplex & { setTimeout?: (ms: number, cb?: () => void) => unknown };
  if (ms > 0 && typeof s.setTimeout === 'function') {
    s.setTimeout(ms);
    s.on('timeout', onTimeout);
  }
}
