// Query events for a mysql tunnel the gateway relays to an agent: the gateway does not parse
// the connection there (the agent is the exit), but it sees both directions of the stream. The
// application's side starts with the connect-request frame (connect-wire.ts), then plain
// commands; the exit's side is the OK (or ERR) and then the server's responses. This observer
// skips the frame and feeds the same MysqlQueryObserver the exits use. Bounded like it: the
// frame is at most MAX_CONNECT_FRAME_PAYLOAD; a bad frame stops the observation (the agent
// refuses the stream anyway).
import { JsonFrameCollector } from '../json-frame.js';
import { decodeConnectFrame, MAX_CONNECT_FRAME_PAYLOAD } from './connect-wire.js';
import { MysqlQueryObserver, type MysqlQueryObserverOptions } from './observe.js';

export class MysqlStreamObserver {
  readonly #queries: MysqlQueryObserver;
  #frame: JsonFrameCollector | undefined = new JsonFrameCollector(MAX_CONNECT_FRAME_PAYLOAD);
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
    if (this.state !== 'pending' || !this.#frame) return;
    const got = this.#frame.push(chunk);
    if (got === 'pending') return;
    this.#frame = undefined;
    try {
      if (got === 'invalid') throw new Error('oversized');
      decodeConnectFrame(got.frame);
      this.state = 'connect';
    } catch {
      this.state = 'invalid';
      return;
    }
    if (got.rest.length > 0) this.#queries.app.push(got.rest);
  }

  /** Bytes from the exit towards the application (needed to map prepared statements). */
  pushFromExit(chunk: Buffer): void {
    if (this.state === 'connect') this.#queries.server.push(chunk);
  }
}
