// A mysql target with per-session users (credentials.dynamic) for a contract world: its driver
// (`<protocol>-gw` in the gateway's config, `<protocol>-ag` in the agent's), and the role, table
// and admin it needs on the machine's MariaDB, made as docs/mysql.md tells an operator to.
import { randomBytes } from 'node:crypto';
import type { Driver } from './driver.js';
import type { Upstreams } from './upstreams.js';

export interface MysqlUsersFixture {
  driver: Driver;
  /** The role every session's user is granted (SELECT, INSERT on the database). */
  role: string;
  admin: string;
  adminPassword: string;
  /** A table of the database, for the jobs to write to. */
  table: string;
  /** Create the table, the role and the admin; the admin's password becomes a secret of `up`. */
  setUp(up: Upstreams): Promise<void>;
  tearDown(up: Upstreams): Promise<void>;
}

/** `adminGrants`: the admin's global privileges (docs/mysql.md: CREATE USER, CONNECTION ADMIN). */
export function mysqlUsersFixture(protocol: string, adminGrants: string): MysqlUsersFixture {
  const s = randomBytes(3).toString('hex');
  const role = `${protocol}_rw_${s}`;
  const admin = `${protocol}_adm_${s}`;
  const adminPassword = randomBytes(12).toString('hex');
  const table = `${protocol}_t_${s}`;
  const env = `${protocol.toUpperCase()}_ADMIN_PW`;
  const driver = {
    protocol,
    target: (name: string, u: Upstreams) => ({
      name,
      protocol: 'mysql',
      address: '127.0.0.1:3306',
      database: u.mysqlDb,
      credentials: { dynamic: { admin: { user: admin, password: { env } }, grant: [role] } },
    }),
  } as unknown as Driver;
  return {
    driver,
    role,
    admin,
    adminPassword,
    table,
    async setUp(up) {
      await up.mysqlAdmin(
        `CREATE TABLE ${up.mysqlDb}.${table} (id INT);\n` +
          `CREATE ROLE ${role};\nGRANT SELECT, INSERT ON ${up.mysqlDb}.* TO ${role};\n` +
          `CREATE USER '${admin}'@'%' IDENTIFIED BY '${adminPassword}';\n` +
          `GRANT ${adminGrants} ON *.* TO '${admin}'@'%';\n` +
          `GRANT SELECT (User, Host) ON mysql.user TO '${admin}'@'%';\n` +
          `GRANT ${role} TO '${admin}'@'%' WITH ADMIN OPTION;\n`,
      );
      (up.secrets as Record<string, string>)[env] = adminPassword;
    },
    async tearDown(up) {
      await up
        .mysqlAdmin(`DROP ROLE IF EXISTS ${role};\nDROP USER IF EXISTS '${admin}'@'%';\n`)
        .catch(() => '');
    },
  };
}
