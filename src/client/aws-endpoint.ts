// protocol aws, client side: the loopback container-credentials endpoint the job's AWS SDKs and
// CLI read (AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN, docs/aws.md).
// Each request must carry the port's random token in `Authorization` (compared in constant time;
// missing → 401, wrong → 403, the gateway never asked); each valid one becomes one tunnel stream
// to the target's exit, which answers with the session's role credentials, relayed as they come.
// Nothing is kept here: no credentials in memory beyond one answer, nothing on disk. When the
// port closes (the session ended) requests still in flight are answered 410 (CIPORT_E_SESSION_ENDED) and the server stops.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { ClientHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { ERROR_CODES, type ErrorCode, specOf } from '../errors/codes.js';
import { CREDENTIALS_PATH, MAX_ANSWER, parseAnswer } from '../exits/aws/http1.js';
import { ERROR_HEADER } from '../transport/wire.js';
import { TunnelRefused } from './gateway.js';

/** The path of the loopback endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI names it). */
export const LOCAL_CREDENTIALS_PATH = '/aws/credentials';
/** The exit must answer within this (the SDKs give up after 1 to 2 s and retry). */
const ANSWER_TIMEOUT_MS = 15_000;

export interface AwsEndpointOptions {
  target: string;
  /** The port's token: AWS_CONTAINER_AUTHORIZATION_TOKEN. */
  token: string;
  open: (target: string) => Promise<ClientHttp2Stream>;
  /** The gateway refused a tunnel, or a stream failed: the session may be over. */
  onTrouble?: ((status: number | undefined, code: string | undefined) => void) | undefined;
  warn: (message: string) => void;
}

interface InFlight {
  res: ServerResponse;
  stream?: ClientHttp2Stream | undefined;
}

const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

export class AwsEndpoint {
  readonly #options: AwsEndpointOptions;
  readonly #server: Server;
  readonly #tokenDigest: Buffer;
  readonly #inFlight = new Set<InFlight>();
  readonly #sockets = new Set<Socket>();
  #closing = false;
  /** Requests refused for their token (a line at most once per kind). */
  readonly #warned = new Set<string>();

