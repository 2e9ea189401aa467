// Audit events of the agent hub: `agent.connected`, `agent.disconnected` and
// `agent.target_refused` (bounded by the hub: once per agent and target per interval, and a
// bounded number of distinct names per agent). `agent.event_refused`: event-refusals.ts.
// `agent.enrolled`, `agent.revoked` and `agent.targets_changed` come from the registry.
import { auditEvent } from '../../audit/events.js';
import type { Logger } from '../../log/logger.js';
import type { AuditStore } from '../../store/types.js';
import type { AgentHub } from './hub.js';

/** Write the hub's connect/disconnect events to the audit log. Returns an unsubscribe function. */
export function auditAgentEvents(
  hub: AgentHub,
  store: Pick<AuditStore, 'appendAudit'>,
  log?: Logger,
): () => void {
  const fail = (err: unknown) => log?.error({ err: (err as Error).message }, 'audit agent event failed');
  const onConnected: Parameters<typeof hub.on<'agent.connected'>>[1] = (a) => {
    store
      .appendAudit(
        auditEvent('agent.connected', {
          agent: a.name,
          targets: a.targets,
          ...(a.remote ? { remote: a.remote } : {}),
          ...(a.version ? { version: a.version } : {}),
        }),
      )
      .catch(fail);
  };
  const onDisconnected: Parameters<typeof hub.on<'agent.disconnected'>>[1] = (a) => {
    store
      .appendAudit(
        auditEvent('agent.disconnected', {
          agent: a.name,
          reason: a.reason,
          targets: a.targets,
          ...(a.remote ? { remote: a.remote } : {}),
        }),
      )
      .catch(fail);
  };
  const onRefused: Parameters<typeof hub.on<'agent.target_refused'>>[1] = (r) => {
    store
      .appendAudit(
        auditEvent('agent.target_refused', {
          agent: r.name,
          agent_id: r.agent,
          target: r.target,
          connection: r.connection,
          ...(r.remote ? { remote: r.remote } : {}),
          ...(r.repeats > 0 ? { repeats: r.repeats } : {}),
          ...(r.reason ? { reason: r.reason } : {}),
          ...(r.pinned !== undefined ? { pinned: r.pinned } : {}),
          ...(r.advertised !== undefined ? { advertised: r.advertised } : {}),
          ...(r.changed !== undefined ? { changed: r.changed } : {}),
          ...(r.distinct !== undefined ? { distinct: r.distinct } : {}),
        }),
      )
      .catch(fail);
  };
  hub.on('agent.connected', onConnected);
  hub.on('agent.disconnected', onDisconnected);
  hub.on('agent.target_refused', onRefused);
  return () => {
    hub.off('agent.connected', onConnected);
    hub.off('agent.disconnected', onDisconnected);
    hub.off('agent.target_refused', onRefused);
  };
}
