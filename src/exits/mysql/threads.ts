// Which upstream thread each application connection of a session is. The application only knows
// the id the local listener put in its handshake (the upstream's was unknown then), and clients
// cancel with `KILL QUERY <that id>` on a second connection — the mysql CLI on Ctrl-C, drivers
// on a query timeout. The exit registers every connection here; the relay rewrites such a KILL
// of a connection *of the same session* to the upstream id. Another session's ids are never
// found, so a job cannot reach other sessions' threads by guessing.
export class MysqlThreadRegistry {
  readonly #sessions = new Map<string, Map<number, number>>();

  /** Remember a live connection; call the returned function when it closes. */
  register(sessionId: string, localId: number, upstreamId: number): () => void {
    let ids = this.#sessions.get(sessionId);
    if (!ids) {
      ids = new Map();
      this.#sessions.set(sessionId, ids);
    }
    ids.set(localId, upstreamId);
    return () => {
      const current = this.#sessions.get(sessionId);
      if (current?.get(localId) !== upstreamId) return;
      current.delete(localId);
      if (current.size === 0) this.#sessions.delete(sessionId);
    };
  }

  lookup(sessionId: string, localId: number): number | undefined {
    return this.#sessions.get(sessionId)?.get(localId);
  }

  /** Forget a whole session (it ended). */
  dropSession(sessionId: string): void {
    this.#sessions.delete(sessionId);
  }

  /** Live connections known, over all sessions. */
  get size(): number {
    let n = 0;
    for (const ids of this.#sessions.values()) n += ids.size;
    return n;
  }
}
