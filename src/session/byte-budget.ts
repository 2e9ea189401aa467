// A session's byte budget (`rules[].limits.bytes`): every byte its tunnels carry, both ways,
// across all its connections, counted where the gateway relays them. Once a charge would take
// the total past the limit the budget is spent for good: that chunk is not carried, and the
// session refuses every later byte and connection (the session itself lives on until it ends).
// Counts live in this gateway process only (docs/policy.md, "Limits").

export class ByteBudget {
  /** Bytes carried so far (never more than the limit). */
  used = 0;
  /** Set by whoever reported the crossing (log, audit), so that it is reported once. */
  reported = false;
  #exceeded = false;

  /** `limit` undefined: no limit (the gateway does not meter such sessions). */
  constructor(readonly limit: number | undefined) {}

  get exceeded(): boolean {
    return this.#exceeded;
  }

  /** Count `n` bytes about to be carried; false when they may not be (the budget is spent). */
  charge(n: number): boolean {
    if (this.#exceeded) return false;
    if (this.limit !== undefined && this.used + n > this.limit) {
      this.#exceeded = true;
      return false;
    }
    this.used += n;
    return true;
  }
}
