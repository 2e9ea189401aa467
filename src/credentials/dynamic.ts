// Per-session database accounts (`credentials.dynamic` on a postgres or mysql target;
// docs/credentials.md): for each (session, target) the exit creates an account with a random
// password and the grants of the rule that matched, injects it instead of a static credential,
// and drops it when the session ends. A reaper (at start and periodically) drops every account of
// this deployment whose session is no longer active. A drop that fails is logged as an error,
// audited (`credential.revoke_failed`), counted, and retried with an exponential backoff.
//
// This file is the lifecycle, the same for every database; what the SQL is — how an account is
// named, tagged with its deployment, created, listed, cut off and dropped — is an AccountEngine
// per protocol (pg-roles.ts, mysql-users.ts).
import { randomBytes } from 'node:crypto';
import type { CredentialData } from '../audit/events.js';
import type { Secret } from '../config/secret.js';
import type { TargetConfig, TargetOf } from '../config/targets/index.js';
import { CiportError, type ErrorCode } from '../errors/index.js';
import { splitHostPort } from '../exits/tcp/exit.js';
import { isDeploymentId } from './deployment.js';
import { mysqlUserEngine } from './mysql-users.js';
import { pgRoleEngine } from './pg-roles.js';

/** TLS to the server the admin connects to (the target's upstream TLS). */
export interface AdminTls {
  mode: 'require' | 'verify-ca' | 'verify-full';
  ca?: string | undefined;
  servername?: string | undefined;
}

export interface DynamicSpec {
  protocol: 'postgres' | 'mysql';
  target: string;
  host: string;
  port: number;
  tls: AdminTls | undefined;
  /** Database the admin connects to (postgres: the target's; REASSIGN/DROP OWNED act there). */
  database: string | undefined;
  adminUser: string;
  adminPassword: Secret;
  grant: readonly string[];
  /** postgres: the role that receives what a session role owned. */
  owner?: string | undefined;
  create: 'first_connection' | 'session_start';
}

/** The part of a session the account manager needs. */
export interface RoleSession {
  id: string;
  expiresAt: number;
  /** Deployment that owns the session (agents: sent by the gateway); default the option's. */
  deployment?: string | undefined;
}

export interface RoleCredential {
  user: string;
  password: string;
}

/**
 * An account event for the audit: `credential.created|revoked|revoke_failed` with the fields of
 * the audit log's own shape (the host adds the session's principal and rule).
 */
export type RoleEvent = {
  type: 'credential.created' | 'credential.revoked' | 'credential.revoke_failed';
} & Pick<
  CredentialData,
  | 'session'
  | 'target'
  | 'role'
  | 'granted'
  | 'valid_until'
  | 'reason'
  | 'terminated'
  | 'error'
  | 'code'
  | 'attempt'
  | 'next_attempt'
  | 'lease_id'
>;

export interface RoleLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error?(obj: object, msg: string): void;
}

export interface DynamicRolesOptions {
  log: RoleLog;
  /** Write an audit event (errors are the caller's to log). */
  audit: (event: RoleEvent) => Promise<void>;
  /** Admin statements time out after this (default 10 s). */
  statementTimeoutMs?: number;
  /** The deployment whose accounts these are (the gateway's); agents pass it per call instead. */
  deploymentId?: string | undefined;
  /** First retry of a failed drop after this, doubling per failure (default 60 s) … */
  retryBaseMs?: number;
  /** … up to this (default 1 h). */
  retryMaxMs?: number;
  /** Count a failed drop (the `ciport_credential_revoke_failures_total` metric). */
  onRevokeFailed?: ((target: string) => void) | undefined;
}

export interface ReapOptions {
  now?: number;
  /** Whose accounts to reap (default: the `deploymentId` option). */
  deployment?: string | undefined;
  /**
   * Legacy roles (postgres, tagged before deployment ids) are only reaped when this says their
   * session is one of ours (it is in our store). Without it they are left alone.
   */
  known?: ((sessionIds: string[]) => Promise<ReadonlySet<string>>) | undefined;
}

