// Per-session PostgreSQL roles: the postgres AccountEngine of src/credentials/dynamic.ts
// (docs/credentials.md).
//
// For each (session, target) the exit creates `ciport_<16 hex>` — LOGIN, a random password,
// VALID UNTIL the session's expiry, IN ROLE the roles the policy grants. Its COMMENT, written in
// the same transaction, is the ownership tag `ciport deployment <deployment id> session <session
// id>`: each deployment only ever touches roles tagged with its own id.
// To drop one, the admin makes itself a member of the role (a non-superuser admin needs that for
// pg_terminate_backend, REASSIGN OWNED and DROP OWNED), NOLOGIN, terminate its backends,
// REASSIGN OWNED BY … TO owner, DROP OWNED BY …, DROP ROLE.
//
// The password is never put in SQL text: the role is created with a SCRAM-SHA-256 verifier
// computed here, so even `log_statement = all` on the server records no password.
import pg from 'pg';
import { CiportError } from '../errors/index.js';
import { makeScramVerifier } from '../exits/postgres/scram.js';
import { DYNAMIC_ROLE_PREFIX, dynamicRoleName } from './account-names.js';
import type {
  AccountEngine,
  AccountRow,
  AdminTls,
  CreateRequest,
  DropRequest,
  DropResult,
  DynamicSpec,
} from './dynamic.js';

/** COMMENT of roles made before deployment ids (legacy; see docs/credentials.md). */
export const ROLE_COMMENT_PREFIX = 'ciport session ';
/** COMMENT of roles: `ciport deployment <id> session <session id> target <target>`. */
export const ROLE_TAG_PREFIX = 'ciport deployment ';

export function roleComment(deployment: string, sessionId: string, target: string): string {
  return `${ROLE_TAG_PREFIX}${deployment} session ${sessionId} target ${target}`;
}

/**
 * Who a role's COMMENT says it belongs to; `deployment` undefined: a legacy tag; `target`
 * undefined: a tag written before roles were per target (any target of its deployment).
 */
