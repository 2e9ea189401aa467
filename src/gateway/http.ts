// Request/response helpers shared by HTTP/2 (compat API) and HTTP/1.1 requests: JSON bodies with
// size and time limits, and the one error body of docs/protocol.md.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { CiportError } from '../errors/index.js';
import { ERROR_HEADER } from '../transport/wire.js';

export type Req = IncomingMessage | Http2ServerRequest;
export type Res = ServerResponse | Http2ServerResponse;

export { ERROR_HEADER };

// The request deadline (`server.request_timeout`) bounds how long a request may take to
// arrive. A download's response can take much longer to stream; its handler lifts the deadline
// once the request is complete and bounds stalls itself (src/gateway/downloads.ts).
const deadlines = new WeakMap<Res, () => void>();

/** Register how the deadline of `res` is cancelled (server.ts). */
export function setRequestDeadline(res: Res, cancel: () => void): void {
  deadlines.set(res, cancel);
}

/** Cancel the request deadline of `res`, if it has one. */
export function liftRequestDeadline(res: Res): void {
  deadlines.get(res)?.();
  deadlines.delete(res);
}

export function isHttp2(req: Req): req is Http2ServerRequest {
  return req.httpVersionMajor === 2;
}

export function sendJson(
  res: Res,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('cache-control', 'no-store');
  res.setHeader('content-length', String(Buffer.byteLength(text)));
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.end(text);
}

/** The error body of docs/protocol.md, with the code repeated in `ciport-error`. */
export function sendError(
  res: Res,
  err: CiportError,
  options: {
    /** Extra members of `error` (e.g. `end_reason`). */
    errorFields?: Record<string, unknown>;
    /** Extra top-level members (e.g. `decision`). */
    body?: Record<string, unknown>;
    headers?: Record<string, string>;
  } = {},
): void {
  sendJson(
    res,
    err.httpStatus,
    { error: { ...err.toJSON(), ...options.errorFields }, ...options.body },
    { [ERROR_HEADER]: err.code, ...options.headers },
  );
}

/**
 * Read a request body of at most `maxBytes`. Oversize bodies are refused as soon as they are
 * known to be (Content-Length or the running count); the request deadline bounds slow senders.
 */
export async function readBody(req: Req, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge(maxBytes);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) throw tooLarge(maxBytes);
      chunks.push(chunk);
    }
  } catch (err) {
    // A client that goes away mid-body is its own business, not a gateway failure to log as one.
    if (err instanceof CiportError) throw err;
    throw new CiportError('CIPORT_E_USAGE', 'the client went away before its request body was complete');
  }
  return Buffer.concat(chunks);
}

/** A JSON body; an empty body is `{}`. */
export function parseJsonBody(body: Buffer): unknown {
  const text = body.toString('utf8').trim();
  if (text === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new CiportError('CIPORT_E_USAGE', 'request body is not valid JSON');
  }
}

/** readBody, then parseJsonBody. */
export async function readJsonBody(req: Req, maxBytes: number): Promise<unknown> {
  return parseJsonBody(await readBody(req, maxBytes));
}

function tooLarge(maxBytes: number): CiportError {
  return new CiportError('CIPORT_E_BODY_TOO_LARGE', `request body exceeds ${maxBytes} bytes`);
}
