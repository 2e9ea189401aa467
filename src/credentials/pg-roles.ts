// Per-session PostgreSQL roles (`credentials.dynamic` on a postgres target; docs/credentials.md).
//
// For each (session, target) the exit creates `ciport_<16 hex>` — LOGIN, a random password,
// VALID UNTIL the session's expiry, IN ROLE the roles the policy grants — on the session's first
// connection (default) or when the session opens, and injects it instead of a static credential.
// Its COMMENT, written in the same transaction, is the ownership tag
// `ciport deployment <deployment id> session <session id>`: several ciport deployments (each
// with its own store) may share a cluster, and each only ever touches roles tagged with its own
// deployment id (kept in its store, see deploymentIdOf).
// When the session ends: the admin makes itself a member of the role (a non-superuser admin
// needs that for pg_terminate_backend, REASSIGN OWNED and DROP OWNED), NOLOGIN, terminate its
// backends, REASSIGN OWNED BY … TO owner, DROP OWNED BY …, DROP ROLE. A reaper (at start and
// periodically) drops every role of this deployment whose session is no longer active, or whose
// VALID UNTIL passed. A drop that fails is logged as an error, audited
// (`credential.revoke_failed`), counted, and retried with an exponential backoff.
//
// The password is random per role, never logged and never put in SQL text: the role is created
// with a SCRAM-SHA-256 verifier computed here, so even `log_statement = all` on the server
// records no password.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { DatabaseError } from 'pg-protocol';
import type { TargetConfig } from '../config/schema.js';
import type { Secret } from '../config/secret.js';
import { CiportError } from '../errors/index.js';
import { makeScramVerifier } from '../exits/postgres/scram.js';
import type { UpstreamTlsOptions } from '../exits/postgres/upstream.js';
import { splitHostPort } from '../exits/tcp/exit.js';
import { DYNAMIC_ROLE_PREFIX, dynamicRoleName } from './otp.js';

/** COMMENT of roles made before deployment ids (legacy; see docs/credentials.md). */
export const ROLE_COMMENT_PREFIX = 'ciport session ';
/** COMMENT of roles: `ciport deployment <id> session <session id>`. */
export const ROLE_TAG_PREFIX = 'ciport deployment ';
/** Store meta key of this deployment's id. */
export const DEPLOYMENT_META_KEY = 'deployment_id';

const DEPLOYMENT_RE = /^[0-9a-f]{8,32}$/;

/** A deployment id as ciport makes them (10 lower-case hex), or one received from a gateway. */
export function isDeploymentId(value: unknown): value is string {
  return typeof value === 'string' && DEPLOYMENT_RE.test(value);
}

/**
 * This deployment's id: generated once (10 random hex) and kept in the store, so every gateway
 * sharing the store, and every restart, tags and reaps the same roles.
 */
export function deploymentIdOf(store: { initMeta(key: string, value: string): Promise<string> }) {
  return store.initMeta(DEPLOYMENT_META_KEY, randomBytes(5).toString('hex'));
}

export function roleComment(deployment: string, sessionId: string): string {
  return `${ROLE_TAG_PREFIX}${deployment} session ${sessionId}`;
}

/** Who a role's COMMENT says it belongs to; `deployment` undefined: a legacy tag. */
export function parseRoleComment(
  comment: string | null | undefined,
): { deployment: string | undefined; session: string } | undefined {
  if (!comment) return undefined;
  const m = /^ciport deployment ([0-9a-f]{8,32}) session (\S+)$/.exec(comment);
  if (m) return { deployment: m[1] as string, session: m[2] as string };
  if (comment.startsWith(ROLE_COMMENT_PREFIX)) {
    const session = comment.slice(ROLE_COMMENT_PREFIX.length);
    return session ? { deployment: undefined, session } : undefined;
  }
  return undefined;
}

export interface DynamicRoleSpec {
  target: string;
  host: string;
  port: number;
  tls: UpstreamTlsOptions | undefined;
  /** Database the admin connects to (the target's; REASSIGN/DROP OWNED act there). */
  database: string;
  adminUser: string;
  adminPassword: Secret;
  grant: readonly string[];
  owner: string;
  create: 'first_connection' | 'session_start';
}

/** The part of a session the role manager needs. */
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

