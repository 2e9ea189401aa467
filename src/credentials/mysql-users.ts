// Per-session MySQL/MariaDB users: the mysql AccountEngine of src/credentials/dynamic.ts
// (docs/mysql.md, "Per-session users").
//
// The account is `'ciport_<6>_<5>_<12>'@'%'` (src/credentials/account-names.ts): hashes of the
// deployment id, the target and the session id. MariaDB keeps no comment on a user (MySQL 8
// does, MariaDB does not), so the name itself is the ownership tag: a target's exit only ever
// lists, drops or adopts users whose name carries its deployment's and its target's hashes, and
// the reaper tells live users from stale ones by computing the names of the active sessions.
// 32 characters: MySQL's limit for user names.
//
// Created with the password's mysql_native_password hash (never the password itself in SQL text,
// so the general log and the binlog hold no secret); on a MySQL without that plugin (8.4+ unless
// enabled), with caching_sha2_password BY the password, which MySQL rewrites out of its logs.
// The granted roles become the user's default roles: MySQL 8 lets the admin set them
// (CREATE USER suffices); MariaDB only lets a user set its own, so the new user does that in a
// connection of its own, and MariaDB activates one role per connection (grant one role that
// holds the others).
// To drop one, its threads must end first — DROP USER (and REVOKE) leave connected sessions
// running with their privileges, and a compound statement looping with a CONTINUE HANDLER runs
// on after its client is gone. An admin with CONNECTION ADMIN (MariaDB 10.5+; SUPER before;
// MySQL: CONNECTION_ADMIN and PROCESS) locks the account and ends them itself. Without it, the
// admin sets a fresh password, logs in as the user, locks it, and that connection kills the
// user's other threads (one's own threads may always be killed). The job can fight that: its
// user may re-password itself (SET PASSWORD needs no privilege) and kill its own threads, the
// drop's among them, from a loop left running. So the fallback checks that it won — it logged in
// and no other thread of the user is left — and otherwise fails (credential.revoke_failed; the
// account stays locked, the reaper retries) rather than dropping a user whose threads live on.
import { createHash, randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import { CiportError } from '../errors/index.js';
import { DYNAMIC_ROLE_PREFIX, mysqlUserName, mysqlUserPrefix } from './account-names.js';
import type {
  AccountEngine,
  AccountRow,
  CreateRequest,
  DropRequest,
  DropResult,
  DynamicSpec,
} from './dynamic.js';

const HOST = '%';
const ER_CANNOT_USER = 1396;
const ER_PLUGIN_IS_NOT_LOADED = 1524;
const ER_NO_SUCH_THREAD = 1094;

/** The mysql_native_password hash: `*` + upper-case hex of SHA1(SHA1(password)). */
export function nativePasswordHash(password: string): string {
  const inner = createHash('sha1').update(password, 'utf8').digest();
  return `*${createHash('sha1').update(inner).digest('hex').toUpperCase()}`;
}

/** `` `role` `` with embedded backticks doubled (MySQL identifier quoting). */
export function quoteMysqlIdent(name: string): string {
  if (name.includes('\u0000')) throw new CiportError('CIPORT_E_CONFIG_INVALID', 'identifier with NUL');
  return mysql.escapeId(name, true);
}

/** `'user'@'%'` (string-literal quoting, as account names are written). */
function account(name: string): string {
  return `${mysql.escape(name)}@${mysql.escape(HOST)}`;
}

type Conn = mysql.Connection;

function sslOf(spec: DynamicSpec): mysql.ConnectionOptions['ssl'] {
  const tls = spec.tls;
  if (!tls) return undefined;
  if (tls.mode === 'require') return { rejectUnauthorized: false };
  return {
    rejectUnauthorized: true,
    ...(tls.ca ? { ca: tls.ca } : {}),
    ...(tls.mode === 'verify-ca' ? { checkServerIdentity: () => undefined } : {}),
    ...(tls.servername ? { servername: tls.servername } : {}),
  } as mysql.ConnectionOptions['ssl'];
}

async function connect(spec: DynamicSpec, user: string, password: string): Promise<Conn> {
  try {
    const c = await mysql.createConnection({
      host: spec.host,
      port: spec.port,
      user,
      password,
      ssl: sslOf(spec),
      connectTimeout: 10_000,
      multipleStatements: false,
      supportBigNumbers: true,
    });
    c.on('error', () => {});
    return c;
  } catch (err) {
    throw new CiportError(
      'CIPORT_E_UPSTREAM_UNREACHABLE',
      `target ${spec.target}: cannot connect as ${user === spec.adminUser ? 'the dynamic-credentials admin' : 'the per-session user'}: ${(err as Error).message}`,
      { details: { errno: errno(err) } },
    );
  }
}

async function withAdmin<T>(spec: DynamicSpec, fn: (c: Conn) => Promise<T>): Promise<T> {
  let c: Conn;
  try {
    c = await connect(spec, spec.adminUser, spec.adminPassword.reveal());
  } catch (err) {
    // Access denied (1045): a provider-backed password may have been rotated; it is read again
    // and, when it changed, used at once (docs/secrets.md).
    const refused = err instanceof CiportError && err.details?.errno === 1045;
    if (!refused || !(await spec.adminPassword.refused())) throw err;
    c = await connect(spec, spec.adminUser, spec.adminPassword.reveal());
  }
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => c.destroy());
  }
}

