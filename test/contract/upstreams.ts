// The machine's real servers behind the contract suite's targets, shared by the gateway's and the
// agent's exits: a tcp echo server, a throwaway `redis-server --requirepass`, an HTTPS API that
// wants a bearer token, and a least-privilege role with a password on the machine's PostgreSQL
// (127.0.0.1:5432, database `test`). Secrets are named by env variable in `secrets`: the gateway
// and the agent resolve them, the job never sees them.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { makePki, startUpstream, type Upstream } from '../exits/http/helpers.js';
import { type RedisServer, startRedis } from '../fixtures/redis-server.js';
import { run } from './driver.js';
import { type EchoServer, startEcho } from './echo.js';

export interface ApiUpstream extends Upstream {
  /** TLS connections accepted since start, and open now. */
  accepted: number;
  open: Set<Socket>;
  /**
   * Requests the API is still serving (not answered, connection not closed). An exit's idle
   * keep-alive sockets are not counted: the target's pool shares them (4 s idle timeout) and they
   * carry nothing of a session.
   */
  inFlight: Set<ServerResponse>;
}

export interface Upstreams {
  echo: EchoServer;
  redis: RedisServer;
  api: ApiUpstream;
  /** The API's CA (PEM file), for the http targets' `tls.ca`. */
  apiCaFile: string;
  pgRole: string;
  /** A least-privilege MariaDB user (127.0.0.1:3306) and its own database. */
  mysqlUser: string;
  mysqlDb: string;
  /** Env variable name → secret value (what the exits inject). */
  secrets: { PG_PW: string; REDIS_PW: string; API_TOKEN: string; MYSQL_PW: string };
  /** SQL as root on the machine's MariaDB; tab-separated rows without headers. */
  mysqlAdmin(sql: string): Promise<string>;
  /** SQL as the superuser on the machine's PostgreSQL (database `test`); unaligned output. */
  pgAdmin(sql: string): Promise<string>;
  /** redis-cli straight to the server with its real password. */
  redisDirect(...args: string[]): Promise<string>;
  /** Connections Redis accepted so far, not counting redisDirect's own. */
  redisAccepted(): Promise<number>;
  stop(): Promise<void>;
}

const pgAdminEnv = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  PSQLRC: '/dev/null',
  PGCONNECT_TIMEOUT: '10',
};

async function mysqlAdmin(sql: string): Promise<string> {
  // SQL on stdin: the user's password stays out of argv.
  const r = await run(['mariadb', '-uroot', '-h127.0.0.1', '-P3306', '-N', '-B'], pgAdminEnv, { stdin: sql });
  if (r.code !== 0) throw new Error(`mariadb as root failed: ${r.stderr}`);
  return r.stdout;
}

async function pgAdmin(sql: string): Promise<string> {
  // Two suites granting on database `test` at once collide on its ACL row: PostgreSQL says
  // "tuple concurrently updated"; the statement is safe to run again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await pgAdminOnce(sql);
    } catch (err) {
      if (attempt >= 5 || !/tuple concurrently updated/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}

async function pgAdminOnce(sql: string): Promise<string> {
  // SQL on stdin: the role's password stays out of argv.
  const r = await run(
    ['psql', '-h', '127.0.0.1', '-U', 'postgres', '-d', 'test', '-v', 'ON_ERROR_STOP=1', '-tAq', '-f', '-'],
    pgAdminEnv,
    { stdin: sql },
  );
  if (r.code !== 0) throw new Error(`psql as postgres failed: ${r.stderr}`);
  return r.stdout;
}

export async function startUpstreams(dir: string): Promise<Upstreams> {
  const suffix = randomBytes(4).toString('hex');
  const secrets = {
    PG_PW: `pg-Secret-${randomBytes(9).toString('base64url')}`,
    REDIS_PW: `redis-Secret-${randomBytes(9).toString('base64url')}`,
    API_TOKEN: `api-token-${randomBytes(9).toString('base64url')}`,
    MYSQL_PW: `my-Secret-${randomBytes(9).toString('base64url')}`,
  };
  const mysqlUser = `contract_${suffix}`;
  const mysqlDb = `contract_${suffix}`;
  await mysqlAdmin(
    `CREATE DATABASE ${mysqlDb};\n` +
      `CREATE USER '${mysqlUser}'@'127.0.0.1' IDENTIFIED BY '${secrets.MYSQL_PW}';\n` +
      `GRANT ALL ON ${mysqlDb}.* TO '${mysqlUser}'@'127.0.0.1';\n`,
  );
  const pgRole = `contract_${suffix}`;
  await pgAdmin(
    `CREATE ROLE ${pgRole} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '${secrets.PG_PW}';\n`,
  );
  await pgAdmin(`GRANT CONNECT, TEMPORARY ON DATABASE test TO ${pgRole};\n`);
  const echo = await startEcho();
  const redis = await startRedis(['--requirepass', secrets.REDIS_PW]);
  const pki = makePki();
  const apiCaFile = join(dir, 'api-ca.pem');
  writeFileSync(apiCaFile, pki.caPem);
  const api = Object.assign(
    await startUpstream(pki, { name: 'authorization', value: `Bearer ${secrets.API_TOKEN}` }),
    { accepted: 0, open: new Set<Socket>(), inFlight: new Set<ServerResponse>() },
  );
  api.server.on('request', (_req, res: ServerResponse) => {
    api.inFlight.add(res);
    res.once('close', () => api.inFlight.delete(res));
  });
  api.server.on('secureConnection', (s: Socket) => {
    api.accepted++;
    api.open.add(s);
    s.once('close', () => api.open.delete(s));
  });
  let directCalls = 0;
  const redisDirect = async (...args: string[]) => {
    directCalls++;
    const r = await run(['redis-cli', '-p', String(redis.port), '--no-auth-warning', '-n', '1', ...args], {
      PATH: pgAdminEnv.PATH,
      REDISCLI_AUTH: secrets.REDIS_PW,
    });
    if (r.code !== 0) throw new Error(`redis-cli failed: ${r.stderr}`);
    return r.stdout;
  };
  return {
    echo,
    redis,
    api,
    apiCaFile,
    pgRole,
    mysqlUser,
    mysqlDb,
    secrets,
    pgAdmin,
    mysqlAdmin,
    redisDirect,
    async redisAccepted() {
      const info = await redisDirect('INFO', 'stats');
      return Number(/total_connections_received:(\d+)/.exec(info)?.[1]) - directCalls;
    },
    async stop() {
      for (const id of (
        await mysqlAdmin(`SELECT id FROM information_schema.processlist WHERE user = '${mysqlUser}'`)
      )
        .split('\n')
        .filter(Boolean))
        await mysqlAdmin(`KILL ${id}`).catch(() => '');
      await mysqlAdmin(
        `DROP USER IF EXISTS '${mysqlUser}'@'127.0.0.1';\nDROP DATABASE IF EXISTS ${mysqlDb};\n`,
      );
      await echo.close();
      await redis.stop();
      await api.close();
      await pgAdmin(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '${pgRole}';\n` +
          `REVOKE ALL ON DATABASE test FROM ${pgRole};\nDROP ROLE IF EXISTS ${pgRole};\n`,
      );
    },
  };
}
