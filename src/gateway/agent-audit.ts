// Audit events of the agent hub: `agent.connected` and `agent.disconnected` (typed in
// src/audit/events.ts). `agent.enrolled` / `agent.revoked` need their types added there first;
// until then AgentApiDeps.audit receives them untyped.
import { auditEvent } from '../audit/events.js';
import type { Store } from '../store/types.js';
import type { AgentHub } from './agent-hub.js';
import type { Logger } from './logger.js';

/** Write the hub's connect/disconnect events to the audit log. Returns an unsubscribe function. */
export function auditAgentEvents(hub: AgentHub, store: Pick<Store, 'appendAudit'>, log?: Logger): () => void {
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
  hub.on('agent.connected', onConnected);
  hub.on('agent.disconnected', onDisconnected);
  return () => {
    hub.off('agent.connected', onConnected);
    hub.off('agent.disconnected', onDisconnected);
  };
}
