// The gateway as exit for its own `postgres` and `http` targets (docs/gateway.md, "Protocol
// exits"): per-target upstream settings built once at start (a bad secret fails the start), one
// CancelRegistry for the process, the per-session role manager, and the session hooks that tie
// them to session lifetimes (cancel keys dropped and roles revoked when a session ends; roles
// created at session start when a target says so; a role reaper at start and periodically).

import { Counter, type Registry } from 'prom-client';
import { auditEvent } from '../audit/events.js';
import type { GatewayConfig, TargetConfig } from '../config/schema.js';
import {
  DynamicRoles,
  deploymentIdOf,
  dynamicSpecFromTarget,
  type RoleSession,
} from '../credentials/pg-roles.js';
import { asCiportError } from '../errors/index.js';
import { createHttpExit, type HttpExit, httpInjectionFrom } from '../exits/http/index.js';
import { CancelRegistry, type PgUpstreamTarget, pgUpstreamFromTarget } from '../exits/postgres/index.js';
import type { SessionManager } from '../session/manager.js';
import { principalSummary } from '../session/principal.js';
import type { SessionRecord, Store } from '../store/types.js';
import type { Logger } from './logger.js';

export interface GatewayExits {
  readonly cancelRegistry: CancelRegistry;
  /** Upstream settings of each postgres target (static credentials already resolved). */
  readonly pg: ReadonlyMap<string, PgUpstreamTarget>;
  readonly http: ReadonlyMap<string, HttpExit>;
  readonly roles: DynamicRoles;
  /**
   * This deployment's id (kept in the store; the same for every gateway sharing it): the tag of
   * every per-session role it or its agents create, and the only roles it reaps.
   */
  readonly deploymentId: string;
  /** Roles a per-session role gets on `target`: its granting rule's `grants`, else the target's. */
  grantsFor(record: Pick<SessionRecord, 'rule' | 'targetRules'>, target: string): string[] | undefined;
  /** A reloaded configuration's rules (SIGHUP): roles created from now on get their grants. */
  useRules(rules: GatewayConfig['rules']): void;
  /** Run the role reaper now (also runs at start and every `reapIntervalMs`). */
  reap(): Promise<number>;
  close(): void;
}

export interface StartExitsOptions {
  config: Readonly<GatewayConfig>;
  targets: ReadonlyMap<string, TargetConfig>;
  store: Store;
  manager: SessionManager;
  log: Logger;
  /** Role reaper period (default 60 s; 0 disables the periodic run). */
  reapIntervalMs?: number;
  /** Where `ciport_credential_revoke_failures_total` goes. */
  registry?: Registry | undefined;
}