  constructor(options: AwsEndpointOptions) {
    this.#options = options;
    this.#tokenDigest = digest(options.token);
    this.#server = createServer(
      {
        maxHeaderSize: 8192,
        headersTimeout: 10_000,
        requestTimeout: 20_000,
        keepAliveTimeout: 5_000,
      },
      (req, res) => void this.#request(req, res),
    );
  }

  /** A local connection past the peer check: served by the HTTP server. */
  accept(socket: Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    this.#server.emit('connection', socket);
    socket.resume();
  }

  get activeConnections(): number {
    return this.#sockets.size;
  }

  #refuse(res: ServerResponse, code: ErrorCode, message: string): void {
    if (res.headersSent || res.destroyed) return;
    const body = JSON.stringify({ error: { code, message } });
    res.writeHead(specOf(code).http, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      [ERROR_HEADER]: code,
      ...(this.#closing ? { connection: 'close' } : {}),
    });
    res.end(body);
  }

  #authorized(req: IncomingMessage, res: ServerResponse): boolean {
    const given = req.headers.authorization;
    if (given === undefined || given === '') {
      this.#warnOnce(
        'missing',
        'a credentials request without Authorization was refused (CIPORT_E_AWS_AUTHORIZATION_MISSING)',
      );
      this.#refuse(
        res,
        'CIPORT_E_AWS_AUTHORIZATION_MISSING',
        'Authorization (AWS_CONTAINER_AUTHORIZATION_TOKEN) is required',
      );
      return false;
    }
    if (!timingSafeEqual(digest(given), this.#tokenDigest)) {
      this.#warnOnce(
        'wrong',
        'a credentials request with a wrong Authorization token was refused (CIPORT_E_AWS_AUTHORIZATION_WRONG)',
      );
      this.#refuse(res, 'CIPORT_E_AWS_AUTHORIZATION_WRONG', 'wrong authorization token');
      return false;
    }
    return true;
  }

  #warnOnce(kind: string, line: string): void {
    if (this.#warned.has(kind)) return;
    this.#warned.add(kind);
    this.#options.warn(`${this.#options.target}: ${line}`);
  }

  async #request(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // A body is never read: credentials requests have none.
    req.resume();
    if (this.#closing) return this.#refuse(res, 'CIPORT_E_SESSION_ENDED', 'the session has ended');
    if (!this.#authorized(req, res)) return;
    if (req.method !== 'GET') {
      res.setHeader('allow', 'GET');
      return this.#refuse(res, 'CIPORT_E_METHOD_NOT_ALLOWED', 'credentials are fetched with GET');
    }
    if ((req.url ?? '').split('?')[0] !== LOCAL_CREDENTIALS_PATH)
      return this.#refuse(res, 'CIPORT_E_NOT_FOUND', `credentials are at ${LOCAL_CREDENTIALS_PATH}`);
    const length = req.headers['content-length'];
    if (req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0'))
      return this.#refuse(res, 'CIPORT_E_AWS_BAD_REQUEST', 'a credentials request has no body');
    const flight: InFlight = { res };
    this.#inFlight.add(flight);
    res.once('close', () => {
      this.#inFlight.delete(flight);
      flight.stream?.close();
    });
    try {
      const stream = await this.#options.open(this.#options.target);
      flight.stream = stream;
      if (this.#closing || res.destroyed) {
        stream.close();
        return;
      }
      const raw = await exchange(stream);
      const answer = parseAnswer(raw);
      if (res.headersSent || res.destroyed) return;
      res.writeHead(answer.status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(answer.body),
        'cache-control': 'no-store',
        ...(answer.code ? { [ERROR_HEADER]: answer.code } : {}),
      });
      res.end(answer.body);
    } catch (err) {
      if (err instanceof TunnelRefused) {
        this.#options.onTrouble?.(err.status, err.code);
        const code = (err.code ?? 'CIPORT_E_GATEWAY_RESPONSE') as ErrorCode;
        return this.#refuse(res, specOfKnown(code), err.message);
      }
      this.#options.onTrouble?.(undefined, undefined);
      if (this.#closing) return this.#refuse(res, 'CIPORT_E_SESSION_ENDED', 'the session has ended');
      this.#refuse(res, 'CIPORT_E_GATEWAY_RESPONSE', `no answer from the exit: ${(err as Error).message}`);
    } finally {
      this.#inFlight.delete(flight);
    }
  }

  /** Stop serving: requests in flight are answered 410 CIPORT_E_SESSION_ENDED, sockets closed. */
  close(): Promise<void> {
    this.#closing = true;
    for (const flight of this.#inFlight) {
      flight.stream?.close();
      this.#refuse(flight.res, 'CIPORT_E_SESSION_ENDED', 'the session has ended');
    }
    this.#inFlight.clear();
    return new Promise((resolve) => {
      // Give the answers above a moment to leave, then cut whatever is left.
      setImmediate(() => {
        for (const socket of this.#sockets) socket.destroy();
        this.#server.close(() => resolve());
      });
    });
  }
}

/** A code the gateway sent that this client knows, else CIPORT_E_GATEWAY_RESPONSE. */
function specOfKnown(code: string): ErrorCode {
  return Object.hasOwn(ERROR_CODES, code) ? (code as ErrorCode) : 'CIPORT_E_GATEWAY_RESPONSE';
}

/** Send the one request the exit takes and read its whole answer (bounded, with a deadline). */
function exchange(stream: ClientHttp2Stream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const timer = setTimeout(() => fail(new Error('timed out')), ANSWER_TIMEOUT_MS);
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.close();
      reject(err);
    };
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_ANSWER) return fail(new Error('answer too large'));
      chunks.push(chunk);
    });
    stream.once('end', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    stream.once('error', (err) => fail(err));
    stream.once('close', () => fail(new Error('the tunnel closed before the answer ended')));
    stream.end(`GET ${CREDENTIALS_PATH} HTTP/1.1\r\nHost: ciport\r\nConnection: close\r\n\r\n`);
  });
}
