// PostgreSQL wire messages that pg-protocol does not provide (the server side: authentication
// requests, ErrorResponse, NegotiateProtocolVersion, …) plus one bounded message reader used by
// both handshakes. Client-side messages come from pg-protocol's `serialize`; backend messages
// are decoded with its `Parser`.
import type { Readable } from 'node:stream';
import { Writer } from 'pg-protocol/dist/buffer-writer.js';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import type { CiportError } from '../../errors/index.js';

/** Protocol version codes of the untyped first messages. */
export const PROTOCOL_3_0 = 196608; // 3 << 16
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
export const CANCEL_REQUEST_CODE = 80877102;
/** PostgreSQL refuses startup packets above this (MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_PACKET = 10_000;

const R = 0x52; // 'R' Authentication*

// ---- server → client -----------------------------------------------------------------------

export function authenticationOk(): Buffer {
  return new Writer().addInt32(0).flush(R);
}

export function authenticationSASL(mechanisms: readonly string[]): Buffer {
  const w = new Writer().addInt32(10);
  for (const m of mechanisms) w.addCString(m);
  return w.addCString('').flush(R);
}

export function authenticationSASLContinue(data: string): Buffer {
  return new Writer().addInt32(11).addString(data).flush(R);
}

export function authenticationSASLFinal(data: string): Buffer {
  return new Writer().addInt32(12).addString(data).flush(R);
}

export function parameterStatus(name: string, value: string): Buffer {
  return new Writer().addCString(name).addCString(value).flush(0x53 /* S */);
}

export function backendKeyData(processId: number, secretKey: number): Buffer {
  return new Writer().addInt32(processId).addInt32(secretKey).flush(0x4b /* K */);
}

export function readyForQuery(status: 'I' | 'T' | 'E' = 'I'): Buffer {
  return new Writer().addString(status).flush(0x5a /* Z */);
}

/** NegotiateProtocolVersion: the newest minor version we speak and the options we ignored. */
export function negotiateProtocolVersion(newestMinor: number, unrecognized: readonly string[]): Buffer {
  const w = new Writer().addInt32(newestMinor).addInt32(unrecognized.length);
  for (const o of unrecognized) w.addCString(o);
  return w.flush(0x76 /* v */);
}

export interface PgErrorFields {
  /** SQLSTATE, five characters. */
  code: string;
  message: string;
  severity?: 'FATAL' | 'ERROR';
  detail?: string | undefined;
  hint?: string | undefined;
}

/** ErrorResponse ('E'). Strings are cleaned of NUL bytes, which would end a field early. */
export function errorResponse(fields: PgErrorFields): Buffer {
  const severity = fields.severity ?? 'FATAL';
  const clean = (s: string) => s.replace(/\0/g, '');
  const w = new Writer()
    .addString('S')
    .addCString(severity)
    .addString('V')
    .addCString(severity)
    .addString('C')
    .addCString(clean(fields.code))
    .addString('M')
    .addCString(clean(fields.message));
  if (fields.detail) w.addString('D').addCString(clean(fields.detail));
  if (fields.hint) w.addString('H').addCString(clean(fields.hint));
  return w.addString('\0').flush(0x45 /* E */);
}

// ---- client → server (what pg-protocol's serialize lacks or gets wrong for a proxy) ----------

/**
 * StartupMessage with exactly the given parameters. pg-protocol's `serialize.startup` always
 * appends `client_encoding=UTF8`, which would override what the application asked for.
 */
export function startupMessage(params: Readonly<Record<string, string>>): Buffer {
  const w = new Writer().addInt32(PROTOCOL_3_0);
  for (const [k, v] of Object.entries(params)) w.addCString(k).addCString(v);
  const body = w.addCString('').flush();
  const out = Buffer.allocUnsafe(body.length + 4);
  out.writeInt32BE(body.length + 4, 0);
  body.copy(out, 4);
  return out;
}

/** Key/value pairs of a startup packet body after the protocol version. */
export function parseStartupParams(body: Buffer, offset: number): Record<string, string> {
  const params: Record<string, string> = Object.create(null);
  let i = offset;
  for (;;) {
    const keyEnd = body.indexOf(0, i);
    if (keyEnd < 0) throw new Error('startup packet: unterminated parameter name');
    if (keyEnd === i) break; // the terminating empty name
    const key = body.toString('utf8', i, keyEnd);
    const valEnd = body.indexOf(0, keyEnd + 1);
    if (valEnd < 0) throw new Error(`startup packet: unterminated value of "${key}"`);
    params[key] = body.toString('utf8', keyEnd + 1, valEnd);
    i = valEnd + 1;
  }
  if (i !== body.length - 1) throw new Error('startup packet: bytes after the parameter list');
  return params;
}