export async function startExits(options: StartExitsOptions): Promise<GatewayExits> {
  const { config, store, manager, log } = options;
  const pg = new Map<string, PgUpstreamTarget>();
  const http = new Map<string, HttpExit>();
  const specs = [];
  for (const target of options.targets.values()) {
    if (target.protocol === 'postgres') {
      if (!target.credentials?.user && !target.credentials?.dynamic) {
        // Served elsewhere (an agent) or not configured: this gateway does not exit to it.
        log.warn({ target: target.name }, 'postgres target without credentials: not served by this gateway');
        continue;
      }
      pg.set(target.name, pgUpstreamFromTarget(target));
      const spec = dynamicSpecFromTarget(target);
      if (spec) specs.push(spec);
    } else if (target.protocol === 'http') {
      try {
        http.set(
          target.name,
          createHttpExit(
            {
              name: target.name,
              address: target.address,
              tls: target.tls,
              injection: httpInjectionFrom(target),
            },
            {
              connectTimeoutMs: config.sessions.connect_timeout,
              idleTimeoutMs: config.sessions.connection_idle_timeout,
            },
          ),
        );
      } catch (err) {
        for (const exit of http.values()) exit.close();
        throw err;
      }
    }
  }

  const sessionContext = async (id: string) => {
    const record = await store.getSession(id).catch(() => undefined);
    return record ? { principal: principalSummary(record.principal), rule: record.rule } : {};
  };
  const deploymentId = await deploymentIdOf(store);
  const revokeFailures = options.registry
    ? new Counter({
        name: 'ciport_credential_revoke_failures_total',
        help: 'Per-session roles this gateway failed to drop (each failed attempt), by target.',
        labelNames: ['target'],
        registers: [options.registry],
      })
    : undefined;
  const roles = new DynamicRoles(specs, {
    log,
    deploymentId,
    onRevokeFailed: (target) => revokeFailures?.inc({ target }),
    audit: async (e) => {
      const { type, ...data } = e;
      await store.appendAudit(auditEvent(type, { ...(await sessionContext(e.session)), ...data }));
    },
  });
  const cancelRegistry = new CancelRegistry();
  let rules = new Map(config.rules.map((r) => [r.name, r]));
  const grantsFor = (record: Pick<SessionRecord, 'rule' | 'targetRules'>, target: string) => {
    // The rule that granted this target; sessions stored before that was recorded: the session's.
    const granting = record.targetRules?.[target] ?? record.rule;
    const fromRule = granting ? rules.get(granting)?.grants?.[target] : undefined;
    return fromRule ? [...fromRule] : undefined;
  };

  const unsubscribe: Array<() => void> = [];
  unsubscribe.push(
    manager.onEnded(async (record, reason) => {
      cancelRegistry.dropSession(record.id);
      if (roles.targets.length > 0)
        await roles.revokeSession(record.id, record.targets, `session_ended:${reason}`);
    }),
  );
  unsubscribe.push(
    manager.onOpened(async (record) => {
      const eager = record.targets.filter((t) => roles.spec(t)?.create === 'session_start');
      await Promise.all(
        eager.map((t) =>
          roles
            .ensure(record as RoleSession, t, grantsFor(record, t))
            .catch((err) =>
              log.warn(
                { session: record.id, target: t, err: asCiportError(err).message },
                'per-session role not created',
              ),
            ),
        ),
      );
    }),
  );

  const reap = async () => {
    if (roles.targets.length === 0) return 0;
    const active = new Set((await manager.list({ activeOnly: true })).map((s) => s.id));
    // Legacy roles (tagged before deployment ids) are ours when our store knows their session.
    const known = async (ids: string[]) => {
      const found = await Promise.all(ids.map((id) => store.getSession(id).catch(() => undefined)));
      return new Set(found.filter((s) => s !== undefined).map((s) => s.id));
    };
    const dropped = await roles.reap(active, { known });
    if (dropped > 0) log.info({ dropped }, 'role reaper dropped per-session roles');
    return dropped;
  };
  // Tell the operator now what the admin lacks, rather than at the first failed drop.
  const allGrants = (target: string) =>
    config.rules.flatMap((r) => (r.allow.includes(target) ? (r.grants?.[target] ?? []) : []));
  await Promise.all(
    roles.targets.map(async (target) => {
      try {
        for (const problem of await roles.checkAdmin(target, allGrants(target)))
          log.warn({ target, problem }, 'dynamic-credentials admin: missing privilege (docs/credentials.md)');
      } catch (err) {
        log.warn({ target, err: asCiportError(err).message }, 'dynamic-credentials admin not checked');
      }
    }),
  );
  try {
    await reap();
  } catch (err) {
    log.warn({ err: asCiportError(err).message }, 'role reaper failed at start');
  }
  const period = options.reapIntervalMs ?? 60_000;
  const timer =
    period > 0 && roles.targets.length > 0
      ? setInterval(() => {
          reap().catch((err) => log.warn({ err: asCiportError(err).message }, 'role reaper failed'));
        }, period)
      : undefined;
  timer?.unref();

  return {
    cancelRegistry,
    pg,
    http,
    roles,
    deploymentId,
    grantsFor,
    useRules(next) {
      rules = new Map(next.map((r) => [r.name, r]));
    },
    reap,
    close() {
      if (timer) clearInterval(timer);
      for (const u of unsubscribe) u();
      for (const exit of http.values()) exit.close();
    },
  };
}
