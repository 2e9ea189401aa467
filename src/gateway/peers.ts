// The gateways sharing this store (docs/gateway.md, "Several gateways"): one row per gateway in
// the store's `gateways` table, heartbeated while it runs. Agents learn from it where to link
// (agents/wiring.ts), and a draining gateway leaves its sessions to the others when one is alive
// (SessionManager.endAllForShutdown). Rows are written per gateway, never read-modified-written,
// so gateways starting and stopping at once cannot lose each other.
import type { Logger } from '../log/logger.js';
import type { GatewayRecord, GatewayStore } from '../store/types.js';

/** How often a gateway says it is alive; one unseen for three periods counts as gone. */
export const GATEWAY_HEARTBEAT_MS = 10_000;

export class GatewayPeers {
  readonly #store: GatewayStore;
  readonly #id: string;
  readonly #log: Logger;
  readonly #heartbeatMs: number;
  #url: string | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(store: GatewayStore, id: string, log: Logger, heartbeatMs = GATEWAY_HEARTBEAT_MS) {
    this.#store = store;
    this.#id = id;
    this.#log = log;
    this.#heartbeatMs = heartbeatMs;
  }

  get id(): string {
    return this.#id;
  }

  get registered(): boolean {
    return this.#url !== undefined;
  }

  /** Say where this gateway is reached (agents link there), and keep saying it. */
  async register(url: string): Promise<void> {
    this.#url = url;
    await this.#store.registerGateway({ id: this.#id, url, at: Date.now() });
    this.#timer ??= setInterval(() => {
      this.#beat().catch((err: Error) => this.#log.warn({ err: err.message }, 'gateway heartbeat failed'));
    }, this.#heartbeatMs);
    this.#timer.unref();
  }

  async #beat(): Promise<void> {
    const url = this.#url;
    if (url === undefined) return;
    const now = Date.now();
    // Gone from the table (removed by an operator, or a store restored): registered again.
    if (!(await this.#store.heartbeatGateway(this.#id, now))) {
      await this.#store.registerGateway({ id: this.#id, url, at: now });
    }
  }

  /** Gateways seen within three heartbeats, this one included. */
  alive(): Promise<GatewayRecord[]> {
    return this.#store.listGateways(Date.now() - 3 * this.#heartbeatMs);
  }

  /** The ids of the other gateways alive now. */
  async others(): Promise<string[]> {
    return (await this.alive()).map((g) => g.id).filter((id) => id !== this.#id);
  }

  /** Stop heartbeating and leave the table. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#url === undefined) return;
    this.#url = undefined;
    await this.#store.removeGateway(this.#id).catch(() => false);
  }
}
