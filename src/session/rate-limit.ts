// Token buckets keyed by a string (issuer + subject for session creation). Each key holds
// `burst` tokens and regains `perMinute` tokens a minute; a request takes one. Full buckets are
// forgotten, so the map only holds keys that were used recently.

export interface RateLimitOptions {
  perMinute: number;
  burst: number;
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: RateLimitOptions) {
    this.#perMs = options.perMinute / 60_000;
    this.#burst = options.burst;
    this.#now = options.now ?? Date.now;
  }

  /** Take one token for `key`: 0 when allowed, otherwise ms until a token is available. */
  take(key: string): number {
    const now = this.#now();
    this.#sweep(now);
    const b = this.#buckets.get(key) ?? { tokens: this.#burst, at: now };
    b.tokens = Math.min(this.#burst, b.tokens + (now - b.at) * this.#perMs);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      this.#buckets.set(key, b);
      return 0;
    }
    this.#buckets.set(key, b);
    return Math.ceil((1 - b.tokens) / this.#perMs);
  }

  #lastSweep = 0;
  #sweep(now: number): void {
    if (now - this.#lastSweep < 60_000 && this.#buckets.size < 10_000) return;
    this.#lastSweep = now;
    for (const [key, b] of this.#buckets) {
      if (b.tokens + (now - b.at) * this.#perMs >= this.#burst) this.#buckets.delete(key);
    }
  }
}
