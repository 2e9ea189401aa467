// The gateway as exit for the targets in its own config (docs/gateway.md, "Protocol exits"):
// one exit per target from the registry (src/exits/registry.ts; a bad secret fails the start),
// the per-session role manager, and the session hooks that tie them to session lifetimes (an
// exit forgets a session's cancel keys and its roles are revoked when it ends; roles created at
// session start when a target says so; a role reaper at start and periodically).

import { join } from 'node:path';
import { Counter, type Registry } from 'prom-client';
import { auditEvent } from '../audit/events.js';
import type { GatewayConfig, TargetConfig } from '../config/schema.js';
import { DENY_ALL_SESSION_POLICY } from '../config/session-policy.js';
import { deploymentIdOf } from '../credentials/deployment.js';
import { DynamicCredentials, dynamicSpecFromTarget, type RoleSession } from '../credentials/dynamic.js';
import { SecretProviders } from '../credentials/secret-providers.js';
import { VaultDatabaseCredentials, vaultDatabaseSpecFromTarget } from '../credentials/vault-database.js';
import { VAULT_LEASES_FILE } from '../credentials/vault-lease-file.js';
import { asCiportError, CiportError } from '../errors/index.js';
import type { Exit } from '../exits/contract.js';
import { buildExits } from '../exits/registry.js';
import type { Logger } from '../log/logger.js';
import type { SessionManager } from '../session/manager.js';
import { principalSummary } from '../session/principal.js';
import type { AuditStore, MetaStore, SessionRecord, SessionStore } from '../store/types.js';
import { grantingRule, noLongerGranted } from './granting-rule.js';

export interface GatewayExits {
  /** The exit of each target this gateway serves itself, by name. */
  readonly byTarget: ReadonlyMap<string, Exit>;
  /** Per-session database accounts (postgres roles, mysql users). */
  readonly roles: DynamicCredentials;
  /** Per-session database credentials minted by Vault (`credentials.vault_database`). */
  readonly vaultDb: VaultDatabaseCredentials;
  /** Provider secrets (AWS Secrets Manager, Vault KV) kept fresh (docs/secrets.md). */
  readonly secrets: SecretProviders;
  /**
   * This deployment's id (kept in the store; the same for every gateway sharing it): the tag of
   * every per-session role it or its agents create, and the only roles it reaps.
   */
  readonly deploymentId: string;
  /**
   * Roles a per-session role gets on `target`: its granting rule's `grants`, else (undefined) the
   * target's. Throws CIPORT_E_TARGET_NOT_GRANTED when no rule in force grants the target to the
   * session any more (a reload removed the rule, made it deny, or took the target from it).
   */
  grantsFor(record: Pick<SessionRecord, 'id' | 'rule' | 'targetRules'>, target: string): string[] | undefined;
  /** aws: the `session_policy` of the rule that granted `target` (compact JSON), if it has one. */
  sessionPolicyFor(record: Pick<SessionRecord, 'rule' | 'targetRules'>, target: string): string | undefined;
  /** A reloaded configuration's rules (SIGHUP): roles created from now on get their grants. */
  useRules(rules: GatewayConfig['rules']): void;
  /** Run the role reaper now (also runs at start and every `reapIntervalMs`). */
  reap(): Promise<number>;
  close(): void;
}

export interface StartExitsOptions {
  config: Readonly<GatewayConfig>;
  targets: ReadonlyMap<string, TargetConfig>;
  store: SessionStore & AuditStore & MetaStore;
  manager: SessionManager;
  log: Logger;
  /** Role reaper period (default 60 s; 0 disables the periodic run). */
  reapIntervalMs?: number;
  /** Where `ciport_credential_revoke_failures_total` and the secret metrics go. */
  registry?: Registry | undefined;
  /** The config file, named in errors about secrets. */
  configSource?: string | undefined;
}

