// Events an agent reported that the gateway refused (docs/agent.md, "Which events are accepted"):
// about a session or target this gateway never routed to that agent. They are acknowledged (the
// agent's outbox must not send them forever) and not recorded; each agent gets at most one
// `agent.event_refused` audit event per window, with the count of its window and one sample, so a
// rogue agent cannot grow the audit log however many it sends.
import { auditEvent } from '../../audit/events.js';
import type { Logger } from '../../log/logger.js';
import type { AuditStore } from '../../store/types.js';
import { printable } from '../../text/printable.js';
import type { AgentIdentity } from './hub.js';

/** Bound on the agents with a refusal window open (one gateway process). */
const MAX_AGENTS = 10_000;

interface Window {
  agent: AgentIdentity;
  since: number;
  count: number;
  /** The window's event is written: further refusals only count until the window closes. */
  reported: boolean;
  sample: { type: string; session: string; target: string };
}

export class EventRefusals {
  readonly #windows = new Map<string, Window>();
  readonly #timer: NodeJS.Timeout;

  constructor(
    private readonly store: Pick<AuditStore, 'appendAudit'>,
    private readonly log: Logger | undefined,
    private readonly windowMs: number,
  ) {
    // Closing windows writes the counts of refusals that came after the window's first event.
    this.#timer = setInterval(() => void this.#flush(false), Math.max(1_000, Math.floor(windowMs / 4)));
    this.#timer.unref();
  }

  /** One refused event. The window's first is audited at once (count 1), the rest at its end. */
  async refuse(agent: AgentIdentity, type: string, session: string, target: string): Promise<void> {
    const now = Date.now();
    let w = this.#windows.get(agent.id);
    if (w && now - w.since >= this.windowMs) {
      await this.#close(w);
      w = undefined;
    }
    if (!w) {
      w = { agent, since: now, count: 0, reported: false, sample: { type, session, target } };
      this.#windows.set(agent.id, w);
      if (this.#windows.size > MAX_AGENTS) {
        const oldest = this.#windows.values().next().value as Window;
        this.#windows.delete(oldest.agent.id);
        await this.#close(oldest);
      }
    }
    w.count++;
    if (w.reported) {
      this.log?.debug({ agent: agent.id, type, session, target }, 'agent event refused again');
      return;
    }
    w.reported = true;
    this.log?.warn(
      { agent: agent.id, name: agent.name, type, session, target },
      'agent reported an event about a session or target not routed to it: refused (not recorded)',
    );
    await this.#write(w, 1);
    w.count = 0;
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#flush(true);
  }

  async #flush(all: boolean): Promise<void> {
    const now = Date.now();
    for (const w of [...this.#windows.values()]) {
      if (all || now - w.since >= this.windowMs) await this.#close(w);
    }
  }

  /** End a window: its refusals after the first are audited as one count. */
  async #close(w: Window): Promise<void> {
    if (this.#windows.get(w.agent.id) === w) this.#windows.delete(w.agent.id);
    if (w.count === 0) return;
    this.log?.warn(
      { agent: w.agent.id, name: w.agent.name, count: w.count },
      'agent events refused (not recorded) in the last window',
    );
    await this.#write(w, w.count).catch((err) =>
      this.log?.error({ err: (err as Error).message }, 'audit agent.event_refused failed'),
    );
  }

  #write(w: Window, count: number): Promise<unknown> {
    return this.store.appendAudit(
      auditEvent('agent.event_refused', {
        agent: w.agent.name,
        agent_id: w.agent.id,
        count,
        window_ms: this.windowMs,
        sample_type: bounded(w.sample.type, 64),
        sample_session: bounded(w.sample.session, 64),
        sample_target: bounded(w.sample.target, 128),
      }),
    );
  }
}

/** Agent input shown in the audit log: bounded, control characters escaped. */
const bounded = (text: string, max: number) => printable(text.slice(0, max));
