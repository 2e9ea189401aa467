// Query events for a postgres tunnel the gateway relays to an agent: the gateway does not parse
// the connection there (the agent is the exit), but it sees the app's bytes, which are the
// startup frame (startup-wire.ts) followed by plain frontend messages. This observer skips the
// frame (noting whether it is a cancel), then hands the rest to the same QueryObserver the exits
// use. Bounded like it: the frame is at most MAX_STARTUP_FRAME_PAYLOAD; a bad frame stops the
// observation (the agent refuses the stream anyway).
import { JsonFrameCollector } from '../json-frame.js';
import { QueryObserver, type QueryObserverOptions } from './relay.js';
import { decodeStartupFrame, MAX_STARTUP_FRAME_PAYLOAD } from './startup-wire.js';

export class PgStreamObserver {
  readonly #queries: QueryObserver;
  #frame: JsonFrameCollector | undefined = new JsonFrameCollector(MAX_STARTUP_FRAME_PAYLOAD);
  /** `startup` or `cancel` once the frame is read; `invalid` when it could not be parsed. */
  kind: 'pending' | 'startup' | 'cancel' | 'invalid' = 'pending';

  constructor(options: QueryObserverOptions) {
    this.#queries = new QueryObserver(options);
  }

  push(chunk: Buffer): void {
    if (this.kind === 'startup') {
      this.#queries.push(chunk);
      return;
    }
    if (this.kind !== 'pending' || !this.#frame) return;
    const got = this.#frame.push(chunk);
    if (got === 'pending') return;
    this.#frame = undefined;
    try {
      if (got === 'invalid') throw new Error('oversized');
      this.kind = decodeStartupFrame(got.frame).kind;
    } catch {
      this.kind = 'invalid';
      return;
    }
    if (this.kind === 'startup' && got.rest.length > 0) this.#queries.push(got.rest);
  }
}
