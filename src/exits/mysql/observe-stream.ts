// Query events for a mysql tunnel the gateway relays to an agent: the gateway does not parse
// the connection there (the agent is the exit), but it sees both directions of the stream. The
// application's side starts with the connect-request frame (connect-wire.ts), then plain
// commands; the exit's side is the OK (or ERR) and then the server's responses. This observer
// skips the frame and feeds the same MysqlQueryObserver the exits use. Bounded like it: the
// frame is at most MAX_CONNECT_FRAME_PAYLOAD; a bad frame stops the observation (the agent
// refuses the stream anyway).
import { decodeConnectFrame, MAX_CONNECT_FRAME_PAYLOAD } from './connect-wire.js';
import { MysqlQueryObserver, type MysqlQueryObserverOptions } from './observe.js';

const HEADER = 9;

export class MysqlStreamObserver {
  readonly #queries: MysqlQueryObserver;
  #frame: Buffer[] = [];
  #frameBytes = 0;
  #frameLength: number | undefined;
  /** `connect` once the frame is read; `invalid` when it could not be parsed. */
  state: 'pending' | 'connect' | 'invalid' = 'pending';

  constructor(options: MysqlQueryObserverOptions) {
    this.#queries = new MysqlQueryObserver(options);
  }

  /** Bytes from the application (client side) towards the exit. */
  pushFromApp(chunk: Buffer): void {
    if (this.state === 'connect') {
      this.#queries.app.push(chunk);
      return;
    }
    if (this.state !== 'pending') return;
    this.#frame.push(chunk);
    this.#frameBytes += chunk.length;
    if (this.#frameLength === undefined) {
      if (this.#frameBytes < HEADER) return;
      const head = Buffer.concat(this.#frame);
      this.#frame = [head];
      const n = head.readUInt32BE(5);
      if (n > MAX_CONNECT_FRAME_PAYLOAD) {
        this.#stop();
        return;
      }
      this.#frameLength = HEADER + n;
    }
    if (this.#frameBytes < this.#frameLength) return;
    const all = Buffer.concat(this.#frame);
    this.#frame = [];
    try {
      decodeConnectFrame(all.subarray(0, this.#frameLength));
      this.state = 'connect';
    } catch {
      this.#stop();
      return;
    }
    const rest = all.subarray(this.#frameLength);
    if (rest.length > 0) this.#queries.app.push(rest);
  }

  /** Bytes from the exit towards the application (needed to map prepared statements). */
  pushFromExit(chunk: Buffer): void {
    if (this.state === 'connect') this.#queries.server.push(chunk);
  }

  #stop(): void {
    this.state = 'invalid';
    this.#frame = [];
  }
}