// ---- decoding backend messages with pg-protocol ---------------------------------------------

export interface RawMessage {
  /** Message type byte as a one-character string ('R', 'E', …). */
  type: string;
  /** Body after the type byte and the length. */
  body: Buffer;
  /** The whole message as it was on the wire. */
  raw: Buffer;
}

/** Decode one complete backend message with pg-protocol's Parser. */
export function decodeBackend(message: RawMessage): BackendMessage {
  let out: BackendMessage | undefined;
  new Parser().parse(message.raw, (m) => {
    out = m;
  });
  if (!out) throw new Error(`cannot decode backend message '${message.type}'`);
  return out;
}

function noop(): void {}

// ---- a bounded reader for the handshakes -----------------------------------------------------

export type ReadFailure = 'timeout' | 'closed' | 'too-large';

/**
 * Reads exact byte counts and whole messages from a stream during a handshake, with a deadline
 * on every read and a size bound on every message. `release()` detaches it and puts any bytes
 * read ahead back into the stream, so a `pipeline` started afterwards sees them first.
 */
export class MessageReader {
  readonly #stream: Readable;
  readonly #fail: (why: ReadFailure, detail: string) => CiportError;
  #chunks: Buffer[] = [];
  #length = 0;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  #released = false;

  constructor(stream: Readable, fail: (why: ReadFailure, detail: string) => CiportError) {
    this.#stream = stream;
    this.#fail = fail;
    stream.on('data', this.#onData);
    stream.on('end', this.#onEnd);
    stream.on('close', this.#onEnd);
    stream.on('error', this.#onError);
    stream.resume();
  }

  /** Bytes received but not yet consumed. */
  get buffered(): number {
    return this.#length;
  }

  readonly #onData = (chunk: Buffer) => {
    this.#chunks.push(chunk);
    this.#length += chunk.length;
    // Handshake messages are small: do not let a peer make us buffer more than this.
    if (this.#length > 64 * 1024) this.#stream.pause();
    this.#wake?.();
  };
  readonly #onEnd = () => {
    this.#ended = true;
    this.#wake?.();
  };
  readonly #onError = (err: Error) => {
    this.#error = err;
    this.#wake?.();
  };

  /** Exactly `n` bytes, or a failure after `timeoutMs`. */
  async read(n: number, timeoutMs: number): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.#length < n) {
      if (this.#error) throw this.#fail('closed', this.#error.message);
      if (this.#ended) throw this.#fail('closed', 'the peer closed the connection');
      const left = deadline - Date.now();
      if (left <= 0) throw this.#fail('timeout', `no data within ${timeoutMs} ms`);
      this.#stream.resume();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
    const all = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#length = rest.length;
    return out;
  }

  /** A typed message (type byte, int32 length, body) of at most `maxLength` bytes. */
  async readMessage(maxLength: number, timeoutMs: number): Promise<RawMessage> {
    const head = await this.read(5, timeoutMs);
    const length = head.readInt32BE(1);
    if (length < 4 || length > maxLength) {
      throw this.#fail('too-large', `message '${String.fromCharCode(head[0] as number)}' of ${length} bytes`);
    }
    const body = await this.read(length - 4, timeoutMs);
    return { type: String.fromCharCode(head[0] as number), body, raw: Buffer.concat([head, body]) };
  }

  /** An untyped first message (int32 length, body); returns the body after the length. */
  async readUntyped(maxLength: number, timeoutMs: number): Promise<Buffer> {
    const head = await this.read(4, timeoutMs);
    const length = head.readInt32BE(0);
    if (length < 8 || length > maxLength) {
      throw this.#fail('too-large', `startup packet of ${length} bytes`);
    }
    return this.read(length - 4, timeoutMs);
  }

  /** Stop reading; unconsumed bytes go back to the stream, which is left paused. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    const s = this.#stream;
    s.removeListener('data', this.#onData);
    s.removeListener('end', this.#onEnd);
    s.removeListener('close', this.#onEnd);
    s.removeListener('error', this.#onError);
    // Until the caller's pipeline takes over, an error (ECONNRESET) must not crash the process;
    // the stream destroys itself and the pipeline sees that.
    s.on('error', noop);
    s.pause();
    if (this.#length > 0 && !this.#ended) s.unshift(Buffer.concat(this.#chunks));
    this.#chunks = [];
    this.#length = 0;
  }
}
