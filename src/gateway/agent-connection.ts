// A session's tunnel connection whose target an agent serves: what `handleConnect` (tunnel.ts)
// runs instead of its own Tunnel when the target is not one the gateway exits to itself but a
// connected agent advertises it. Same bookkeeping as Tunnel: attached to the live session (cut
// when it ends), metrics, `connection.opened` / `connection.closed` with `exit: <agent name>`.
// Tested with a fake session manager and store in test/agent/agent-connection.test.ts.
import { randomBytes } from 'node:crypto';
import type { ServerHttp2Stream } from 'node:http2';
import { auditEvent } from '../audit/events.js';
import { asCiportError } from '../errors/index.js';
import type { LiveSession, SessionConnection } from '../session/manager.js';
import { principalSummary } from '../session/principal.js';
import type { EndReason } from '../session/reasons.js';
import type { AgentHub } from './agent-hub.js';
import { relayViaAgent } from './agent-tunnel.js';
import type { TunnelDeps } from './tunnel.js';

export class AgentTunnel implements SessionConnection {
  readonly id = `con_${randomBytes(12).toString('base64url')}`;
  readonly target: string;
  readonly done: Promise<void>;
  #resolveDone!: () => void;
  readonly #cut = new AbortController();
  #reason: string | undefined;

  constructor(
    private readonly deps: TunnelDeps,
    private readonly hub: AgentHub,
    private readonly live: LiveSession,
    target: string,
    private readonly stream: ServerHttp2Stream,
  ) {
    this.target = target;
    this.done = new Promise((resolve) => {
      this.#resolveDone = resolve;
    });
  }

  cut(reason: EndReason): void {
    this.#reason ??= `session ended (${reason})`;
    this.#cut.abort();
  }

  /** Attach first (`manager.attach(live, tunnel)`), then run. Never throws. */
  async run(): Promise<void> {
    const { metrics, manager, log, store } = this.deps;
    const record = this.live.record;
    const base = (agent: string) => ({
      session: record.id,
      connection: this.id,
      principal: principalSummary(record.principal),
      target: this.target,
      rule: record.rule,
      exit: agent,
    });
    const started = Date.now();
    let opened = false;
    try {
      const result = await relayViaAgent(this.hub, this.stream, this.target, {
        connectionId: this.id,
        idleTimeoutMs: this.deps.idleTimeoutMs,
        signal: AbortSignal.any([this.#cut.signal, this.live.abort.signal]),
        onOpen: (agent) => {
          opened = true;
          metrics.tunnelsActive.inc();
          metrics.tunnelsOpened.inc({ target: this.target });
          log.info(
            { session: record.id, connection: this.id, target: this.target, agent: agent.name },
            'tunnel opened via agent',
          );
          void store.appendAudit(auditEvent('connection.opened', base(agent.name))).catch(() => {});
        },
      });
      if (result.refused) {
        metrics.tunnelsRefused.inc({ code: result.refused.code });
        log.warn(
          { session: record.id, target: this.target, code: result.refused.code },
          'tunnel via agent refused',
        );
        return;
      }
      if (!opened) return;
      const error = this.#reason ?? result.error;
      metrics.tunnelsActive.dec();
      metrics.tunnelBytes.inc({ target: this.target, direction: 'up' }, result.bytesToTarget);
      metrics.tunnelBytes.inc({ target: this.target, direction: 'down' }, result.bytesFromTarget);
      log.info(
        {
          session: record.id,
          connection: this.id,
          target: this.target,
          agent: result.agent?.name,
          bytes_to_target: result.bytesToTarget,
          bytes_from_target: result.bytesFromTarget,
          ...(error ? { reason: error } : {}),
        },
        'tunnel via agent closed',
      );
      await store
        .appendAudit(
          auditEvent('connection.closed', {
            ...base(result.agent?.name ?? 'agent'),
            bytes_to_target: result.bytesToTarget,
            bytes_from_target: result.bytesFromTarget,
            duration_ms: Date.now() - started,
            ...(error ? { error } : {}),
          }),
        )
        .catch((err) => log.error({ connection: this.id, err: asCiportError(err).message }, 'audit failed'));
    } finally {
      manager.detach(this.live, this);
      this.#resolveDone();
    }
  }
}