async function run(c: Conn, sql: string, timeoutMs: number): Promise<unknown[]> {
  const [rows] = await c.query({ sql, timeout: timeoutMs });
  return Array.isArray(rows) ? rows : [];
}

const errno = (err: unknown) => (err as { errno?: number }).errno;

async function isMariaDb(c: Conn, timeoutMs: number): Promise<boolean> {
  const rows = (await run(c, 'SELECT VERSION() AS v', timeoutMs)) as { v: string }[];
  return /mariadb/i.test(rows[0]?.v ?? '');
}

/** Set the user's password: the native hash, or caching_sha2 where native is not loaded. */
async function identify(
  c: Conn,
  verb: 'CREATE USER' | 'ALTER USER',
  name: string,
  password: string,
  timeoutMs: number,
): Promise<void> {
  try {
    await run(
      c,
      `${verb} ${account(name)} IDENTIFIED WITH mysql_native_password AS ${mysql.escape(nativePasswordHash(password))}${verb === 'ALTER USER' ? ' ACCOUNT UNLOCK' : ''}`,
      timeoutMs,
    );
  } catch (err) {
    if (errno(err) !== ER_PLUGIN_IS_NOT_LOADED) throw err;
    await run(
      c,
      `${verb} ${account(name)} IDENTIFIED WITH caching_sha2_password BY ${mysql.escape(password)}${verb === 'ALTER USER' ? ' ACCOUNT UNLOCK' : ''}`,
      timeoutMs,
    );
  }
}

function mine(
  name: string,
  target: string,
  req: { session: string | undefined; deployment: string },
): boolean {
  if (req.session !== undefined) return name === mysqlUserName(req.session, req.deployment, target);
  return new RegExp(`^${mysqlUserPrefix(req.deployment, target)}[0-9a-z]{12}$`).test(name);
}

async function exists(c: Conn, name: string, timeoutMs: number): Promise<boolean> {
  const rows = await run(
    c,
    `SELECT User FROM mysql.user WHERE User = ${mysql.escape(name)} AND Host = ${mysql.escape(HOST)}`,
    timeoutMs,
  );
  return rows.length > 0;
}

/** How the admin can end another user's threads: MariaDB's KILL … USER, MySQL's list and KILL. */
type Killer = 'kill-user' | 'list-and-kill';

function killer(privileges: ReadonlySet<string>, mariadb: boolean): Killer | undefined {
  if (mariadb) return privileges.has('CONNECTION ADMIN') || privileges.has('SUPER') ? 'kill-user' : undefined;
  const kill = privileges.has('CONNECTION_ADMIN') || privileges.has('SUPER');
  return kill && privileges.has('PROCESS') ? 'list-and-kill' : undefined;
}

/** The admin's global privileges. */
async function privilegesOf(c: Conn, timeoutMs: number): Promise<Set<string>> {
  const sql = 'SELECT PRIVILEGE_TYPE AS p FROM information_schema.USER_PRIVILEGES';
  return new Set(((await run(c, sql, timeoutMs)) as { p: string }[]).map((r) => r.p));
}

async function endsConnections(c: Conn, timeoutMs: number): Promise<Killer | undefined> {
  return killer(await privilegesOf(c, timeoutMs), await isMariaDb(c, timeoutMs));
}

/** Lock the account and end every thread of it as the admin; how many there were. */
async function endAsAdmin(c: Conn, name: string, how: Killer, timeoutMs: number): Promise<number> {
  await run(c, `ALTER USER ${account(name)} ACCOUNT LOCK`, timeoutMs);
  if (how === 'kill-user') {
    const [result] = await c.query({ sql: `KILL HARD CONNECTION USER ${account(name)}`, timeout: timeoutMs });
    return Number((result as { affectedRows?: number }).affectedRows ?? 0);
  }
  const threads = (await run(
    c,
    `SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = ${mysql.escape(name)}`,
    timeoutMs,
  )) as { id: number | string }[];
  return killEach(c, threads, timeoutMs);
}

