// After the handshake: bytes flow both ways through `pipeline` (backpressure end to end), and
// the application → server direction is watched by a streaming parser that reports statements:
// simple Query ('Q') text and extended-protocol Parse ('P') text. The parser reads message
// headers and keeps at most a bounded prefix of Q/P bodies; everything else (COPY data, Bind
// values, …) is counted and skipped, never buffered.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pauseWhileFull } from '../../audit/backlog.js';

import type { QueryEvent } from '../query-event.js';

export type { QueryEvent };

export interface QueryObserverOptions {
  onQuery: (event: QueryEvent) => void;
  /** Longest statement text kept, in UTF-8 bytes (default 4096). */
  maxQueryLength?: number | undefined;
  /** Named prepared statements remembered for de-duplication (default 1024). */
  maxNamedStatements?: number | undefined;
}

/** The frontend Terminate message. */
const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);

/** Longest prepared-statement name kept for de-duplication; longer names are cut. */
const MAX_NAME = 256;

/** Cut `buf` to at most `max` bytes without splitting a UTF-8 sequence. */
function utf8Prefix(buf: Buffer, max: number): string {
  if (buf.length <= max) return buf.toString('utf8');
  let end = max;
  // buf[end] is the first byte left out: if it continues a sequence, drop that whole sequence.
  while (end > 0 && ((buf[end] as number) & 0xc0) === 0x80) end--;
  return buf.toString('utf8', 0, end);
}

/**
 * Incremental parser of frontend (application → server) messages after the startup. Feed it
 * every chunk in order with `push`; it calls `onQuery` for each Query and for each Parse, except
 * a Parse that re-prepares a named statement with the same text (drivers that re-prepare after
 * DEALLOCATE or on every connection checkout): one event per distinct named statement.
 */
export class QueryObserver {
  readonly #onQuery: (event: QueryEvent) => void;
  readonly #max: number;
  readonly #maxNamed: number;
  readonly #named = new Map<string, string>();
  readonly #header = Buffer.alloc(5);
  #headerFill = 0;
  #type = 0;
  /** Body bytes of the current message still to come. */
  #remaining = 0;
  #bodyLength = 0;
  #capture: Buffer | undefined;
  #captured = 0;
  #broken = false;

  constructor(options: QueryObserverOptions) {
    this.#onQuery = options.onQuery;
    this.#max = options.maxQueryLength ?? 4096;
    this.#maxNamed = options.maxNamedStatements ?? 1024;
  }

