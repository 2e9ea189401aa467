// The byte stream the exit's `http.Server` reads and writes: a Duplex wrapped around the tunnelled
// app connection (an HTTP/2 CONNECT stream in production) that never hands the connection an
// empty write and gives it exactly one Buffer per write.
//
// Why (Node 20.20, reproduced without ciport, see docs/http.md): http.Server ends a response with
// `socket.write('', 'latin1')` while the socket is corked, so the head (a latin1 string), the body
// and that empty string reach an Http2Stream as ONE writev. StreamBase copies the strings into a
// storage block owned by the write request, and Http2Stream queues the three buffers for nghttp2
// (NO_COPY: by pointer), attaching the request to the last one, the empty one. When nghttp2 asks
// the stream for more data, Http2Stream::Provider::Stream::OnRead completes empty buffers at the
// head of the queue at once (`Done(0)`), which frees the request and its storage while the head
// still waits in the session's outgoing list by pointer. The socket then sends freed memory: the
// first 16 bytes of the status line become malloc's free-list pointers (any later allocation could
// land there: a memory disclosure in the process that holds injected tokens).
//
// So the rule here: zero-length chunks are completed locally and never written; a corked batch is
// copied into one fresh Buffer (Buffer.concat), so every write the connection sees is a single
// non-empty Buffer whose request completes only after the socket write. Reads are passed through
// with backpressure; timeouts, end and destroy are forwarded both ways.
import { Duplex } from 'node:stream';

type TimeoutCapable = Duplex & { setTimeout?: (ms: number, cb?: () => void) => unknown };

/** A Duplex for `http.Server` over `conn` that never writes an empty chunk or a multi-chunk batch. */
export class Http1Transport extends Duplex {
  readonly #conn: TimeoutCapable;
  #pendingWrite: ((err?: Error | null) => void) | undefined;

  constructor(conn: Duplex) {
    super({ allowHalfOpen: true, decodeStrings: true });
    this.#conn = conn as TimeoutCapable;
    conn.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) conn.pause();
    });
    conn.once('end', () => this.push(null));
    conn.on('drain', () => this.#drained());
    conn.on('timeout', () => this.emit('timeout'));
    conn.on('error', (err) => this.destroy(err));
    conn.once('close', () => {
      this.#drained();
      if (!this.destroyed) this.destroy();
    });
    // A connection that went away before it was served: nothing to wait for.
    if (conn.destroyed) process.nextTick(() => this.destroy());
  }

  /** The wrapped connection (its lifetime is tied to this transport's). */
  get connection(): Duplex {
    return this.#conn;
  }

  override _read(): void {
    this.#conn.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#send(chunk, cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    // One copy, one write: the connection never sees a batch (nor its empty tail).
    this.#send(Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  #send(data: Buffer, cb: (err?: Error | null) => void): void {
    if (data.length === 0 || this.#conn.destroyed) {
      cb(this.#conn.destroyed ? new Error('connection closed') : null);
      return;
    }
    if (this.#conn.write(data)) cb();
    else this.#pendingWrite = cb;
  }

  #drained(): void {
    const cb = this.#pendingWrite;
    this.#pendingWrite = undefined;
    cb?.();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.#conn.destroyed || this.#conn.writableEnded) {
      cb();
      return;
    }
    this.#conn.end(() => cb());
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // A graceful end (both directions done) lets the connection close by itself; anything else
    // cuts it.
    if (err || !this.#conn.writableFinished || !this.#conn.readableEnded)
      this.#conn.destroy(err ?? undefined);
    cb(err);
  }

  /** http.Server and the upgrade path set idle timeouts on their socket: the connection's. */
  setTimeout(ms: number, cb?: () => void): this {
    this.#conn.setTimeout?.(ms);
    if (cb) this.once('timeout', cb);
    return this;
  }
}
