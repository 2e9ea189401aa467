// Catch the signals that ask ciport to stop, from the moment a command starts: a SIGTERM that
// arrives while the session is being created must still end that session, not kill the process
// and leave the session to its lease.
import { EventEmitter } from 'node:events';
import { constants } from 'node:os';

export const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export class SignalTrap {
  /** Re-emits every caught signal (a running child's forwarder listens here). */
  readonly relay = new EventEmitter();
  /** Resolves with the first signal caught. */
  readonly caught: Promise<NodeJS.Signals>;
  #first: NodeJS.Signals | undefined;
  #count = 0;
  readonly #source: EventEmitter;
  readonly #handlers = new Map<NodeJS.Signals, () => void>();

  constructor(signals: NodeJS.Signals[] = STOP_SIGNALS, source: EventEmitter = process) {
    this.#source = source;
    let resolve: (s: NodeJS.Signals) => void = () => {};
    this.caught = new Promise((r) => {
      resolve = r;
    });
    for (const sig of signals) {
      const handler = () => {
        this.#count += 1;
        this.#first ??= sig;
        resolve(sig);
        this.relay.emit(sig);
      };
      this.#handlers.set(sig, handler);
      source.on(sig, handler);
    }
  }

  get first(): NodeJS.Signals | undefined {
    return this.#first;
  }

  /** Signals caught so far. */
  get count(): number {
    return this.#count;
  }

  /**
   * While `work` runs (creating the session), a first signal waits for it so that the session
   * can be ended cleanly; a second one gives up at once with 128 + n, leaving the session (if
   * any) to its lease. Resolves with `work`'s result.
   */
  async during<T>(
    work: Promise<T>,
    exit: (code: number) => never = (code) => process.exit(code),
  ): Promise<T> {
    const impatient = (sig: NodeJS.Signals) => () => {
      if (this.#count >= 2) exit(128 + (constants.signals[sig] ?? 0));
    };
    const listeners = [...this.#handlers.keys()].map((sig) => [sig, impatient(sig)] as const);
    for (const [sig, fn] of listeners) this.relay.on(sig, fn);
    try {
      return await work;
    } finally {
      for (const [sig, fn] of listeners) this.relay.off(sig, fn);
    }
  }

  dispose(): void {
    for (const [sig, handler] of this.#handlers) this.#source.off(sig, handler);
    this.#handlers.clear();
  }
}
