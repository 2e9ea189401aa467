// Query events for a postgres tunnel the gateway relays to an agent: the gateway does not parse
// the connection there (the agent is the exit), but it sees the app's bytes, which are the
// startup frame (startup-wire.ts) followed by plain frontend messages. This observer skips the
// frame (noting whether it is a cancel), then hands the rest to the same QueryObserver the exits
// use. Bounded like it: the frame is at most MAX_STARTUP_FRAME_PAYLOAD; a bad frame stops the
// observation (the agent refuses the stream anyway).
import { QueryObserver, type QueryObserverOptions } from './relay.js';
import { decodeStartupFrame, MAX_STARTUP_FRAME_PAYLOAD } from './startup-wire.js';

const HEADER = 9;

export class PgStreamObserver {
  readonly #queries: QueryObserver;
  #frame: Buffer[] = [];
  #frameBytes = 0;
  #frameLength: number | undefined;
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
    if (this.kind !== 'pending') return;
    this.#frame.push(chunk);
    this.#frameBytes += chunk.length;
    if (this.#frameLength === undefined) {
      if (this.#frameBytes < HEADER) return;
      const head = Buffer.concat(this.#frame);
      this.#frame = [head];
      const n = head.readUInt32BE(5);
      if (n > MAX_STARTUP_FRAME_PAYLOAD) {
        this.#stop();
        return;
      }
      this.#frameLength = HEADER + n;
    }
    if (this.#frameBytes < this.#frameLength) return;
    const all = Buffer.concat(this.#frame);
    this.#frame = [];
    try {
      this.kind = decodeStartupFrame(all.subarray(0, this.#frameLength)).kind;
    } catch {
      this.#stop();
      return;
    }
    const rest = all.subarray(this.#frameLength);
    if (this.kind === 'startup' && rest.length > 0) this.#queries.push(rest);
  }

  #stop(): void {
    this.kind = 'invalid';
    this.#frame = [];
  }
}
