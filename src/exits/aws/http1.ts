// The few bytes of HTTP/1.1 the aws exit and the client's loopback endpoint exchange over a
// tunnel stream: one GET, one JSON answer, then the stream ends (`Connection: close`). Heads are
// bounded and read with a deadline; a body is never expected (credentials requests are GETs).
import type { Duplex } from 'node:stream';
import { CiportError } from '../../errors/index.js';
import { ERROR_HEADER, errorBody } from '../../transport/wire.js';

/** The path the exit answers on (the loopback endpoint's own path is the client's). */
export const CREDENTIALS_PATH = '/v1/aws/credentials';
/** Largest request head the exit reads. */
export const MAX_REQUEST_HEAD = 8192;
/** Largest answer the client reads back (credentials are about 1.5 KiB). */
export const MAX_ANSWER = 65_536;

/**
 * Read from `stream` until `\r\n\r\n` (the head) or its end, at most `max` bytes, within
 * `timeoutMs`. Rejects with CIPORT_E_AWS_BAD_REQUEST when the head is too large, late or cut.
 */
export function readHead(stream: Duplex, max: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err: CiportError | undefined, head?: string) => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onEnd);
      stream.off('close', onEnd);
      stream.pause();
      if (err) reject(err);
      else resolve(head as string);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      if (end >= 0 && end + 4 <= max) done(undefined, all.subarray(0, end).toString('latin1'));
      else if (size > max) done(bad(`request head over ${max} bytes`));
    };
    const onEnd = () => done(bad('request cut before its head ended'));
    const timer = setTimeout(() => done(bad('request head not received in time')), timeoutMs);
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onEnd);
    stream.once('close', onEnd);
    stream.resume();
  });
}

function bad(message: string): CiportError {
  return new CiportError('CIPORT_E_AWS_BAD_REQUEST', message);
}

/** `GET /path HTTP/1.1` and its header names (lower case) → values. */
export function parseRequestHead(head: string): {
  method: string;
  path: string;
  headers: Map<string, string>;
} {
  const [line = '', ...rest] = head.split('\r\n');
  const m = /^([A-Z]{1,16}) (\S{1,2048}) HTTP\/1\.[01]$/.exec(line);
  if (!m) throw bad('malformed request line');
  const headers = new Map<string, string>();
  for (const h of rest) {
    const i = h.indexOf(':');
    if (i <= 0) throw bad('malformed header line');
    headers.set(h.slice(0, i).trim().toLowerCase(), h.slice(i + 1).trim());
  }
  return { method: m[1] as string, path: m[2] as string, headers };
}

/** Write one JSON answer and end the stream. */
export function answer(stream: Duplex, status: number, body: unknown, code?: string): void {
  const text = JSON.stringify(body);
  const head = [
    `HTTP/1.1 ${status} ${status === 200 ? 'OK' : 'Error'}`,
    'Content-Type: application/json',
    `Content-Length: ${Buffer.byteLength(text)}`,
    'Cache-Control: no-store',
    'Connection: close',
    ...(code ? [`${ERROR_HEADER}: ${code}`] : []),
  ];
  if (stream.destroyed || stream.writableEnded) return;
  stream.end(`${head.join('\r\n')}\r\n\r\n${text}`);
}

/** Answer with a CiportError's status and `{"error": {"code", "message"}}`. */
export function answerError(stream: Duplex, err: CiportError): void {
  answer(stream, err.httpStatus, JSON.parse(errorBody(err)), err.code);
}

/** An answer the exit wrote, as the client reads it back: status, ciport-error, JSON body text. */
export function parseAnswer(raw: Buffer): { status: number; code?: string | undefined; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) throw new Error('the exit sent no complete answer');
  const [line = '', ...rest] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(line);
  if (!m) throw new Error('the exit sent a malformed answer');
  let code: string | undefined;
  for (const h of rest) {
    const i = h.indexOf(':');
    if (i > 0 && h.slice(0, i).trim().toLowerCase() === ERROR_HEADER) code = h.slice(i + 1).trim();
  }
  return { status: Number(m[1]), code, body: raw.subarray(end + 4).toString('utf8') };
}
