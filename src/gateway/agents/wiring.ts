// The gateway's agent side, put together (docs/agent.md): the registry (enrollment, credentials,
// revocation, also from other gateways), the hub (reverse HTTP/2 connections), their audit
// events, the events agents report (events.ts), and the session hooks that keep
// per-session roles on agents tied to session lifetimes (end → drop now; on every agent
// connection and periodically → the active list, so the agent reaps what it missed).
import type { Registry } from 'prom-client';
import { asCiportError } from '../../errors/index.js';
import type { Logger } from '../../log/logger.js';
import type { SessionManager } from '../../session/manager.js';
import type { Store } from '../../store/types.js';
import {
  AGENT_GATEWAYS_PATH,
  AGENT_SESSION_ENDED_PATH,
  AGENT_SESSIONS_ACTIVE_PATH,
} from '../../transport/wire.js';
import { createAgentMetrics } from '../metrics.js';
import { GATEWAY_HEARTBEAT_MS, type GatewayPeers } from '../peers.js';
import { type AgentApiDeps, linkRevocations } from './api.js';
import { auditAgentEvents } from './audit.js';
import { EventRefusals } from './event-refusals.js';
import { recordAgentEvent, typeLabel } from './events.js';
import { type AdvertisedTarget, AgentHub, REFUSAL_AUDIT_INTERVAL_MS } from './hub.js';
import { AgentRegistry, type AgentRegistryOptions, REVOCATION_SWEEP_MS } from './registry.js';
import type { AgentRoutes } from './relay.js';

/** Meta key of the last advertisement per target (session answers right after a restart). */
const KNOWN_TARGETS_KEY = 'agent_targets.v1';

export interface GatewayAgents {
  readonly hub: AgentHub;
  readonly registry: AgentRegistry;
  readonly routes: AgentRoutes;
  /** For handleAgentApi / handleAgentUpgrade. */
  apiDeps(authorize: AgentApiDeps['authorize'], maxBodyBytes: number): AgentApiDeps;
  /** Re-read the connected agents' bindings now (done every 30 s: other gateways' changes). */
  sweepBindings(): Promise<void>;
  close(): Promise<void>;
}

