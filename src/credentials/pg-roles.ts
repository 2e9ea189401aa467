// Per-session PostgreSQL roles (`credentials.dynamic` on a postgres target; docs/credentials.md).
//
// For each (session, target) the exit creates `ciport_<16 hex>` — LOGIN, a random password,
// VALID UNTIL the session's expiry, IN ROLE the roles the policy grants — on the session's first
// connection (default) or when the session opens, and injects it instead of a static credential.
// When the session ends: NOLOGIN, terminate its backends, REASSIGN OWNED BY … TO owner,
// DROP OWNED BY …, DROP ROLE. A reaper (at start and periodically) drops every role whose COMMENT
// names a session that is no longer active in the store, or whose VALID UNTIL passed.
//
// The password is random per role, never logged and never put in SQL text: the role is created
// with a SCRAM-SHA-256 verifier computed here, so even `log_statement = all` on the server
// records no password.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { TargetConfig } from '../config/schema.js';
import type { Secret } from '../config/secret.js';
import { CiportError } from '../errors/index.js';
import { makeScramVerifier } from '../protocols/postgres/scram.js';
import type { UpstreamTlsOptions } from '../protocols/postgres/upstream.js';
import { splitHostPort } from '../protocols/tcp/exit.js';
import { DYNAMIC_ROLE_PREFIX, dynamicRoleName } from './otp.js';

export const ROLE_COMMENT_PREFIX = 'ciport session ';

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
}

export interface RoleCredential {
  user: string;
  password: string;
}

export interface RoleEvent {
  type: 'credential.created' | 'credential.revoked';
  session: string;
  target: string;
  role: string;
  granted?: string[];
  valid_until?: string;
  reason?: string;
  terminated?: number;
  error?: string;
}

export interface RoleLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface DynamicRolesOptions {
  log: RoleLog;
  /** Write an audit event (errors are the caller's to log). */
  audit: (event: RoleEvent) => Promise<void>;
  /** Admin statements time out after this (default 10 s). */
  statementTimeoutMs?: number;
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

  constructor(specs: DynamicRoleSpec[], options: DynamicRolesOptions) {
    this.#specs = new Map(specs.map((s) => [s.target, s]));
    this.#opts = options;
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
    const role = dynamicRoleName(session.id);
    const password = randomBytes(24).toString('base64url');
    const verifier = await scramVerifierText(password);
    const grant = [...(grantOverride ?? spec.grant)];
    const validUntil = new Date(session.expiresAt).toISOString();
    const comment = `${ROLE_COMMENT_PREFIX}${session.id}`;
    await this.#withAdmin(spec, async (c) => {
      const exists = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
      if (exists.rowCount) {
        // A restarted exit adopting a live session: the password is not known any more.
        await c.query(
          `ALTER ROLE ${quoteIdent(role)} LOGIN PASSWORD ${quoteLiteral(verifier)} VALID UNTIL ${quoteLiteral(validUntil)}`,
        );
      } else {
        const inRole = grant.length > 0 ? ` IN ROLE ${grant.map(quoteIdent).join(', ')}` : '';
        await c.query(
          `CREATE ROLE ${quoteIdent(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION ` +
            `PASSWORD ${quoteLiteral(verifier)} VALID UNTIL ${quoteLiteral(validUntil)}${inRole}`,
        );
        await c.query(`COMMENT ON ROLE ${quoteIdent(role)} IS ${quoteLiteral(comment)}`);
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

  /** Drop the session's roles on every dynamic target it may have used. Never throws. */
  async revokeSession(sessionId: string, targets: readonly string[], reason: string): Promise<void> {
    await Promise.all(
      targets
        .filter((t) => this.#specs.has(t))
        .map(async (target) => {
          const key = `${sessionId}\u0000${target}`;
          const pending = this.#live.get(key);
          this.#live.delete(key);
          if (pending) await pending.catch(() => undefined);
          await this.#drop(target, dynamicRoleName(sessionId), sessionId, reason, Boolean(pending));
        }),
    );
  }

  /**
   * Drop the role `role` on `target`. `known`: we created it in this process (an event is
   * written even when it turns out gone). Roles that do not exist are skipped silently.
   */
  async #drop(
    target: string,
    role: string,
    sessionId: string,
    reason: string,
    known: boolean,
  ): Promise<boolean> {
    const spec = this.#specs.get(target);
    if (!spec) return false;
    let terminated = 0;
    let existed = false;
    try {
      await this.#withAdmin(spec, async (c) => {
        const exists = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
        if (!exists.rowCount) return;
        existed = true;
        const r = quoteIdent(role);
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
      const message = (err as Error).message;
      this.#opts.log.warn({ session: sessionId, target, role, err: message }, 'per-session role not dropped');
      await this.#audit({
        type: 'credential.revoked',
        session: sessionId,
        target,
        role,
        reason,
        error: message,
      });
      return false;
    }
    if (!existed && !known) return false;
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

  /**
   * Drop every ciport role on every dynamic target whose session is not in `active`, or whose
   * VALID UNTIL passed. Roles named `ciport_…` without a ciport COMMENT are left alone (not ours).
   * Returns how many roles were dropped.
   */
  async reap(active: ReadonlySet<string>, now = Date.now()): Promise<number> {
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
      for (const row of rows) {
        if (!row.comment?.startsWith(ROLE_COMMENT_PREFIX)) continue;
        const sessionId = row.comment.slice(ROLE_COMMENT_PREFIX.length);
        if (active.has(sessionId) && !row.expired) continue;
        const key = `${sessionId}\u0000${spec.target}`;
        this.#live.delete(key);
        if (await this.#drop(spec.target, row.rolname, sessionId, 'reaper', false)) dropped += 1;
      }
    }
    return dropped;
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