export async function startExits(options: StartExitsOptions): Promise<GatewayExits> {
  const { config, store, manager, log } = options;
  // Provider secrets are read before any exit is built (a failure fails the start).
  const secrets = await SecretProviders.start(
    { targets: [...options.targets.values()] },
    { log, registry: options.registry, vault: config.vault, file: options.configSource },
  );
  let byTarget: Map<string, Exit>;
  try {
    byTarget = buildExits(
      options.targets.values(),
      {
        connectTimeoutMs: config.sessions.connect_timeout,
        idleTimeoutMs: config.sessions.connection_idle_timeout,
      },
      // Served elsewhere (an agent) or not configured: this gateway does not exit to it.
      (target, why) =>
        log.warn({ target: target.name, protocol: target.protocol }, `${why}: not served by this gateway`),
    );
  } catch (err) {
    secrets.close();
    throw err;
  }
  const specs = [];
  const vaultSpecs = [];
  for (const exit of byTarget.values()) {
    const spec = dynamicSpecFromTarget(exit.target);
    if (spec) specs.push(spec);
    const vaultSpec = vaultDatabaseSpecFromTarget(exit.target);
    if (vaultSpec) vaultSpecs.push(vaultSpec);
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
  const roles = new DynamicCredentials(specs, {
    log,
    deploymentId,
    onRevokeFailed: (target) => revokeFailures?.inc({ target }),
    audit: async (e) => {
      const { type, ...data } = e;
      await store.appendAudit(
        auditEvent(type, { ...(e.session ? await sessionContext(e.session) : {}), ...data }),
      );
    },
  });
  const vaultDb = new VaultDatabaseCredentials(vaultSpecs, {
    vault: secrets.vault,
    log,
    // This gateway's own leases: gateways sharing a store each reap their own file.
    leaseFile: join(config.data_dir, VAULT_LEASES_FILE),
    ended: async (ids) => {
      const active = await manager.activeIds();
      return new Set(ids.filter((id) => !active.has(id)));
    },
    onRevokeFailed: (target) => revokeFailures?.inc({ target }),
    audit: async (e) => {
      const { type, ...data } = e;
      await store.appendAudit(
        auditEvent(type, { ...(e.session ? await sessionContext(e.session) : {}), ...data }),
      );
    },
  });
  let rules = config.rules;
  const grantsFor = (record: Pick<SessionRecord, 'id' | 'rule' | 'targetRules'>, target: string) => {
    // A reload that removed the granting rule (or made it deny, or took the target from it) must
    // not create the session's role with the target's default `dynamic.grant`, wider than the
    // rule's `grants` may have been: no rule granting the target now, no role.
    const granting = grantingRule(rules, record, target);
    if (!granting.rule)
      throw new CiportError('CIPORT_E_TARGET_NOT_GRANTED', noLongerGranted(granting, record.id, target));
    const fromRule = granting.rule.grants?.[target];
    return fromRule ? [...fromRule] : undefined;
  };
  const sessionPolicyFor = (record: Pick<SessionRecord, 'rule' | 'targetRules'>, target: string) =>
    grantingRulePolicy(rules, record, target);

  const unsubscribe: Array<() => void> = [];
  unsubscribe.push(
    manager.onEnded(async (record, reason) => {
      for (const t of record.targets) byTarget.get(t)?.sessionEnded?.(record.id);
      if (roles.targets.length > 0)
        await roles.revokeSession(record.id, record.targets, `session_ended:${reason}`);
      if (vaultDb.targets.length > 0)
        await vaultDb.revokeSession(record.id, record.targets, `session_ended:${reason}`);
    }),
  );
  unsubscribe.push(
    manager.onOpened(async (record) => {
      const eager = record.targets.filter((t) => roles.spec(t)?.create === 'session_start');
      await Promise.all(
        eager.map((t) =>
          Promise.resolve()
            .then(() => roles.ensure(record as RoleSession, t, grantsFor(record, t)))
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
    // Every active session, or no run at all: an account missing from the list is dropped.
    const active = await manager.activeIds();
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
  await roles.logAdminProblems(allGrants);
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
  // Leases of sessions that ended while this gateway was down (or crashed) are revoked now.
  await vaultDb.startReaper(period);

  return {
    byTarget,
    roles,
    vaultDb,
    secrets,
    deploymentId,
    grantsFor,
    sessionPolicyFor,
    useRules(next) {
      rules = next;
    },
    reap,
    close() {
      if (timer) clearInterval(timer);
      for (const u of unsubscribe) u();
      for (const exit of byTarget.values()) exit.close();
      vaultDb.close();
      secrets.close();
    },
  };
}

/**
 * The session policy for `target` of a session: its granting rule's `session_policy`. A rule a
 * reload removed or renamed no longer says what the session may do: then every action is denied
 * (the session lives on until its end; without this it got `Allow *`, the role's whole reach).
 */
export function grantingRulePolicy(
  rules: GatewayConfig['rules'],
  record: Pick<SessionRecord, 'rule' | 'targetRules'>,
  target: string,
): string | undefined {
  const granting = grantingRule(rules, record, target);
  if (granting.name === undefined) return undefined;
  return granting.rule ? granting.rule.session_policy : DENY_ALL_SESSION_POLICY;
}