async function killEach(c: Conn, threads: { id: number | string }[], timeoutMs: number): Promise<number> {
  let killed = 0;
  for (const { id } of threads) {
    try {
      await run(c, `KILL CONNECTION ${Number(id)}`, timeoutMs);
      killed += 1;
    } catch (err) {
      if (errno(err) !== ER_NO_SUCH_THREAD) throw err;
    }
  }
  return killed;
}

/**
 * Without CONNECTION ADMIN: a fresh password, a login as the user, ACCOUNT LOCK, then that
 * connection kills the user's other threads and checks none is left. Throws (the account stays
 * locked) when it cannot log in or is cut off: a thread of the user may be fighting the drop.
 */
async function endAsUser(spec: DynamicSpec, c: Conn, name: string, timeoutMs: number): Promise<number> {
  // A password only this call knows, so that it can log in as the user to end its threads.
  const fresh = randomBytes(24).toString('base64url');
  await identify(c, 'ALTER USER', name, fresh, timeoutMs);
  const fail = async (what: string, err: unknown): Promise<never> => {
    await run(c, `ALTER USER ${account(name)} ACCOUNT LOCK`, timeoutMs);
    throw new CiportError(
      'CIPORT_E_MYSQL_USER_REVOKE_FAILED',
      `${name} is locked but not dropped: ${what} (${(err as Error).message}); a statement of the session may be changing its password or killing its threads. ` +
        'An admin with CONNECTION ADMIN ends its connections without logging in as it (docs/mysql.md, "Per-session users")',
    );
  };
  const own = await connect(spec, name, fresh).catch((err: unknown) =>
    fail('cannot log in as the user to end its connections', err),
  );
  try {
    await run(c, `ALTER USER ${account(name)} ACCOUNT LOCK`, timeoutMs);
    const others = async () =>
      (await run(
        own,
        'SELECT ID AS id FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()',
        timeoutMs,
      )) as { id: number | string }[];
    const terminated = await killEach(own, await others(), timeoutMs);
    // A killed thread leaves the list once it has noticed; one that stays is still running.
    const deadline = Date.now() + Math.min(timeoutMs, 5_000);
    for (;;) {
      const left = await others();
      if (left.length === 0) return terminated;
      if (Date.now() > deadline) throw new Error(`${left.length} connection(s) of the user still running`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    return fail('its connections could not all be ended', err);
  } finally {
    await own.end().catch(() => own.destroy());
  }
}

export const mysqlUserEngine: AccountEngine = {
  revokeFailedCode: 'CIPORT_E_MYSQL_USER_REVOKE_FAILED',
  createFailedCode: 'CIPORT_E_MYSQL_UPSTREAM_REFUSED',
  adminDocs: 'docs/mysql.md, "Per-session users"',

  accountName: mysqlUserName,

  async create(spec: DynamicSpec, req: CreateRequest, timeoutMs: number): Promise<void> {
    const { account: name, password, grant } = req;
    if (!mine(name, spec.target, req))
      throw new CiportError('CIPORT_E_INTERNAL', 'per-session user name mismatch');
    const mariadb = await withAdmin(spec, async (c) => {
      const mariadb = await isMariaDb(c, timeoutMs);
      if (mariadb && grant.length > 1) {
        throw new CiportError(
          'CIPORT_E_CONFIG_INVALID',
          `target ${spec.target}: MariaDB activates one role per connection and ${grant.length} are granted ` +
            `(${grant.join(', ')}); grant one role that holds the others (GRANT a, b TO combined_role)`,
        );
      }
      try {
        await identify(c, 'CREATE USER', name, password, timeoutMs);
      } catch (err) {
        // A restarted exit adopting a live session: the name is this session's, the password
        // is not known any more.
        if (errno(err) !== ER_CANNOT_USER || !(await exists(c, name, timeoutMs))) throw err;
        await identify(c, 'ALTER USER', name, password, timeoutMs);
        return mariadb;
      }
      try {
        for (const role of grant)
          await run(c, `GRANT ${quoteMysqlIdent(role)} TO ${account(name)}`, timeoutMs);
        if (!mariadb && grant.length > 0) await run(c, `SET DEFAULT ROLE ALL TO ${account(name)}`, timeoutMs);
      } catch (err) {
        // Never leave a user without the grants the policy decided (or with half of them).
        await run(c, `DROP USER ${account(name)}`, timeoutMs).catch(() => {});
        throw err;
      }
      return mariadb;
    });
    if (mariadb && grant.length === 1) {
      const own = await connect(spec, name, password);
      try {
        await run(own, `SET DEFAULT ROLE ${quoteMysqlIdent(grant[0] as string)}`, timeoutMs);
      } catch (err) {
        await withAdmin(spec, (c) => run(c, `DROP USER ${account(name)}`, timeoutMs)).catch(() => {});
        throw err;
      } finally {
        await own.end().catch(() => own.destroy());
      }
    }
  },

  async drop(spec: DynamicSpec, req: DropRequest, timeoutMs: number): Promise<DropResult> {
    const name = req.account;
    if (!mine(name, spec.target, req)) return { state: 'foreign' };
    return withAdmin(spec, async (c): Promise<DropResult> => {
      if (!(await exists(c, name, timeoutMs))) return { state: 'absent' };
      const how = await endsConnections(c, timeoutMs);
      const terminated = how
        ? await endAsAdmin(c, name, how, timeoutMs)
        : await endAsUser(spec, c, name, timeoutMs);
      await run(c, `DROP USER ${account(name)}`, timeoutMs);
      return { state: 'dropped', terminated };
    });
  },

  async list(spec: DynamicSpec, deployment: string, _now: number, timeoutMs: number): Promise<AccountRow[]> {
    const rows = (await withAdmin(spec, (c) =>
      run(
        c,
        `SELECT User AS user FROM mysql.user WHERE Host = ${mysql.escape(HOST)} AND User LIKE ${mysql.escape(`${DYNAMIC_ROLE_PREFIX.slice(0, 6)}%`)}`,
        timeoutMs,
      ),
    )) as { user: string | Buffer }[];
    return rows
      .map((r) => String(r.user))
      .filter((user) => mine(user, spec.target, { session: undefined, deployment }))
      .map((user) => ({ account: user, session: undefined, deployment, expired: false }));
  },

  async checkAdmin(spec: DynamicSpec, roles: readonly string[], timeoutMs: number): Promise<string[]> {
    return withAdmin(spec, async (c) => {
      const problems: string[] = [];
      const who = ((await run(c, 'SELECT CURRENT_USER() AS u', timeoutMs)) as { u: string }[])[0]?.u ?? '';
      const at = who.lastIndexOf('@');
      const admin = at > 0 ? `${mysql.escape(who.slice(0, at))}@${mysql.escape(who.slice(at + 1))}` : who;
      const privileges = await privilegesOf(c, timeoutMs);
      const mariadb = await isMariaDb(c, timeoutMs);
      if (!privileges.has('CREATE USER'))
        problems.push(`the admin ${admin} lacks CREATE USER: GRANT CREATE USER ON *.* TO ${admin}`);
      try {
        await run(c, 'SELECT User, Host FROM mysql.user LIMIT 0', timeoutMs);
      } catch {
        problems.push(
          `the admin ${admin} cannot read user names (dropping users at session end and the reaper need it): GRANT SELECT (User, Host) ON mysql.user TO ${admin}`,
        );
      }
      // (A rule's `grants` with several roles is refused when a session gets them.)
      if (spec.grant.length > 1 && mariadb)
        problems.push(
          `MariaDB activates one role per connection and dynamic.grant has ${spec.grant.length} (${spec.grant.join(', ')}): grant one role that holds the others`,
        );
      if (!privileges.has('ROLE_ADMIN') && !privileges.has('SUPER')) {
        const grantable = new Set(
          (
            (await run(
              c,
              "SELECT ROLE_NAME AS r FROM information_schema.APPLICABLE_ROLES WHERE IS_GRANTABLE = 'YES'",
              timeoutMs,
            )) as { r: string }[]
          ).map((r) => r.r),
        );
        for (const role of roles)
          if (!grantable.has(role))
            problems.push(
              `the admin ${admin} cannot grant role ${quoteMysqlIdent(role)} (it does not exist, or the admin lacks ADMIN OPTION): GRANT ${quoteMysqlIdent(role)} TO ${admin} WITH ADMIN OPTION`,
            );
      }
      if (!killer(privileges, mariadb))
        problems.push(
          `the admin ${admin} cannot end a per-session user's connections itself, so a job's statement can outlive its session (docs/mysql.md, "Per-session users"): ` +
            (mariadb
              ? `GRANT CONNECTION ADMIN ON *.* TO ${admin} (SUPER before MariaDB 10.5)`
              : `GRANT CONNECTION_ADMIN, PROCESS ON *.* TO ${admin}`),
        );
      return problems;
    });
  },
};
