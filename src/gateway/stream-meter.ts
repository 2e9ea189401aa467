// Counts the DATA bytes of one tunnel stream, both ways, at the one place every exit's bytes pass
// on the gateway — its own exits and the agents' alike: what the client sends enters the stream
// through push(), what goes back leaves through _write/_writev. Wrapping those two on the stream
// (instead of piping through a Transform) leaves every exit unchanged and costs one call per
// chunk. A refused chunk is dropped, never carried; `onRefused` then resets the stream.
//
// The wrappers go on when the stream is accepted, before anything awaits: a client may send data
// in the same flight as its CONNECT, and those bytes sit in the stream's buffer while the session
// is looked up and the exit dialled; metered only once the tunnel was open, they were carried
// uncharged (a short connection per budget's worth bypassed `limits.bytes`).
//
// Once refused, writes are held (their callbacks never run): Node's close(code) ends the writable
// side first, and an END_STREAM that goes out before the RST_STREAM would close a stream the
// client has half-closed cleanly, so the app would read a truncated answer as a normal end.
import type { ServerHttp2Stream } from 'node:http2';

type Charge = (n: number) => boolean;
type Cb = (err?: Error | null) => void;
type Chunks = { chunk: unknown; encoding: BufferEncoding }[];

interface WritableInternals {
  _write(chunk: unknown, encoding: BufferEncoding, cb: Cb): void;
  _writev?(chunks: Chunks, cb: Cb): void;
  push(chunk: unknown, encoding?: BufferEncoding): boolean;
  [METER]?: Meter;
}

const EMPTY = Buffer.alloc(0);
/** The stream's meter, on the stream itself: the three wrappers below are shared by all streams. */
const METER = Symbol('ciport.meter');

const size = (chunk: unknown): number =>
  typeof chunk === 'string' ? Buffer.byteLength(chunk) : ((chunk as Uint8Array | null)?.byteLength ?? 0);

/** Bytes the stream carried: `in` from the client, `out` to it. */
export interface Metered {
  in: number;
  out: number;
}

/**
 * A stream's meter, installed when the stream is accepted (before anything can be read from it,
 * so early data — sent right after HEADERS, before the exit is dialled or an agent has the
 * stream — is counted like the rest), charged once the tunnel knows its session's budget.
 */
export interface StreamMeter extends Metered {
  /**
   * Charge the budget from now on, the client's bytes buffered so far first. False: those
   * crossed it (the caller refuses the stream; `onRefused` is not called for them).
   */
  charge(charge: Charge, onRefused: () => void): boolean;
  /** The tunnel answered 200: bytes to the client count from now on (refusal bodies do not). */
  open(): void;
}

class Meter implements StreamMeter {
  in = 0;
  out = 0;
  opened = false;
  refused = false;
  budget: Charge | undefined = undefined;
  onRefused: (() => void) | undefined = undefined;
  readonly stream: ServerHttp2Stream;
  /** The stream's own methods (its prototype's), called by the shared wrappers. */
  readonly push: WritableInternals['push'];
  readonly write: WritableInternals['_write'];
  readonly writev: WritableInternals['_writev'];

  constructor(stream: ServerHttp2Stream) {
    const s = stream as unknown as WritableInternals;
    this.stream = stream;
    this.push = s.push;
    this.write = s._write;
    this.writev = s._writev;
  }

  charge(c: Charge, r: () => void): boolean {
    if (!c(this.in)) {
      this.refused = true;
      return false;
    }
    this.budget = c;
    this.onRefused = r;
    return true;
  }

  open(): void {
    this.opened = true;
  }

  /** Writes are held once refused only on an open tunnel: a refusal's error body must go out. */
  get held(): boolean {
    return this.refused && this.opened;
  }

  refuse(): void {
    if (this.refused) return;
    this.refused = true;
    const stream = this.stream;
    // A pending write keeps END_STREAM back until the reset is out (see above); before the 200
    // a write would send the response headers, and the stream is refused with an error instead.
    if (this.opened && !stream.writableEnded && !stream.destroyed) stream.write(EMPTY);
    // After the current read or write has returned: resetting from inside it would re-enter it.
    queueMicrotask(() => this.onRefused?.());
  }
}

function meteredPush(this: WritableInternals, chunk: unknown, encoding?: BufferEncoding): boolean {
  const m = this[METER] as Meter;
  if (chunk !== null) {
    const n = size(chunk);
    if (m.refused || (m.budget && !m.budget(n))) {
      m.refuse();
      return false;
    }
    m.in += n;
  }
  return m.push.call(this, chunk, encoding);
}

function meteredWrite(this: WritableInternals, chunk: unknown, encoding: BufferEncoding, cb: Cb): void {
  const m = this[METER] as Meter;
  if (m.held) return;
  if (m.opened) {
    const n = size(chunk);
    if (m.budget && !m.budget(n)) {
      m.refuse();
      return;
    }
    m.out += n;
  }
  m.write.call(this, chunk, encoding, cb);
}

function meteredWritev(this: WritableInternals, chunks: Chunks, cb: Cb): void {
  const m = this[METER] as Meter;
  if (m.held) return;
  if (m.opened) {
    let n = 0;
    for (const c of chunks) n += size(c.chunk);
    if (m.budget && !m.budget(n)) {
      m.refuse();
      return;
    }
    m.out += n;
  }
  (m.writev as NonNullable<Meter['writev']>).call(this, chunks, cb);
}

export function meterStream(stream: ServerHttp2Stream): StreamMeter {
  const s = stream as unknown as WritableInternals;
  const meter = new Meter(stream);
  // The meter is one object with fields; the wrappers are shared functions that find it on the
  // stream (per stream closures and bound methods were ~1 KB of an idle tunnel's heap).
  s[METER] = meter;
  s.push = meteredPush;
  s._write = meteredWrite;
  if (meter.writev) s._writev = meteredWritev;
  return meter;
}