/** One account an engine found on the server, already known to be a ciport account. */
export interface AccountRow {
  account: string;
  /** The session it belongs to, when the server keeps that (postgres: the role's COMMENT). */
  session: string | undefined;
  /** Its deployment; undefined: a legacy tag (postgres roles made before deployment ids). */
  deployment: string | undefined;
  /** Its server-side expiry passed (postgres VALID UNTIL). */
  expired: boolean;
}

export interface CreateRequest {
  account: string;
  password: string;
  session: string;
  deployment: string;
  validUntil: string;
  grant: readonly string[];
}

export interface DropRequest {
  account: string;
  /** undefined: the reaper found it by name (the name says the deployment, not the session). */
  session: string | undefined;
  deployment: string;
  /** A legacy tag of `session` counts as ours. */
  legacy: boolean;
}

export type DropResult = { state: 'dropped'; terminated: number } | { state: 'absent' | 'foreign' };

/** The SQL of one database: how accounts are named, tagged, created, cut off and dropped. */
export interface AccountEngine {
  /** Code of a failed drop (`credential.revoke_failed`, the error log line). */
  readonly revokeFailedCode: ErrorCode;
  /** Code of a failed creation (the app's error: the server refused the admin's statements). */
  readonly createFailedCode: ErrorCode;
  /** Where the admin's grants are documented, for log hints (`docs/….md, "Section"`). */
  readonly adminDocs: string;
  /** The account of `session` of `deployment` on `target` (an unquoted identifier, ≤ 32 characters). */
  accountName(session: string, deployment: string, target: string): string;
  /** Create it, or adopt it when it exists and is this session's (throws if it is not). */
  create(spec: DynamicSpec, req: CreateRequest, timeoutMs: number): Promise<void>;
  /** Cut its connections off and drop it, if it exists and is `req`'s. */
  drop(spec: DynamicSpec, req: DropRequest, timeoutMs: number): Promise<DropResult>;
  /** The ciport accounts of `deployment` (and legacy ones) on the server. */
  list(spec: DynamicSpec, deployment: string, now: number, timeoutMs: number): Promise<AccountRow[]>;
  /** What the admin lacks for create, drop and reap (empty: nothing found). */
  checkAdmin(spec: DynamicSpec, grants: readonly string[], timeoutMs: number): Promise<string[]>;
}

/** A server error that says the admin may not do something (PostgreSQL or MySQL wording). */
const PRIVILEGE_ERROR = /permission denied|must be|privilege|access denied|command denied/i;

/** Error text of a failed statement for logs and audit: the server's code and message, bounded. */
export function failureText(err: unknown): string {
  const e = err as { code?: unknown; errno?: unknown; sqlState?: unknown; message?: unknown };
  const message = String(e.message);
  const text =
    typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code)
      ? `${e.code}: ${message}`
      : typeof e.errno === 'number' && typeof e.sqlState === 'string'
        ? `${e.errno} (${e.sqlState}): ${message}`
        : message;
  return text.length > 500 ? `${text.slice(0, 500)}…` : text;
}

/** `tls` (and postgres's `sslmode`) of a target → the admin's TLS options (verify-full with `tls`). */
export function upstreamTlsOf(target: TargetOf<'postgres' | 'mysql'>): AdminTls | undefined {
  const tlsObj = target.tls && typeof target.tls === 'object' ? target.tls : undefined;
  const sslmode = target.protocol === 'postgres' ? target.sslmode : undefined;
  const mode = sslmode ?? (target.tls ? 'verify-full' : 'disable');
  if (mode === 'disable') return undefined;
  return { mode, ca: tlsObj?.ca?.reveal(), servername: tlsObj?.servername };
}

