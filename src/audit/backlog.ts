// Audit entries that are produced faster than the store commits them (a client pipelining
// statements) must not pile up in memory, and must not be dropped. The backlog counts entries
// handed to the store and not yet committed — statements for `query` events (an event carries
// a connection's statements of one window: QueryBatch), one per `http.request` event; past
// `max`, producers are told to wait (`room()` returns a promise) and the relays that feed them
// pause reading from the application until the backlog is down to half. Memory stays bounded by
// `max` entries plus what one read chunk and one open window per connection hold; nothing is
// dropped.
export class AuditBacklog {
  readonly max: number;
  #pending = 0;
  #waiters: Array<() => void> = [];
  /** How often producers had to wait, and the most events ever pending (tests, benchmark). */
  stalls = 0;
  peak = 0;

  constructor(max = 10_000) {
    this.max = max;
  }

  get pending(): number {
    return this.#pending;
  }

  /** Count `write` (an append to the store) as `weight` entries until it settles. */
  track<T>(write: Promise<T>, weight = 1): Promise<T> {
    this.#pending += weight;
    if (this.#pending > this.peak) this.peak = this.#pending;
    return write.finally(() => {
      this.#pending -= weight;
      if (this.#pending <= this.max / 2 && this.#waiters.length > 0) {
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const w of waiters) w();
      }
    });
  }

  /** undefined while there is room; else a promise that resolves once the backlog halved. */
  room(): Promise<void> | undefined {
    if (this.#pending < this.max) return undefined;
    this.stalls++;
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/**
 * Watch `source` (a readable the app writes into) and pause it while `room()` says wait. Checked
 * on every chunk, so even when a pipe resumes the source on its own 'drain', the next chunk pauses
 * it again: the backlog overshoots by at most one chunk's worth of events per connection.
 */
export function pauseWhileFull(
  source: { pause(): unknown; resume(): unknown; on(event: 'data', fn: () => void): unknown },
  room: () => Promise<void> | undefined,
): void {
  let waiting = false;
  source.on('data', () => {
    if (waiting) return;
    const wait = room();
    if (!wait) return;
    waiting = true;
    source.pause();
    void wait.then(() => {
      waiting = false;
      source.resume();
    });
  });
}