export interface RoleEvent {
  type: 'credential.created' | 'credential.revoked' | 'credential.revoke_failed';
  session: string;
  target: string;
  role: string;
  granted?: string[];
  valid_until?: string;
  reason?: string;
  terminated?: number;
  error?: string;
  /** revoke_failed: CIPORT_E_PG_ROLE_REVOKE_FAILED. */
  code?: string;
  /** revoke_failed: consecutive failures for this role. */
  attempt?: number;
  /** revoke_failed: ISO 8601, when the reaper tries again. */
  next_attempt?: string;
}

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
  /** The deployment whose roles these are (the gateway's); agents pass it per call instead. */
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
  /** Whose roles to reap (default: the `deploymentId` option). */
  deployment?: string | undefined;
  /**
   * Legacy roles (tagged before deployment ids) are only reaped when this says their session
   * is one of ours (it is in our store). Without it they are left alone.
   */
  known?: ((sessionIds: string[]) => Promise<ReadonlySet<string>>) | undefined;
}

/** Text of a failed statement for logs and audit: SQLSTATE and message, bounded. */
function failureText(err: unknown): string {
  const e = err as Partial<DatabaseError> & Error;
  const text = e.code && /^[0-9A-Z]{5}$/.test(e.code) ? `${e.code}: ${e.message}` : String(e.message);
  return text.length > 500 ? `${text.slice(0, 500)}…` : text;
}

export function dynamicSpecFromTarget(target: TargetConfig): DynamicRoleSpec | undefined {
  const dyn = target.credentials?.dynamic;
  if (!dyn || target.protocol !== 'postgres') return undefined;
  const { host, port } = splitHostPort(target.address);
  return {
    target: target.name,
    host,
    port,
    tls: upstreamTlsOf(target),
    database: target.database ?? 'postgres',
    adminUser: dyn.admin.user,
    adminPassword: dyn.admin.password,
    grant: dyn.grant,
    owner: dyn.owner,
    create: dyn.create,
  };
}

/** `sslmode` + `tls` of a postgres target → the upstream TLS options (verify-full by default). */
export function upstreamTlsOf(target: TargetConfig): UpstreamTlsOptions | undefined {
  const tlsObj = target.tls && typeof target.tls === 'object' ? target.tls : undefined;
  const mode = target.sslmode ?? (target.tls ? 'verify-full' : 'disable');
  if (mode === 'disable') return undefined;
  return { mode, ca: tlsObj?.ca?.reveal(), servername: tlsObj?.servername };
}

/** `"name"` with embedded quotes doubled. */
export function quoteIdent(name: string): string {
  if (name.includes('\u0000')) throw new CiportError('CIPORT_E_CONFIG_INVALID', 'identifier with NUL');
  return `"${name.replaceAll('"', '""')}"`;
}

function quoteLiteral(text: string): string {
  if (text.includes('\u0000')) throw new CiportError('CIPORT_E_CONFIG_INVALID', 'literal with NUL');
  return `'${text.replaceAll("'", "''")}'`;
}

function pgSsl(tls: UpstreamTlsOptions | undefined, host: string): pg.ClientConfig['ssl'] {
  if (!tls) return false;
  switch (tls.mode) {
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
      return { rejectUnauthorized: true, ca: tls.ca, checkServerIdentity: () => undefined };
    default:
      return { rejectUnauthorized: true, ca: tls.ca, servername: tls.servername ?? host };
  }
}

async function scramVerifierText(password: string): Promise<string> {
  const v = await makeScramVerifier(password);
  return `SCRAM-SHA-256$${v.iterations}:${v.salt.toString('base64')}$${v.storedKey.toString('base64')}:${v.serverKey.toString('base64')}`;
}

export class DynamicRoles {
  readonly #specs: Map<string, DynamicRoleSpec>;
  readonly #opts: DynamicRolesOptions;
  /** `${session}\0${target}` → the credential being created / created. */
  readonly #live = new Map<string, Promise<RoleCredential>>();
  /** `${target}\0${role}` → consecutive drop failures and when to try again. */
  readonly #failures = new Map<string, { count: number; next: number }>();
  /** Legacy roles already reported as left alone (reported once per process). */
  readonly #legacyNoted = new Set<string>();

  constructor(specs: DynamicRoleSpec[], options: DynamicRolesOptions) {
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

  spec(target: string): DynamicRoleSpec | undefined {
    return this.#specs.get(target);
  }

  /** Roles whose drop failed and is waiting for a retry, by `target`. */
  get failing(): number {
    return this.#failures.size;
  }

  #deployment(given: string | undefined): string {
    const d = given ?? this.#opts.deploymentId;
    if (!isDeploymentId(d)) {
      throw new CiportError('CIPORT_E_USAGE', 'per-session roles need the deployment id of the gateway');
    }
    return d;
  }