/** The per-session account settings of a postgres or mysql target with `credentials.dynamic`. */
export function dynamicSpecFromTarget(target: TargetConfig): DynamicSpec | undefined {
  if (target.protocol !== 'postgres' && target.protocol !== 'mysql') return undefined;
  const dyn = target.credentials?.dynamic;
  if (!dyn) return undefined;
  const { host, port } = splitHostPort(target.address);
  return {
    protocol: target.protocol,
    target: target.name,
    host,
    port,
    tls: upstreamTlsOf(target),
    database: target.protocol === 'postgres' ? (target.database ?? 'postgres') : undefined,
    adminUser: dyn.admin.user,
    adminPassword: dyn.admin.password,
    grant: dyn.grant,
    // Required on postgres targets by their schema; mysql has no object ownership to reassign.
    owner: 'owner' in dyn ? dyn.owner : undefined,
    create: dyn.create,
  };
}

/** The engine of each protocol with per-session accounts. */
const ENGINES: Readonly<Record<DynamicSpec['protocol'], AccountEngine>> = {
  postgres: pgRoleEngine,
  mysql: mysqlUserEngine,
};

export class DynamicCredentials {
  readonly #specs: Map<string, DynamicSpec>;
  readonly #opts: DynamicRolesOptions;
  /** `${session}\0${target}` → the credential being created / created. */
  readonly #live = new Map<string, Promise<RoleCredential>>();
  /** `${target}\0${account}` → consecutive drop failures and when to try again. */
  readonly #failures = new Map<string, { count: number; next: number }>();
  /**
   * `${target}\0${account}` → its session, for accounts made in this process: a reaped account
   * whose name does not say its session (mysql) is still audited with it (an agent's event
   * without one would be refused by the gateway).
   */
  readonly #sessionOf = new Map<string, string>();
  /** Legacy roles already reported as left alone (reported once per process). */
  readonly #legacyNoted = new Set<string>();

  constructor(specs: DynamicSpec[], options: DynamicRolesOptions) {
    this.#specs = new Map(specs.map((s) => [s.target, s]));
    this.#opts = options;
    if (options.deploymentId !== undefined && !isDeploymentId(options.deploymentId)) {
      throw new CiportError('CIPORT_E_CONFIG_INVALID', 'deployment id must be 8 to 32 lower-case hex');
    }
  }

  get targets(): string[] {
    return [...this.#specs.keys()];
  }

  has(target: string): boolean {
    return this.#specs.has(target);
  }

  spec(target: string): DynamicSpec | undefined {
    return this.#specs.get(target);
  }

  /** Accounts whose drop failed and is waiting for a retry. */
  get failing(): number {
    return this.#failures.size;
  }

  get #timeoutMs(): number {
    return this.#opts.statementTimeoutMs ?? 10_000;
  }