  /** Bytes held for the message in progress (bounded by the query length limit). */
  get retained(): number {
    return this.#capture?.length ?? 0;
  }

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && !this.#broken) {
      if (this.#remaining === 0 && this.#headerFill === 0 && chunk.length - i >= 5) {
        // A message that starts here: when it ends in this chunk too (the common case), read it
        // in place, without copying its header or body.
        const type = chunk[i] as number;
        const length = chunk.readInt32BE(i + 1);
        if (length >= 4 && length - 4 <= chunk.length - i - 5) {
          const start = i + 5;
          i = start + length - 4;
          const wanted = this.#wanted(type);
          if (wanted > 0)
            this.#message(type, chunk.subarray(start, start + Math.min(wanted, length - 4)), length - 4);
          continue;
        }
      }
      if (this.#remaining === 0 && this.#headerFill < 5) {
        const n = Math.min(5 - this.#headerFill, chunk.length - i);
        chunk.copy(this.#header, this.#headerFill, i, i + n);
        this.#headerFill += n;
        i += n;
        if (this.#headerFill < 5) return;
        this.#startMessage();
        continue;
      }
      const n = Math.min(this.#remaining, chunk.length - i);
      if (this.#capture && this.#captured < this.#capture.length) {
        const take = Math.min(n, this.#capture.length - this.#captured);
        chunk.copy(this.#capture, this.#captured, i, i + take);
        this.#captured += take;
      }
      this.#remaining -= n;
      i += n;
      if (this.#remaining === 0) this.#endMessage();
    }
  }

  /** How many body bytes of a message of this type are kept (0: none, the message is skipped). */
  #wanted(type: number): number {
    return type === 0x51 /* Q */ ? this.#max + 1 : type === 0x50 /* P */ ? MAX_NAME + this.#max + 2 : 0;
  }

  #startMessage(): void {
    this.#type = this.#header[0] as number;
    const length = this.#header.readInt32BE(1);
    if (length < 4) {
      // Not PostgreSQL framing: stop observing (the server will reject the stream itself).
      this.#broken = true;
      return;
    }
    this.#bodyLength = length - 4;
    this.#remaining = this.#bodyLength;
    const wanted = this.#wanted(this.#type);
    this.#capture = wanted > 0 ? Buffer.allocUnsafe(Math.min(wanted, this.#bodyLength)) : undefined;
    this.#captured = 0;
    if (this.#remaining === 0) this.#endMessage();
  }

  #endMessage(): void {
    const body = this.#capture?.subarray(0, this.#captured);
    this.#capture = undefined;
    this.#headerFill = 0;
    if (body) this.#message(this.#type, body, this.#bodyLength);
  }

  /** A whole Q or P message: `body` is what was kept of it (a prefix), `bodyLength` its real length. */
  #message(type: number, body: Buffer, bodyLength: number): void {
    if (type === 0x51) {
      // Query: text \0. A whole capture ends with the NUL.
      const whole = body.length === bodyLength && body[body.length - 1] === 0;
      this.#emit(
        whole ? body.subarray(0, body.length - 1) : body,
        !whole || body.length - 1 > this.#max,
        'simple',
      );
      return;
    }
    // Parse: name \0 query \0 int16 n, int32[n] types.
    const nameEnd = body.indexOf(0);
    if (nameEnd < 0) return; // a name longer than we keep: not worth a guess
    const name = body.toString('utf8', 0, nameEnd);
    const rest = body.subarray(nameEnd + 1);
    const textEnd = rest.indexOf(0);
    // Text up to its NUL; no NUL in what we kept means it was longer than that.
    const text = textEnd >= 0 ? rest.subarray(0, textEnd) : rest;
    const truncated = textEnd < 0 || textEnd > this.#max;
    if (name !== '') {
      // Same name, same text (what we kept of it, and the body length): a re-prepare.
      const key = `${bodyLength}\0${text.toString('base64')}`;
      if (this.#named.get(name) === key) return;
      this.#named.delete(name);
      this.#named.set(name, key);
      if (this.#named.size > this.#maxNamed) this.#named.delete(this.#named.keys().next().value as string);
    }
    this.#emit(text, truncated, 'extended');
  }

  #emit(text: Buffer, truncated: boolean, protocol: QueryEvent['protocol']): void {
    try {
      this.#onQuery({ type: 'query', text: utf8Prefix(text, this.#max), truncated, protocol });
    } catch {
      // An observer must never break the connection.
    }
  }
}

export interface RelayOptions {
  /** Per-target switch: false → no parsing at all (default true when onQuery is set). */
  queryEvents?: boolean | undefined;
  onQuery?: ((event: QueryEvent) => void) | undefined;
  maxQueryLength?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Audit backpressure: while this returns a promise, reading from the app pauses. */
  room?: (() => Promise<void> | undefined) | undefined;
  /**
   * The local hop (the client): once the application has said goodbye (its last message was
   * Terminate and it closed its side), end its socket with a reset instead of a FIN when the
   * tunnel is done. The application closed first, so a FIN would leave its socket in TIME_WAIT
   * for 60 s: one row per connection in the socket table the peer check reads, which a
   * connection-per-test suite grows by thousands. After Terminate it expects nothing more.
   */
  resetAppAfterGoodbye?: boolean | undefined;
  /**
   * Called once, before both sides are torn down, when the relay is torn down by an error, an
   * abort or a premature close (also the "normal" premature close after one side ended: a
   * reset HTTP/2 stream may have ended its readable side first). Not called when both
   * directions ended cleanly. `appTerminated`: the last message the application sent was
   * Terminate ('X'), i.e. it said goodbye and nothing of it can be running.
   */
  onTeardown?: ((err: Error, info: { appTerminated: boolean }) => void) | undefined;
}

export interface RelayResult {
  /** Bytes application → server. */
  bytesFromApp: number;
  /** Bytes server → application. */
  bytesFromUpstream: number;
  /** Why the relay ended, when not by a normal close of either side. */
  error: Error | undefined;
}

/**
 * Relay `app` ⇄ `upstream` until both directions are done. One side failing tears down both.
 * Never rejects: the result says how it ended.
 */
export async function relayPg(
  app: Duplex,
  upstream: Duplex,
  options: RelayOptions = {},
): Promise<RelayResult> {
  const result: RelayResult = { bytesFromApp: 0, bytesFromUpstream: 0, error: undefined };
  const observer =
    options.onQuery && options.queryEvents !== false
      ? new QueryObserver({ onQuery: options.onQuery, maxQueryLength: options.maxQueryLength })
      : undefined;
  // Passive 'data' listeners count and observe without an extra stream stage; pipe() still
  // governs flow (pause/resume) for both.
  // The last 5 bytes from the app: Terminate is exactly 'X' + int32 4.
  const tail = Buffer.alloc(5);
  app.on('data', (chunk: Buffer) => {
    result.bytesFromApp += chunk.length;
    observer?.push(chunk);
    if (chunk.length >= 5) chunk.copy(tail, 0, chunk.length - 5);
    else {
      tail.copyWithin(0, chunk.length);
      chunk.copy(tail, 5 - chunk.length);
    }
  });
  if (observer && options.room) pauseWhileFull(app, options.room);
  upstream.on('data', (chunk: Buffer) => {
    result.bytesFromUpstream += chunk.length;
  });
  // A socket that does not allow half-open connections closes its writable side as soon as its
  // peer ends: the other direction then sees a "premature close", which is a normal end.
  let cleanEnds = 0;
  let tornDown = false;
  const done = () => {
    cleanEnds++;
  };
  const fail = (err: Error) => {
    const normal = cleanEnds > 0 && (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE';
    if (!normal) result.error ??= err;
    if (!tornDown) {
      tornDown = true;
      try {
        options.onTeardown?.(err, { appTerminated: tail.equals(TERMINATE) });
      } catch {
        // A hook must never break the teardown.
      }
    }
    app.destroy();
    upstream.destroy();
  };
  const opts = options.signal ? { signal: options.signal } : {};
  let appEnded = false;
  app.once('end', () => {
    appEnded = true;
  });
  const toApp = options.resetAppAfterGoodbye
    ? pipeline(upstream, app, { ...opts, end: false }).then(() => {
        const socket = app as Partial<Socket>;
        if (appEnded && tail.equals(TERMINATE) && typeof socket.resetAndDestroy === 'function') {
          socket.resetAndDestroy();
        } else app.end();
      })
    : pipeline(upstream, app, opts);
  await Promise.all([pipeline(app, upstream, opts).then(done, fail), toApp.then(done, fail)]);
  return result;
}