  /**
   * The session's role on `target`, created on first use (concurrent callers share one
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
    const role = dynamicRoleName(session.id);
    const password = randomBytes(24).toString('base64url');
    const verifier = await scramVerifierText(password);
    const grant = [...(grantOverride ?? spec.grant)];
    const validUntil = new Date(session.expiresAt).toISOString();
    const comment = roleComment(deployment, session.id);
    await this.#withAdmin(spec, async (c) => {
      const exists = await c.query<{ comment: string | null }>(
        `SELECT shobj_description(oid, 'pg_authid') AS comment FROM pg_roles WHERE rolname = $1`,
        [role],
      );
      if (exists.rowCount) {
        // A restarted exit adopting a live session: the password is not known any more. Only
        // a role tagged for this very session (ours, or legacy) is adopted.
        const owner = parseRoleComment(exists.rows[0]?.comment);
        if (owner?.session !== session.id || (owner.deployment && owner.deployment !== deployment)) {
          throw new CiportError(
            'CIPORT_E_PG_UPSTREAM_REFUSED',
            `target ${target}: role ${role} exists and does not belong to this session`,
          );
        }
        await c.query(
          `ALTER ROLE ${quoteIdent(role)} LOGIN PASSWORD ${quoteLiteral(verifier)} VALID UNTIL ${quoteLiteral(validUntil)}`,
        );
        if (!owner.deployment)
          await c.query(`COMMENT ON ROLE ${quoteIdent(role)} IS ${quoteLiteral(comment)}`);
      } else {
        const inRole = grant.length > 0 ? ` IN ROLE ${grant.map(quoteIdent).join(', ')}` : '';
        // One transaction: a role never exists without its tag (an untagged one is never reaped).
        await c.query('BEGIN');
        try {
          await c.query(
            `CREATE ROLE ${quoteIdent(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION ` +
              `PASSWORD ${quoteLiteral(verifier)} VALID UNTIL ${quoteLiteral(validUntil)}${inRole}`,
          );
          await c.query(`COMMENT ON ROLE ${quoteIdent(role)} IS ${quoteLiteral(comment)}`);
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK').catch(() => {});
          throw err;
        }
      }
    });
    this.#opts.log.info({ session: session.id, target, role, granted: grant }, 'per-session role created');
    await this.#audit({
      type: 'credential.created',
      session: session.id,
      target,
      role,
      granted: grant,
      valid_until: validUntil,
    });
    return { user: role, password };
  }

  /**
   * Drop the session's roles on every dynamic target it may have used. Never throws.
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
        'per-session roles not dropped',
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
          // The session is ours: a legacy-tagged role of it (made before the upgrade) is too.
          await this.#drop(target, dynamicRoleName(sessionId), sessionId, reason, {
            known: Boolean(pending),
            deployment: dep,
            legacy: true,
          });
        }),
    );
  }

  /**
   * Drop the role `role` on `target` if its tag says it is `sessionId`'s of `deployment` (or a
   * legacy tag of that session when `legacy`). `known`: we created it in this process (an
   * event is written even when it turns out gone). Roles that do not exist are skipped
   * silently; roles of other deployments are left alone.
   */
  async #drop(
    target: string,
    role: string,
    sessionId: string,
    reason: string,
    o: { known: boolean; deployment: string; legacy: boolean },
  ): Promise<boolean> {
    const spec = this.#specs.get(target);
    if (!spec) return false;
    let terminated = 0;
    let existed = false;
    let foreign = false;
    try {
      await this.#withAdmin(spec, async (c) => {
        const found = await c.query<{ comment: string | null; su: boolean; v: number }>(
          `SELECT shobj_description(r.oid, 'pg_authid') AS comment,
                  coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS su,
                  current_setting('server_version_num')::int AS v
             FROM pg_roles r WHERE r.rolname = $1`,
          [role],
        );
        const row = found.rows[0];
        if (!row) return;
        const owner = parseRoleComment(row.comment);
        const ours =
          owner?.session === sessionId &&
          (owner.deployment === o.deployment || (owner.deployment === undefined && o.legacy));
        if (!ours) {
          foreign = true;
          return;
        }
        existed = true;
        const r = quoteIdent(role);
        // A non-superuser admin (CREATEROLE) needs the privileges of the role to terminate its
        // backends and for REASSIGN/DROP OWNED ("permission denied to reassign objects"
        // otherwise). PostgreSQL 16+ lets it grant that to itself because it holds ADMIN OPTION
        // on the roles it created; up to 15 CREATEROLE suffices. Dropping the role ends it.
        if (!row.su)
          await c.query(`GRANT ${r} TO CURRENT_USER${row.v >= 160000 ? ' WITH INHERIT TRUE' : ''}`);
        await c.query(`ALTER ROLE ${r} NOLOGIN`);
        const t = await c.query<{ n: string }>(
          'SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) AS n FROM pg_stat_activity WHERE usename = $1',
          [role],
        );
        terminated = Number(t.rows[0]?.n ?? 0);
        await c.query(`REASSIGN OWNED BY ${r} TO ${quoteIdent(spec.owner)}`);
        await c.query(`DROP OWNED BY ${r}`);
        await c.query(`DROP ROLE ${r}`);
      });
    } catch (err) {
      await this.#revokeFailed(target, role, sessionId, reason, err);
      return false;
    }
    this.#failures.delete(`${target}\u0000${role}`);
    if (foreign) {
      this.#opts.log.warn(
        { session: sessionId, target, role },
        'role is tagged for another ciport deployment or session: left alone',
      );
      return false;
    }
    if (!existed && !o.known) return false;
    this.#opts.log.info({ session: sessionId, target, role, terminated, reason }, 'per-session role dropped');
    await this.#audit({
      type: 'credential.revoked',
      session: sessionId,
      target,
      role,
      reason,
      terminated,
      ...(existed ? {} : { error: 'role was already gone' }),
    });
    return existed;
  }

  /** A drop failed: error log, audit, metric, and the next attempt pushed back. */
  async #revokeFailed(
    target: string,
    role: string,
    sessionId: string,
    reason: string,
    err: unknown,
  ): Promise<void> {
    const key = `${target}\u0000${role}`;
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
      role,
      reason,
      code: 'CIPORT_E_PG_ROLE_REVOKE_FAILED',
      attempt: failure.count,
      next_attempt: nextAttempt,
      err: error,
      ...(/permission denied|must be|privilege/i.test(error)
        ? { hint: 'the dynamic-credentials admin lacks a grant: see docs/credentials.md, "Admin privileges"' }
        : {}),
    };
    (this.#opts.log.error ?? this.#opts.log.warn).call(
      this.#opts.log,
      fields,
      'per-session role not dropped (CIPORT_E_PG_ROLE_REVOKE_FAILED); it stays NOLOGIN until a retry succeeds',
    );
    try {
      this.#opts.onRevokeFailed?.(target);
    } catch {
      // metrics never break a revocation
    }
    await this.#audit({
      type: 'credential.revoke_failed',
      session: sessionId,
      target,
      role,
      reason,
      error,
      code: 'CIPORT_E_PG_ROLE_REVOKE_FAILED',
      attempt: failure.count,
      next_attempt: nextAttempt,
    });
  }

  /**
   * Drop every role of this deployment on every dynamic target whose session is not in
   * `active`, or whose VALID UNTIL passed. Roles tagged for another deployment, and roles
   * without a ciport tag, are never touched; legacy-tagged roles only when `known` claims their
   * session. Roles whose last drop failed wait for their backoff. Returns how many were dropped.
   */
  async reap(active: ReadonlySet<string>, options: ReapOptions = {}): Promise<number> {
    const now = options.now ?? Date.now();
    const deployment = this.#deployment(options.deployment);
    let dropped = 0;
    for (const spec of this.#specs.values()) {
      let rows: { rolname: string; expired: boolean; comment: string | null }[];
      try {
        rows = await this.#withAdmin(spec, async (c) => {
          const res = await c.query<{ rolname: string; expired: boolean; comment: string | null }>(
            `SELECT rolname, coalesce(rolvaliduntil <= to_timestamp($2::float8 / 1000), false) AS expired,
                    shobj_description(oid, 'pg_authid') AS comment
               FROM pg_roles WHERE starts_with(rolname, $1)`,
            [DYNAMIC_ROLE_PREFIX, now],
          );
          return res.rows;
        });
      } catch (err) {
        this.#opts.log.warn(
          { target: spec.target, err: (err as Error).message },
          'role reaper: cannot list roles',
        );
        continue;
      }
      const mine: { rolname: string; session: string; legacy: boolean; expired: boolean }[] = [];
      const legacy: typeof mine = [];
      for (const row of rows) {
        const owner = parseRoleComment(row.comment);
        if (!owner) continue; // not a ciport role
        const entry = {
          rolname: row.rolname,
          session: owner.session,
          legacy: !owner.deployment,
          expired: row.expired,
        };
        if (owner.deployment === deployment) mine.push(entry);
        else if (owner.deployment === undefined) legacy.push(entry);
        // else: another deployment's role
      }
      if (legacy.length > 0) {
        const known = options.known
          ? await options.known(legacy.map((l) => l.session)).catch(() => new Set<string>())
          : new Set<string>();
        for (const l of legacy) {
          if (known.has(l.session)) mine.push(l);
          else if (!this.#legacyNoted.has(`${spec.target}\u0000${l.rolname}`)) {
            this.#legacyNoted.add(`${spec.target}\u0000${l.rolname}`);
            this.#opts.log.info(
              { target: spec.target, role: l.rolname },
              'role reaper: legacy ciport role of a session unknown here: left alone',
            );
          }
        }
      }
      for (const row of mine) {
        if (active.has(row.session) && !row.expired) continue;
        const failure = this.#failures.get(`${spec.target}\u0000${row.rolname}`);
        if (failure && failure.next > now) continue;
        this.#live.delete(`${row.session}\u0000${spec.target}`);
        if (
          await this.#drop(spec.target, row.rolname, row.session, 'reaper', {
            known: false,
            deployment,
            legacy: row.legacy,
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
    return this.#withAdmin(spec, async (c) => {
      const res = await c.query<{
        user: string;
        su: boolean;
        createrole: boolean;
        inherit: boolean;
        v: number;
        owner_missing: boolean;
        owner_ok: boolean;
        missing: string[];
        no_admin: string[];
      }>(
        `SELECT current_user AS user, r.rolsuper AS su, r.rolcreaterole AS createrole, r.rolinherit AS inherit,
                current_setting('server_version_num')::int AS v,
                NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS owner_missing,
                EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AND pg_has_role(current_user, $1, 'USAGE') AS owner_ok,
                ARRAY(SELECT g FROM unnest($2::text[]) g WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = g)) AS missing,
                ARRAY(SELECT g FROM unnest($2::text[]) g WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = g)
                        AND NOT pg_has_role(current_user, g, 'MEMBER WITH ADMIN OPTION')) AS no_admin
           FROM pg_roles r WHERE r.rolname = current_user`,
        [spec.owner, roles],
      );
      const row = res.rows[0];
      if (!row) return [];
      const problems: string[] = [];
      const admin = quoteIdent(row.user);
      const the = `the admin ${admin}`;
      if (row.owner_missing) problems.push(`owner role ${quoteIdent(spec.owner)} does not exist`);
      for (const g of row.missing) problems.push(`granted role ${quoteIdent(g)} does not exist`);
      if (row.su) return problems;
      if (!row.createrole) problems.push(`${the} lacks CREATEROLE: ALTER ROLE ${admin} CREATEROLE`);
      if (!row.owner_missing && !row.owner_ok)
        problems.push(
          `${the} does not have the privileges of the owner (REASSIGN OWNED needs them): GRANT ${quoteIdent(spec.owner)} TO ${admin}`,
        );
      if (!row.inherit && row.v < 160000)
        problems.push(
          `${admin} is NOINHERIT (membership grants would not apply): ALTER ROLE ${admin} INHERIT`,
        );
      if (row.v >= 160000)
        for (const g of row.no_admin)
          problems.push(
            `${admin} cannot grant ${quoteIdent(g)}: GRANT ${quoteIdent(g)} TO ${admin} WITH ADMIN OPTION`,
          );
      return problems;
    });
  }

  async #withAdmin<T>(spec: DynamicRoleSpec, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({
      host: spec.host,
      port: spec.port,
      user: spec.adminUser,
      password: spec.adminPassword.reveal(),
      database: spec.database,
      ssl: pgSsl(spec.tls, spec.host),
      application_name: 'ciport-credentials',
      connectionTimeoutMillis: 10_000,
      statement_timeout: this.#opts.statementTimeoutMs ?? 10_000,
    });
    client.on('error', () => {});
    try {
      await client.connect();
    } catch (err) {
      await client.end().catch(() => {});
      throw new CiportError(
        'CIPORT_E_UPSTREAM_UNREACHABLE',
        `target ${spec.target}: cannot connect as the dynamic-credentials admin: ${(err as Error).message}`,
      );
    }
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => {});
    }
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