export function parseRoleComment(
  comment: string | null | undefined,
): { deployment: string | undefined; session: string; target?: string } | undefined {
  if (!comment) return undefined;
  const m = /^ciport deployment ([0-9a-f]{8,32}) session (\S+?)(?: target (\S+))?$/.exec(comment);
  if (m)
    return {
      deployment: m[1] as string,
      session: m[2] as string,
      ...(m[3] !== undefined ? { target: m[3] } : {}),
    };
  if (comment.startsWith(ROLE_COMMENT_PREFIX)) {
    const session = comment.slice(ROLE_COMMENT_PREFIX.length);
    return session ? { deployment: undefined, session } : undefined;
  }
  return undefined;
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

function pgSsl(tls: AdminTls | undefined, host: string): pg.ClientConfig['ssl'] {
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

export const pgRoleEngine: AccountEngine = {
  revokeFailedCode: 'CIPORT_E_PG_ROLE_REVOKE_FAILED',
  createFailedCode: 'CIPORT_E_PG_UPSTREAM_REFUSED',
  adminDocs: 'docs/credentials.md, "Admin privileges"',

  // The session id and the target are in the COMMENT; the deployment is not needed in the name.
  accountName: (session, _deployment, target) => dynamicRoleName(session, target),

  async create(spec: DynamicSpec, req: CreateRequest, timeoutMs: number): Promise<void> {
    const { account: role, session, deployment, validUntil, grant } = req;
    const verifier = await scramVerifierText(req.password);
    const comment = roleComment(deployment, session, spec.target);
    await withAdmin(spec, timeoutMs, async (c) => {
      const exists = await c.query<{ comment: string | null }>(
        `SELECT shobj_description(oid, 'pg_authid') AS comment FROM pg_roles WHERE rolname = $1`,
        [role],
      );
      if (exists.rowCount) {
        // A restarted exit adopting a live session: the password is not known any more. Only
        // a role tagged for this very session (ours, or legacy) is adopted.
        const owner = parseRoleComment(exists.rows[0]?.comment);
        if (
          owner?.session !== session ||
          (owner.deployment && owner.deployment !== deployment) ||
          (owner.target !== undefined && owner.target !== spec.target)
        ) {
          throw new CiportError(
            'CIPORT_E_PG_UPSTREAM_REFUSED',
            `target ${spec.target}: role ${role} exists and does not belong to this session`,
          );
        }
        await c.query(
          `ALTER ROLE ${quoteIdent(role)} LOGIN PASSWORD ${quoteLiteral(verifier)} VALID UNTIL ${quoteLiteral(validUntil)}`,
        );
        if (!owner.deployment || owner.target === undefined)
          await c.query(`COMMENT ON ROLE ${quoteIdent(role)} IS ${quoteLiteral(comment)}`);
        return;
      }
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
    });
  },

  async drop(spec: DynamicSpec, req: DropRequest, timeoutMs: number): Promise<DropResult> {
    const role = req.account;
    return withAdmin(spec, timeoutMs, async (c): Promise<DropResult> => {
      const found = await c.query<{ comment: string | null; su: boolean; v: number }>(
        `SELECT shobj_description(r.oid, 'pg_authid') AS comment,
                coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS su,
                current_setting('server_version_num')::int AS v
           FROM pg_roles r WHERE r.rolname = $1`,
        [role],
      );
      const row = found.rows[0];
      if (!row) return { state: 'absent' };
      const owner = parseRoleComment(row.comment);
      const ours =
        owner !== undefined &&
        (req.session === undefined || owner.session === req.session) &&
        (owner.target === undefined || owner.target === spec.target) &&
        (owner.deployment === req.deployment || (owner.deployment === undefined && req.legacy));
      if (!ours) return { state: 'foreign' };
      const r = quoteIdent(role);
      // A non-superuser admin (CREATEROLE) needs the privileges of the role to terminate its
      // backends and for REASSIGN/DROP OWNED ("permission denied to reassign objects"
      // otherwise). PostgreSQL 16+ lets it grant that to itself because it holds ADMIN OPTION
      // on the roles it created; up to 15 CREATEROLE suffices. Dropping the role ends it.
      if (!row.su) await c.query(`GRANT ${r} TO CURRENT_USER${row.v >= 160000 ? ' WITH INHERIT TRUE' : ''}`);
      await c.query(`ALTER ROLE ${r} NOLOGIN`);
      const t = await c.query<{ n: string }>(
        'SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) AS n FROM pg_stat_activity WHERE usename = $1',
        [role],
      );
      await c.query(`REASSIGN OWNED BY ${r} TO ${quoteIdent(spec.owner ?? 'postgres')}`);
      await c.query(`DROP OWNED BY ${r}`);
      await c.query(`DROP ROLE ${r}`);
      return { state: 'dropped', terminated: Number(t.rows[0]?.n ?? 0) };
    });
  },

  async list(spec: DynamicSpec, _deployment: string, now: number, timeoutMs: number): Promise<AccountRow[]> {
    const rows = await withAdmin(spec, timeoutMs, async (c) => {
      const res = await c.query<{ rolname: string; expired: boolean; comment: string | null }>(
        `SELECT rolname, coalesce(rolvaliduntil <= to_timestamp($2::float8 / 1000), false) AS expired,
                shobj_description(oid, 'pg_authid') AS comment
           FROM pg_roles WHERE starts_with(rolname, $1)`,
        [DYNAMIC_ROLE_PREFIX, now],
      );
      return res.rows;
    });
    const out: AccountRow[] = [];
    for (const row of rows) {
      const owner = parseRoleComment(row.comment);
      if (!owner) continue; // not a ciport role
      if (owner.target !== undefined && owner.target !== spec.target) continue; // another target's
      out.push({
        account: row.rolname,
        session: owner.session,
        deployment: owner.deployment,
        expired: row.expired,
      });
    }
    return out;
  },

  async checkAdmin(spec: DynamicSpec, roles: readonly string[], timeoutMs: number): Promise<string[]> {
    const owner = spec.owner ?? 'postgres';
    return withAdmin(spec, timeoutMs, async (c) => {
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
        [owner, roles],
      );
      const row = res.rows[0];
      if (!row) return [];
      const problems: string[] = [];
      const admin = quoteIdent(row.user);
      const the = `the admin ${admin}`;
      if (row.owner_missing) problems.push(`owner role ${quoteIdent(owner)} does not exist`);
      for (const g of row.missing) problems.push(`granted role ${quoteIdent(g)} does not exist`);
      if (row.su) return problems;
      if (!row.createrole) problems.push(`${the} lacks CREATEROLE: ALTER ROLE ${admin} CREATEROLE`);
      if (!row.owner_missing && !row.owner_ok)
        problems.push(
          `${the} does not have the privileges of the owner (REASSIGN OWNED needs them): GRANT ${quoteIdent(owner)} TO ${admin}`,
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
  },
};

async function withAdmin<T>(
  spec: DynamicSpec,
  timeoutMs: number,
  fn: (c: pg.Client) => Promise<T>,
  retried = false,
): Promise<T> {
  const client = new pg.Client({
    host: spec.host,
    port: spec.port,
    user: spec.adminUser,
    password: spec.adminPassword.reveal(),
    database: spec.database ?? 'postgres',
    ssl: pgSsl(spec.tls, spec.host),
    application_name: 'ciport-credentials',
    connectionTimeoutMillis: 10_000,
    statement_timeout: timeoutMs,
  });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    // Login refused (28P01, 28000): a provider-backed password may have been rotated; it is read
    // again and, when it changed, used at once (docs/secrets.md).
    const refused = String((err as { code?: unknown }).code).startsWith('28');
    if (refused && !retried && (await spec.adminPassword.refused()))
      return withAdmin(spec, timeoutMs, fn, true);
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
