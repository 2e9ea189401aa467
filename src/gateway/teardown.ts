// One stack of clean-ups for a process being built: each part registers how to release itself as
// soon as it exists, so a failure half-way through start-up releases exactly what was made, and
// drain and close release the same parts in reverse order of their making.

/** `graceful`: drain (let work finish) rather than close at once. */
type Cleanup = (graceful: boolean) => unknown;

export class Teardown {
  readonly #steps: { name: string; run: Cleanup }[] = [];
  #unwound: Promise<void> | undefined;

  /** Register `run` to release the part named `name` (for the error report). */
  defer(name: string, run: Cleanup): void {
    if (this.#unwound) throw new Error(`teardown: ${name} registered after unwinding started`);
    this.#steps.push({ name, run });
  }

  /**
   * Run every step once, last registered first, each even when an earlier one failed. Rejects
   * with the first failure (its part named) once all ran. Later calls get the same promise.
   */
  unwind(graceful: boolean, onError?: (name: string, err: unknown) => void): Promise<void> {
    this.#unwound ??= (async () => {
      let first: unknown;
      for (const step of this.#steps.reverse()) {
        try {
          await step.run(graceful);
        } catch (err) {
          onError?.(step.name, err);
          first ??= err;
        }
      }
      if (first !== undefined) throw first;
    })();
    return this.#unwound;
  }
}

/** `fn` run at most once; later calls get the first call's promise. */
export function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let result: Promise<T> | undefined;
  return () => {
    result ??= fn();
    return result;
  };
}
