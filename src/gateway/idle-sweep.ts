// The idle timeout of tunnel connections (`sessions.connection_idle_timeout`), for all of them
// with one timer: a sweep that compares each tunnel's byte count (its stream meter's) with what
// it saw last time, instead of a timer per stream. An HTTP/2 stream's own setTimeout() costs a
// Timeout, a bound function, a once-wrapper and a listener per stream and is refreshed on every
// chunk; the meter counts every chunk anyway. A tunnel idles out between `idleMs` and
// `idleMs + interval` after its last DATA either way (the interval is a tenth of `idleMs`, at
// most 5 s).
import type { Metered } from './stream-meter.js';

/** What the sweep tracks of one tunnel (fields on the tunnel itself: nothing allocated). */
export interface IdleWatched {
  readonly metered: Metered;
  /** in + out at the last sweep that saw them change. */
  idleSeen: number;
  /** When (Date.now()) that sweep ran, or when the tunnel was added. */
  idleSince: number;
  /** No DATA for `idleMs`: end it (called once; the tunnel is removed first). */
  idled(): void;
}

export class IdleSweep {
  readonly #watched = new Set<IdleWatched>();
  readonly #idleMs: number;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(idleMs: number) {
    this.#idleMs = idleMs;
    this.#intervalMs = Math.max(10, Math.min(5_000, Math.floor(idleMs / 10)));
  }

  get idleMs(): number {
    return this.#idleMs;
  }

  get size(): number {
    return this.#watched.size;
  }

  add(w: IdleWatched): void {
    w.idleSeen = w.metered.in + w.metered.out;
    w.idleSince = Date.now();
    this.#watched.add(w);
    if (!this.#timer) {
      this.#timer = setInterval(() => this.sweep(), this.#intervalMs);
      this.#timer.unref();
    }
  }

  delete(w: IdleWatched): void {
    this.#watched.delete(w);
    if (this.#watched.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** One pass (the timer's; exposed for tests). */
  sweep(now = Date.now()): void {
    for (const w of this.#watched) {
      const seen = w.metered.in + w.metered.out;
      if (seen !== w.idleSeen) {
        w.idleSeen = seen;
        w.idleSince = now;
      } else if (now - w.idleSince >= this.#idleMs) {
        this.delete(w);
        w.idled();
      }
    }
  }
}
