// Cancel requests. The upstream's BackendKeyData reaches the application unchanged, so a
// CancelRequest that the application sends to its local listener carries the real key. The
// listener forwards it on a stream of its own (startup-wire kind "cancel"); the exit sends the
// real CancelRequest to the upstream only when that key belongs to a live connection of the
// same session — a job cannot cancel other sessions' queries by guessing keys.
import { serialize } from 'pg-protocol';
import { type BackendKey, openUpstreamSocket, type UpstreamTlsOptions } from './upstream.js';

export interface CancelTarget {
  host: string;
  port: number;
  tls?: UpstreamTlsOptions | undefined;
}

const keyOf = (k: BackendKey) => `${k.processId}:${k.secretKey}`;

/** Exit-side map: session → backend key → upstream address. */
export class CancelRegistry {
  readonly #sessions = new Map<string, Map<string, CancelTarget>>();

  /** Remember a live upstream connection; call the returned function when it closes. */
  register(sessionId: string, key: BackendKey, target: CancelTarget): () => void {
    let keys = this.#sessions.get(sessionId);
    if (!keys) {
      keys = new Map();
      this.#sessions.set(sessionId, keys);
    }
    const k = keyOf(key);
    keys.set(k, target);
    return () => {
      const current = this.#sessions.get(sessionId);
      if (current?.get(k) !== target) return;
      current.delete(k);
      if (current.size === 0) this.#sessions.delete(sessionId);
    };
  }

  lookup(sessionId: string, key: BackendKey): CancelTarget | undefined {
    return this.#sessions.get(sessionId)?.get(keyOf(key));
  }

  /** Forget a whole session (it ended). */
  dropSession(sessionId: string): void {
    this.#sessions.delete(sessionId);
  }

  /** Live connections known, over all sessions. */
  get size(): number {
    let n = 0;
    for (const keys of this.#sessions.values()) n += keys.size;
    return n;
  }
}

/**
 * Send a CancelRequest to the upstream (over TLS when the target uses TLS, as libpq 17 does)
 * and wait until the server closes the connection, which it does after acting on it. There is
 * no answer either way, by protocol design.
 */
export async function sendCancelRequest(
  target: CancelTarget,
  key: BackendKey,
  options: { timeoutMs?: number } = {},
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const socket = await openUpstreamSocket(target, Date.now() + timeoutMs);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    timer.unref();
    function done() {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    }
    socket.on('error', done);
    socket.on('close', done);
    socket.on('end', done);
    socket.resume();
    socket.end(serialize.cancel(key.processId, key.secretKey));
  });
}

/**
 * The exit's handling of a forwarded CancelRequest: send it upstream if the key belongs to
 * `sessionId`. Returns whether it was sent.
 */
export async function forwardCancel(
  registry: CancelRegistry,
  sessionId: string,
  key: BackendKey,
  options: { timeoutMs?: number } = {},
): Promise<boolean> {
  const target = registry.lookup(sessionId, key);
  if (!target) return false;
  await sendCancelRequest(target, key, options);
  return true;
}