  #engine(spec: DynamicSpec): AccountEngine {
    return ENGINES[spec.protocol];
  }

  #deployment(given: string | undefined): string {
    const d = given ?? this.#opts.deploymentId;
    if (!isDeploymentId(d)) {
      throw new CiportError('CIPORT_E_USAGE', 'per-session accounts need the deployment id of the gateway');
    }
    return d;
  }

  /** The name of `session`'s account on `target` (what the job's local login shows too). */
  accountName(target: string, sessionId: string, deployment?: string): string | undefined {
    const spec = this.#specs.get(target);
    return spec ? this.#engine(spec).accountName(sessionId, this.#deployment(deployment), target) : undefined;
  }

  /**
   * The session's account on `target`, created on first use (concurrent callers share one
   * creation). `grant` is what the policy allows (the rule's `grants`, else the target's).
   */
  ensure(session: RoleSession, target: string, grant?: readonly string[]): Promise<RoleCredential> {
    const key = `${session.id}\u0000${target}`;
    let pending = this.#live.get(key);
    if (!pending) {
      pending = this.#create(session, target, grant);
      this.#live.set(key, pending);
      pending.catch(() => this.#live.delete(key));
    }
    return pending;
  }

  async #create(
    session: RoleSession,
    target: string,
    grantOverride?: readonly string[],
  ): Promise<RoleCredential> {
    const spec = this.#specs.get(target);
    if (!spec)
      throw new CiportError('CIPORT_E_CONFIG_INVALID', `target ${target} has no dynamic credentials`);
    const deployment = this.#deployment(session.deployment);
    const engine = this.#engine(spec);
    const account = engine.accountName(session.id, deployment, target);
    const password = randomBytes(24).toString('base64url');
    const grant = [...(grantOverride ?? spec.grant)];
    const validUntil = new Date(session.expiresAt).toISOString();
    try {
      await engine.create(
        spec,
        { account, password, session: session.id, deployment, validUntil, grant },
        this.#timeoutMs,
      );
    } catch (err) {
      throw await this.#createFailed(spec, engine, session.id, account, grant, err);
    }
    this.#sessionOf.set(`${target}\u0000${account}`, session.id);
    this.#opts.log.info(
      { session: session.id, target, role: account, granted: grant },
      'per-session account created',
    );
    await this.#audit({
      type: 'credential.created',
      session: session.id,
      target,
      role: account,
      granted: grant,
      valid_until: validUntil,
    });
    return { user: account, password };
  }

  /**
   * A refused creation as the app's error and a warn line, both saying what the admin lacks:
   * the server's message alone (`Access denied for user 'admin'@'%'` for a GRANT of a role it
   * may not grant) does not say which statement failed or how to fix it.
   */
  async #createFailed(
    spec: DynamicSpec,
    engine: AccountEngine,
    session: string,
    account: string,
    grant: readonly string[],
    err: unknown,
  ): Promise<CiportError> {
    if (err instanceof CiportError) return err;
    const error = failureText(err);
    // The server refused one of the admin's statements: say what the admin lacks, if anything.
    const lacks = await engine.checkAdmin(spec, grant, this.#timeoutMs).catch(() => []);
    this.#opts.log.warn(
      {
        session,
        target: spec.target,
        role: account,
        err: error,
        ...(lacks.length > 0 ? { problems: lacks } : {}),
        hint: `see ${engine.adminDocs}`,
      },
      'per-session account not created',
    );
    const fix =
      lacks.length > 0
        ? `; ${lacks.join('; ')}`
        : PRIVILEGE_ERROR.test(error)
          ? `; the dynamic-credentials admin lacks a grant (${engine.adminDocs})`
          : '';
    return new CiportError(
      engine.createFailedCode,
      `target ${spec.target}: the per-session account could not be created: ${error}${fix}`,
      { cause: err },
    );
  }

  /**
   * Drop the session's accounts on every dynamic target it may have used. Never throws.
   * `deployment`: the session's (agents: sent by the gateway); default the option's.
   */
  async revokeSession(
    sessionId: string,
    targets: readonly string[],
    reason: string,
    deployment?: string,
  ): Promise<void> {
    let dep: string;
    try {
      dep = this.#deployment(deployment);
    } catch (err) {
      this.#opts.log.warn(
        { session: sessionId, err: (err as Error).message },
        'per-session accounts not dropped',
      );
      return;
    }
    await Promise.all(
      targets
        .filter((t) => this.#specs.has(t))
        .map(async (target) => {
          const key = `${sessionId}\u0000${target}`;
          const pending = this.#live.get(key);
          this.#live.delete(key);
          if (pending) await pending.catch(() => undefined);
          const spec = this.#specs.get(target) as DynamicSpec;
          // The session is ours: a legacy-tagged role of it (made before the upgrade) is too.
          await this.#drop(spec, this.#engine(spec).accountName(sessionId, dep, target), sessionId, reason, {
            known: Boolean(pending),
            deployment: dep,
            legacy: true,
          });
        }),
    );
  }

  /**
   * Drop `account` on `spec`'s server if it is `sessionId`'s of `deployment` (engines check the
   * tag). `known`: we created it in this process (an event is written even when it turns out
   * gone). Accounts that do not exist are skipped silently; other deployments' are left alone.
   */
  async #drop(
    spec: DynamicSpec,
    account: string,
    sessionId: string | undefined,
    reason: string,
    o: { known: boolean; deployment: string; legacy: boolean },
  ): Promise<boolean> {
    const target = spec.target;
    const engine = this.#engine(spec);
    let result: DropResult;
    try {
      result = await engine.drop(
        spec,
        { account, session: sessionId, deployment: o.deployment, legacy: o.legacy },
        this.#timeoutMs,
      );
    } catch (err) {
      await this.#revokeFailed(spec, account, sessionId, reason, err);
      return false;
    }
    this.#failures.delete(`${target}\u0000${account}`);
    this.#sessionOf.delete(`${target}\u0000${account}`);
    if (result.state === 'foreign') {
      this.#opts.log.warn(
        { session: sessionId, target, role: account },
        'account is tagged for another ciport deployment or session: left alone',
      );
      return false;
    }
    const existed = result.state === 'dropped';
    if (!existed && !o.known) return false;
    const terminated = result.state === 'dropped' ? result.terminated : 0;
    this.#opts.log.info(
      { session: sessionId, target, role: account, terminated, reason },
      'per-session account dropped',
    );
    await this.#audit({
      type: 'credential.revoked',
      ...(sessionId !== undefined ? { session: sessionId } : {}),
      target,
      role: account,
      reason,
      terminated,
      ...(existed ? {} : { error: 'account was already gone' }),
    });
    return existed;
  }

  /** A drop failed: error log, audit, metric, and the next attempt pushed back. */
  async #revokeFailed(
    spec: DynamicSpec,
    account: string,
    sessionId: string | undefined,
    reason: string,
    err: unknown,
  ): Promise<void> {
    const target = spec.target;
    const code = this.#engine(spec).revokeFailedCode;
    const key = `${target}\u0000${account}`;
    const now = Date.now();
    const failure = this.#failures.get(key) ?? { count: 0, next: now };
    failure.count += 1;
    const base = this.#opts.retryBaseMs ?? 60_000;
    const max = this.#opts.retryMaxMs ?? 3_600_000;
    failure.next = now + Math.min(max, base * 2 ** Math.min(failure.count - 1, 30));
    this.#failures.set(key, failure);
    const error = failureText(err);
    const nextAttempt = new Date(failure.next).toISOString();
    const fields = {
      session: sessionId,
      target,
      role: account,
      reason,
      code,
      attempt: failure.count,
      next_attempt: nextAttempt,
      err: error,
      ...(PRIVILEGE_ERROR.test(error)
        ? { hint: `the dynamic-credentials admin lacks a grant: see ${this.#engine(spec).adminDocs}` }
        : {}),
    };
    (this.#opts.log.error ?? this.#opts.log.warn).call(
      this.#opts.log,
      fields,
      `per-session account not dropped (${code}); retried with backoff`,
    );
    try {
      this.#opts.onRevokeFailed?.(target);
    } catch {
      // metrics never break a revocation
    }
    await this.#audit({
      type: 'credential.revoke_failed',
      ...(sessionId !== undefined ? { session: sessionId } : {}),
      target,
      role: account,
      reason,
      error,
      code,
      attempt: failure.count,
      next_attempt: nextAttempt,
    });
  }

  /**
   * Drop every account of this deployment on every dynamic target whose session is not in
   * `active`, or whose server-side expiry passed. Accounts tagged for another deployment, and
   * accounts without a ciport tag, are never touched; legacy-tagged roles only when `known`
   * claims their session. Accounts whose last drop failed wait for their backoff. Returns how
   * many were dropped.
   */
  async reap(active: ReadonlySet<string>, options: ReapOptions = {}): Promise<number> {
    const now = options.now ?? Date.now();
    const deployment = this.#deployment(options.deployment);
    let dropped = 0;
    for (const spec of this.#specs.values()) {
      const engine = this.#engine(spec);
      let rows: AccountRow[];
      try {
        rows = await engine.list(spec, deployment, now, this.#timeoutMs);
      } catch (err) {
        this.#opts.log.warn(
          { target: spec.target, err: failureText(err) },
          'account reaper: cannot list accounts',
        );
        continue;
      }
      // Engines whose names say only the deployment: the live accounts are the active sessions'.
      const activeAccounts = new Set(
        [...active].map((id) => engine.accountName(id, deployment, spec.target)),
      );
      const mine = rows.filter((r) => r.deployment === deployment);
      const legacy = rows.filter((r) => r.deployment === undefined && r.session !== undefined);
      if (legacy.length > 0) {
        const known = options.known
          ? await options.known(legacy.map((l) => l.session as string)).catch(() => new Set<string>())
          : new Set<string>();
        for (const l of legacy) {
          if (known.has(l.session as string)) mine.push(l);
          else if (!this.#legacyNoted.has(`${spec.target}\u0000${l.account}`)) {
            this.#legacyNoted.add(`${spec.target}\u0000${l.account}`);
            this.#opts.log.info(
              { target: spec.target, role: l.account },
              'account reaper: legacy ciport role of a session unknown here: left alone',
            );
          }
        }
      }
      for (const row of mine) {
        const live = row.session !== undefined ? active.has(row.session) : activeAccounts.has(row.account);
        if (live && !row.expired) continue;
        const failure = this.#failures.get(`${spec.target}\u0000${row.account}`);
        if (failure && failure.next > now) continue;
        const session = row.session ?? this.#sessionOf.get(`${spec.target}\u0000${row.account}`);
        if (session !== undefined) this.#live.delete(`${session}\u0000${spec.target}`);
        if (
          await this.#drop(spec, row.account, session, 'reaper', {
            known: false,
            deployment,
            legacy: row.deployment === undefined,
          })
        )
          dropped += 1;
      }
    }
    return dropped;
  }

  /**
   * What the admin of `target` lacks for create, drop and reap (empty: nothing found), checked
   * against the rules of the server's version. `grants`: every role sessions may be granted.
   */
  async checkAdmin(target: string, grants: readonly string[] = []): Promise<string[]> {
    const spec = this.#specs.get(target);
    if (!spec) return [];
    const roles = [...new Set([...spec.grant, ...grants])];
    return this.#engine(spec).checkAdmin(spec, roles, this.#timeoutMs);
  }

  /**
   * At start (gateway and agent): check every target's admin and log one warning per missing
   * privilege with the statement that fixes it. Never throws. `grantsOf`: the roles the rules
   * grant for a target beyond its `dynamic.grant` (an agent does not know the rules).
   */
  async logAdminProblems(grantsOf: (target: string) => readonly string[] = () => []): Promise<void> {
    await Promise.all(
      [...this.#specs.values()].map(async (spec) => {
        const target = spec.target;
        const hint = `see ${this.#engine(spec).adminDocs}`;
        try {
          for (const problem of await this.checkAdmin(target, grantsOf(target)))
            this.#opts.log.warn({ target, problem, hint }, 'dynamic-credentials admin: missing privilege');
        } catch (err) {
          this.#opts.log.warn(
            { target, err: failureText(err), hint },
            'dynamic-credentials admin not checked',
          );
        }
      }),
    );
  }

  async #audit(event: RoleEvent): Promise<void> {
    try {
      await this.#opts.audit(event);
    } catch (err) {
      this.#opts.log.warn(
        { session: event.session, err: (err as Error).message },
        `audit ${event.type} failed`,
      );
    }
  }
}
