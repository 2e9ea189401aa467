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

interface WritableInternals {
  _write(chunk: unknown, encoding: BufferEncoding, cb: (err?: Error | null) => void): void;
  _writev?(chunks: { chunk: unknown; encoding: BufferEncoding }[], cb: (err?: Error | null) => void): void;
  push(chunk: unknown, encoding?: BufferEncoding): boolean;
}

const EMPTY = Buffer.alloc(0);

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

export function meterStream(stream: ServerHttp2Stream): StreamMeter {
  const s = stream as unknown as WritableInternals;
  let charge: Charge | undefined;
  let onRefused: (() => void) | undefined;
  let opened = false;
  let refused = false;
  const meter: StreamMeter = {
    in: 0,
    out: 0,
    charge(c, r) {
      if (!c(meter.in)) {
        refused = true;
        return false;
      }
      charge = c;
      onRefused = r;
      return true;
    },
    open() {
      opened = true;
    },
  };
  const refuse = () => {
    if (refused) return;
    refused = true;
    // A pending write keeps END_STREAM back until the reset is out (see above); before the 200
    // a write would send the response headers, and the stream is refused with an error instead.
    if (opened && !stream.writableEnded && !stream.destroyed) stream.write(EMPTY);
    // After the current read or write has returned: resetting from inside it would re-enter it.
    queueMicrotask(() => onRefused?.());
  };
  // Writes are held once refused only on an open tunnel: a refusal's error body must go out.
  const held = () => refused && opened;
  const push = s.push.bind(stream);
  s.push = (chunk, encoding) => {
    if (chunk !== null) {
      const n = size(chunk);
      if (refused || (charge && !charge(n))) {
        refuse();
        return false;
      }
      meter.in += n;
    }
    return push(chunk, encoding);
  };
  const write = s._write.bind(stream);
  s._write = (chunk, encoding, cb) => {
    if (held()) return;
    if (opened) {
      const n = size(chunk);
      if (charge && !charge(n)) {
        refuse();
        return;
      }
      meter.out += n;
    }
    write(chunk, encoding, cb);
  };
  if (s._writev) {
    const writev = s._writev.bind(stream);
    s._writev = (chunks, cb) => {
      if (held()) return;
      if (opened) {
        const n = chunks.reduce((sum, c) => sum + size(c.chunk), 0);
        if (charge && !charge(n)) {
          refuse();
          return;
        }
        meter.out += n;
      }
      writev(chunks, cb);
    };
  }
  return meter;
}
