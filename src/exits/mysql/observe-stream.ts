// Query events for a mysql tunnel the gateway relays to an agent: the gateway does not parse
// the connection there (the agent is the exit), but it sees both directions of the stream. The
// application's side starts with the connect-request frame (connect-wire.ts), then plain
// commands; the exit's side is the OK (or ERR) of the handshake and then the server's replies.
// This observer skips the frame and that first packet and feeds the same MysqlQueryObserver the
// exits use, so statements are reported as their replies begin, like at an exit. Bounded like
// it: the frame is at most MAX_CONNECT_FRAME_PAYLOAD; a bad frame stops the observation (the
// agent refuses the stream anyway); `room()` asks the gateway to stop reading from the
// application while too many commands wait for their reply.
import { JsonFrameCollector } from '../json-frame.js';
import { decodeConnectFrame, MAX_CONNECT_FRAME_PAYLOAD } from './connect-wire.js';
import { MysqlQueryObserver, type MysqlQueryObserverOptions } from './observe.js';

export class MysqlStreamObserver {
  readonly #options: MysqlQueryObserverOptions;
  #queries: MysqlQueryObserver | undefined;
  #frame: JsonFrameCollector | undefined = new JsonFrameCollector(MAX_CONNECT_FRAME_PAYLOAD);
  /** The exit's handshake answer: header bytes still to read, then payload bytes to skip. */
  readonly #answerHead = Buffer.alloc(4);
  #answerHeadFill = 0;
  #answerSkip = -1;
  /** `connect` once the frame is read; `invalid` when it could not be parsed. */
  state: 'pending' | 'connect' | 'invalid' = 'pending';

  constructor(options: Omit<MysqlQueryObserverOptions, 'capabilities' | 'collation' | 'onLost'>) {
    this.#options = options;
  }

  /** Bytes from the application (client side) towards the exit. */
  pushFromApp(chunk: Buffer): void {
    if (this.state === 'connect') {
      this.#queries?.app.push(chunk);
      return;
    }
    if (this.state !== 'pending' || !this.#frame) return;
    const got = this.#frame.push(chunk);
    if (got === 'pending') return;
    this.#frame = undefined;
    try {
      if (got === 'invalid') throw new Error('oversized');
      const request = decodeConnectFrame(got.frame);
      // The connection's own capabilities (the shape of its replies) and character set.
      this.#queries = new MysqlQueryObserver({
        ...this.#options,
        capabilities: request.capabilities,
        collation: request.collation,
      });
      this.state = 'connect';
    } catch {
      this.state = 'invalid';
      return;
    }
    if (got.rest.length > 0) this.#queries.app.push(got.rest);
  }

  /** Bytes from the exit towards the application: the handshake's answer, then the replies. */
  pushFromExit(chunk: Buffer): void {
    if (this.state !== 'connect' || !this.#queries) return;
    let rest = chunk;
    if (this.#answerSkip !== 0) {
      if (this.#answerSkip < 0) {
        const n = Math.min(4 - this.#answerHeadFill, rest.length);
        rest.copy(this.#answerHead, this.#answerHeadFill, 0, n);
        this.#answerHeadFill += n;
        rest = rest.subarray(n);
        if (this.#answerHeadFill < 4) return;
        this.#answerSkip = this.#answerHead.readUIntLE(0, 3);
      }
      const skip = Math.min(this.#answerSkip, rest.length);
      this.#answerSkip -= skip;
      rest = rest.subarray(skip);
      if (this.#answerSkip > 0 || rest.length === 0) return;
    }
    this.#queries.server.push(rest);
  }

  /** undefined, or a promise to wait for before reading more from the application. */
  room(): Promise<void> | undefined {
    return this.#queries?.room();
  }

  /** The stream is over: what the server never answered is reported (`unanswered`). */
  end(): void {
    this.#queries?.finish();
  }
}
