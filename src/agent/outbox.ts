// Audit events the agent produces (per-session roles created and dropped, http.request) wait
// here until the gateway acknowledges them. The gateway opens one event feed per connection
// (`POST /v1/events`): the agent writes event lines on the response, the gateway writes
// `{"ack": seq}` lines on the request once each event is in its audit log. Unacknowledged events
// are sent again on the next feed (a gateway restart, another gateway), so delivery is at least
// once; each carries `<boot>:<seq>` so a duplicate can be told apart.
import { randomBytes } from 'node:crypto';
import type { ServerHttp2Stream } from 'node:http2';
import type { Logger } from '../log/logger.js';
import type { AgentEventLine } from '../transport/wire.js';

/** Bound on an ack line from the gateway. */
const MAX_ACK_LINE = 256;

export class EventOutbox {
  readonly boot = randomBytes(6).toString('hex');
  readonly #max: number;
  readonly #log: Logger | undefined;
  #seq = 0;
  /** Unacknowledged events, ascending seq. */
  #pending: AgentEventLine[] = [];
  /** How many of #pending the current feed has been given. */
  #sent = 0;
  #feed: ServerHttp2Stream | undefined;
  #waitingDrain = false;
  dropped = 0;

  constructor(options: { max?: number; log?: Logger | undefined } = {}) {
    this.#max = options.max ?? 100_000;
    this.#log = options.log;
  }

  get pending(): number {
    return this.#pending.length;
  }

  /** Past the bound: the agent takes no new connections until the gateway caught up. */
  get full(): boolean {
    return this.#pending.length >= this.#max;
  }

  push(type: string, data: Record<string, unknown>): void {
    const seq = ++this.#seq;
    this.#pending.push({ id: `${this.boot}:${seq}`, seq, type, data });
    // Connections already open keep producing events; beyond twice the bound the oldest go
    // (logged) rather than memory growing without limit.
    if (this.#pending.length > this.#max * 2) {
      this.#pending.shift();
      this.#sent = Math.max(0, this.#sent - 1);
      this.dropped++;
      this.#log?.error({ dropped: this.dropped }, 'event outbox overflow: oldest audit event dropped');
    }
    this.#flush();
  }

  /** A new feed from the gateway (replaces the previous one): everything pending is sent again. */
  attach(feed: ServerHttp2Stream): void {
    if (this.#feed && !this.#feed.closed) this.#feed.close();
    this.#feed = feed;
    this.#sent = 0;
    this.#waitingDrain = false;
    feed.respond({ ':status': 200, 'content-type': 'application/x-ndjson' });
    feed.setEncoding('utf8');
    let partial = '';
    feed.on('data', (text: string) => {
      partial += text;
      let nl = partial.indexOf('\n');
      while (nl >= 0) {
        this.#ack(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
        nl = partial.indexOf('\n');
      }
      if (partial.length > MAX_ACK_LINE) feed.close();
    });
    feed.once('close', () => {
      if (this.#feed === feed) this.#feed = undefined;
    });
    this.#flush();
  }

  #ack(line: string): void {
    let seq: unknown;
    try {
      seq = (JSON.parse(line) as { ack?: unknown }).ack;
    } catch {
      return;
    }
    if (typeof seq !== 'number') return;
    let n = 0;
    while (n < this.#pending.length && (this.#pending[n] as AgentEventLine).seq <= seq) n++;
    if (n === 0) return;
    this.#pending.splice(0, n);
    this.#sent = Math.max(0, this.#sent - n);
  }

  #flush(): void {
    const feed = this.#feed;
    if (!feed || this.#waitingDrain || feed.closed || feed.destroyed) return;
    while (this.#sent < this.#pending.length) {
      const ok = feed.write(`${JSON.stringify(this.#pending[this.#sent])}\n`);
      this.#sent++;
      if (!ok) {
        this.#waitingDrain = true;
        feed.once('drain', () => {
          this.#waitingDrain = false;
          this.#flush();
        });
        return;
      }
    }
  }
}