export async function startAgents(options: {
  store: Store;
  /** Where `ciport_agents_connected` and `ciport_agent_events_total` go. */
  registry?: Registry | undefined;
  manager: SessionManager;
  log: Logger;
  gatewayId: string;
  /** The gateways sharing the store: each agent is told about all of them and links to each. */
  peers: GatewayPeers;
  /** The deployment whose per-session roles agents create and reap (GatewayExits.deploymentId). */
  deploymentId: string;
  /** Send agents the active-session list this often (default 60 000 ms; 0: only on connect). */
  reapIntervalMs?: number;
  /** At most one `agent.event_refused` per agent this often (default 1 h). */
  eventRefusalWindowMs?: number;
  /** The registry's clock and credential lifetimes (agents/registry.ts has the defaults). */
  credentials?: AgentRegistryOptions | undefined;
}): Promise<GatewayAgents> {
  const { store, manager, log } = options;
  const registry = new AgentRegistry(store, options.credentials);
  const seen = new Set<string>();
  let metrics: ReturnType<typeof createAgentMetrics> | undefined;
  const refusals = new EventRefusals(store, log, options.eventRefusalWindowMs ?? REFUSAL_AUDIT_INTERVAL_MS);
  const hub: AgentHub = new AgentHub({
    log,
    onEvent: async (agent, event) => {
      try {
        const outcome = await recordAgentEvent(store, agent, event, seen, hub, refusals);
        metrics?.event(typeLabel(event.type), outcome);
      } catch (err) {
        metrics?.event(typeLabel(event.type), 'failed');
        throw err;
      }
    },
  });
  metrics = options.registry ? createAgentMetrics(options.registry, hub) : undefined;
  linkRevocations(registry, hub);
  const unaudit = auditAgentEvents(hub, store, log);
  const routes: AgentRoutes = { hub, sticky: new Map() };

  try {
    const known = await store.getMeta(KNOWN_TARGETS_KEY);
    if (known) hub.remember(JSON.parse(known) as AdvertisedTarget[]);
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'agent targets not read from the store');
  }

  const dynamicIn = (targets: readonly AdvertisedTarget[]) => targets.some((t) => t.dynamic);
  const sendActive = async () => {
    const ids = (await manager.list({ activeOnly: true })).map((s) => s.id);
    const answers = await hub.broadcast(
      AGENT_SESSIONS_ACTIVE_PATH,
      { ids, deployment: options.deploymentId },
      dynamicIn,
    );
    for (const a of answers) {
      if (a.status !== 200)
        log.warn({ agent: a.agent.id, status: a.status }, 'agent did not take the session list');
    }
  };
  const onConnected = () => {
    store
      .setMeta(KNOWN_TARGETS_KEY, JSON.stringify(hub.knownTargets()))
      .catch((err) => log.warn({ err: (err as Error).message }, 'agent targets not saved'));
    sendActive().catch((err) =>
      log.warn({ err: asCiportError(err).message }, 'session list to agents failed'),
    );
  };
  hub.on('agent.connected', onConnected);
  hub.on('agent.targets', onConnected);

  // Bindings changed on another gateway sharing the store reach this one with a re-read (the
  // admin's own gateway applies its change at once): at most REVOCATION_SWEEP_MS late.
  const sweepBindings = async () => {
    const live = new Set(hub.list().map((c) => c.agent));
    if (live.size === 0) return;
    for (const [id, targets] of await registry.bindings()) if (live.has(id)) hub.rebind(id, targets);
  };
  const bindingTimer = setInterval(() => {
    sweepBindings().catch((err) =>
      log.warn({ err: asCiportError(err).message }, 'agent bindings not re-read from the store'),
    );
  }, REVOCATION_SWEEP_MS);
  bindingTimer.unref();

  // Discovery: every gateway sharing the store registers where agents reach it and tells each
  // agent about the others, so an agent links to all of them (docs/agent.md, "Several gateways").
  const { peers } = options;
  const sendGateways = async () => {
    if (!peers.registered) return;
    const gateways = (await peers.alive()).map((g) => ({ id: g.id, url: g.url }));
    await hub.broadcast(AGENT_GATEWAYS_PATH, { self: options.gatewayId, gateways });
  };
  const onConnectedGateways = () => {
    sendGateways().catch((err) =>
      log.warn({ err: asCiportError(err).message }, 'gateway list to agents failed'),
    );
  };
  hub.on('agent.connected', onConnectedGateways);
  const discovery = setInterval(onConnectedGateways, GATEWAY_HEARTBEAT_MS);
  discovery.unref();

  const unEnded = manager.onEnded(async (record, reason) => {
    for (const t of record.targets) routes.sticky.delete(`${record.id}\0${t}`);
    hub.sessionEnded(record.id);
    // Agents that keep something per session: per-session roles, aws role credentials.
    const dynamic = new Set(
      record.targets.filter((t) => {
        const info = hub.targetInfo(t);
        return info?.dynamic === true || info?.protocol === 'aws';
      }),
    );
    if (dynamic.size === 0) return;
    const answers = await hub.broadcast(
      AGENT_SESSION_ENDED_PATH,
      { id: record.id, targets: record.targets, reason, deployment: options.deploymentId },
      (targets) => targets.some((t) => dynamic.has(t.name)),
    );
    for (const a of answers) {
      if (a.status !== 200) {
        // The agent reaps it when it next gets the active list (reconnect or the next period).
        log.warn(
          { agent: a.agent.id, session: record.id, status: a.status },
          'agent did not drop the session',
        );
      }
    }
  });

  const unwatch = await registry.watchRemoteRevocations().catch((err) => {
    log.warn({ err: asCiportError(err).message }, 'agent revocations from other gateways not watched');
    return async () => {};
  });

  const period = options.reapIntervalMs ?? 60_000;
  const timer =
    period > 0
      ? setInterval(() => {
          sendActive().catch((err) =>
            log.warn({ err: asCiportError(err).message }, 'session list to agents failed'),
          );
        }, period)
      : undefined;
  timer?.unref();

  return {
    hub,
    registry,
    routes,
    apiDeps: (authorize, maxBodyBytes) => ({ registry, hub, authorize, maxBodyBytes, log }),
    sweepBindings,
    async close() {
      if (timer) clearInterval(timer);
      clearInterval(discovery);
      clearInterval(bindingTimer);
      await refusals.close();
      hub.off('agent.connected', onConnected);
      hub.off('agent.targets', onConnected);
      hub.off('agent.connected', onConnectedGateways);
      unEnded();
      await hub.close();
      unaudit();
      await unwatch().catch(() => {});
    },
  };
}
