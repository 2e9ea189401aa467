// One application connection on a local listener (docs/architecture.md, "The tunnel lifecycle"):
// it owns the accepted socket and, once the tunnel is open, its HTTP/2 CONNECT stream. It settles
// exactly once — why it ended, the bytes both ways, whether the far side cut it — and settling is
// the one place that tears both down. The listener (tunnel.ts) counts, logs and reports from that
// one settlement.
import { type ClientHttp2Stream, constants as h2 } from 'node:http2';
import type { Socket } from 'node:net';
import { pipeline } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { resetStream } from '../transport/h2.js';

/** How one local connection ended. */
export interface ConnectionStats {
  id: number;
  target: string;
  /** App → gateway: the bytes read from the application. */
  sent: number;
  /** Gateway → app: the bytes written to the application. */
  received: number;
  ms: number;
  /** Why it closed when not normally. */
  error?: string | undefined;
  /** The RST_STREAM code the far side (gateway, exit, agent) cut the stream with, when it did. */
  farReset?: number | undefined;
}

const RST_REASONS: Record<number, string> = {
  [h2.NGHTTP2_CANCEL]: 'the gateway cancelled the stream (session ended or idle timeout)',
  [h2.NGHTTP2_CONNECT_ERROR]: 'the connection to the target failed',
  [h2.NGHTTP2_REFUSED_STREAM]: 'the gateway refused the stream',
  [h2.NGHTTP2_ENHANCE_YOUR_CALM]:
    "the session reached its rule's byte limit (CIPORT_E_BYTE_LIMIT): its connections are cut and new ones refused",
  [h2.NGHTTP2_INTERNAL_ERROR]: 'the gateway failed, or the agent carrying the connection went away',
};

/** What the far side meant by resetting a tunnel stream with `code`. */
export function resetReason(code: number): string {
  return RST_REASONS[code] ?? `the gateway reset the stream (HTTP/2 error ${code})`;
}

/** The code a stream was reset with, unless it closed cleanly (or not at all). */
function resetCode(stream: ClientHttp2Stream | undefined): number | undefined {
  const code = stream?.rstCode;
  return code !== undefined && code !== h2.NGHTTP2_NO_ERROR ? code : undefined;
}

/** An abnormal end reaches the application as a reset (RST), not as a clean end of data. */
function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  if (typeof socket.resetAndDestroy === 'function' && socket.readyState !== 'opening') {
    try {
      socket.resetAndDestroy();
      return;
    } catch {
      // Fall through to a plain destroy.
    }
  }
  socket.destroy();
}

export interface LocalConnectionOptions {
  id: number;
  target: string;
  /** Called once, when the connection settles (after both sides were torn down). */
  onSettle: (stats: ConnectionStats) => void;
}

export class LocalConnection {
  readonly id: number;
  readonly target: string;
  readonly socket: Socket;
  readonly #started = Date.now();
  readonly #onSettle: (stats: ConnectionStats) => void;
  #stream: ClientHttp2Stream | undefined;
  #stats: ConnectionStats | undefined;

  constructor(socket: Socket, options: LocalConnectionOptions) {
    this.socket = socket;
    this.id = options.id;
    this.target = options.target;
    this.#onSettle = options.onSettle;
    socket.setNoDelay(true);
    // Registered before any relay's listener: an application that fails while its tunnel is open
    // (a reset, a broken pipe) settles the connection before a pipeline passes the error on to
    // the stream — Node would reset that with INTERNAL_ERROR, and the connection would read as
    // cut by the gateway. A socket error that follows the stream's own end (a pipeline tearing
    // the socket down after a reset) is not the application's: the stream's failure settles it.
    socket.on('error', (err) => {
      const stream = this.#stream;
      if (stream && !stream.closed && !stream.destroyed) this.abort(`application socket: ${err.message}`);
    });
  }

  /** How it ended, once it has. */
  get stats(): ConnectionStats | undefined {
    return this.#stats;
  }

  /**
   * The tunnel is open: the connection owns `stream` from now on. False when the connection is
   * already over (the port closed, the protocol's login gave up waiting): the stream is reset at
   * once, so no stream outlives its connection.
   */
  attach(stream: ClientHttp2Stream): boolean {
    if (this.#stats) {
      resetStream(stream);
      return false;
    }
    this.#stream = stream;
    return true;
  }

  /**
   * Relay raw bytes both ways through `pipeline` (HTTP/2 flow control is the backpressure);
   * `greeting` goes to the application first (redis `+OK`). Each direction half-closes on its
   * own; the connection ends once both have.
   */
  relay(stream: ClientHttp2Stream, greeting?: Buffer): void {
    if (!this.attach(stream)) return;
    const { socket } = this;
    // The application may go away while the tunnel is being opened.
    if (socket.destroyed) {
      this.close('the application closed the connection first');
      return;
    }
    if (greeting && greeting.length > 0) socket.write(greeting);
    // Heard before the pipelines hear them: a far-side reset settles the connection, resetting
    // the application's socket, before a pipeline tears that socket down with a plain FIN (an
    // application must not read a cut connection as a clean end). Later resets find it settled.
    const farSide = () => {
      if (resetCode(stream) !== undefined) this.#streamFailed();
    };
    stream.on('aborted', farSide);
    stream.on('error', farSide);
    stream.on('close', farSide);
    let ended = 0;
    const halfDone = () => {
      if (++ended === 2) this.#settle('end');
    };
    pipeline(socket, stream, (err) => (err ? this.#streamFailed() : halfDone()));
    pipelineAsync(stream, socket, { end: false }).then(
      () =>
        // Node sends END_STREAM before RST_STREAM when the far side resets a stream whose
        // writable side is open (transport/h2.ts): this end may be the first half of a reset. Look
        // again once the frames that came with it are processed, so the application gets a
        // reset, not a clean FIN.
        setImmediate(() => {
          if (this.#stats) return;
          if (resetCode(stream) !== undefined) {
            this.#streamFailed();
            return;
          }
          socket.end();
          halfDone();
        }),
      () => this.#streamFailed(),
    );
  }

  /** Over, normally or not (`error`): the stream is reset if still open, the socket closed. */
  close(error?: string): void {
    this.#settle('close', error);
  }

  /** Failed: the stream is reset and the application's socket too (it must not read a clean end). */
  abort(error: string): void {
    this.#settle('reset', error);
  }

  /** The tunnel stream failed or was cut (a reset, the gateway connection lost, an abrupt end). */
  #streamFailed(): void {
    const code = resetCode(this.#stream);
    this.abort(code === undefined ? 'the tunnel stream ended abruptly' : resetReason(code));
  }

  /**
   * The one teardown: `end` (both directions ended cleanly: the stream closes on its own),
   * `close` or `reset` (the socket is reset too). Whatever comes after is a no-op.
   */
  #settle(how: 'end' | 'close' | 'reset', error?: string): void {
    if (this.#stats) return;
    const { socket } = this;
    const stream = this.#stream;
    // Read before this side resets the stream: a reset code now is the far side's.
    const farReset = how === 'end' ? undefined : resetCode(stream);
    const stats: ConnectionStats = {
      id: this.id,
      target: this.target,
      sent: socket.bytesRead,
      received: socket.bytesWritten,
      ms: Date.now() - this.#started,
      error,
      farReset,
    };
    this.#stats = stats;
    // The stream first: the gateway learns at once (RST_STREAM CANCEL) that the connection is over.
    if (stream && how !== 'end') resetStream(stream);
    if (how === 'reset') resetSocket(socket);
    else socket.destroy();
    this.#onSettle(stats);
  }
}
