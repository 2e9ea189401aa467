// What the command sees: one local listener per target, described by env vars (DESIGN,
// "Contract the tests rely on"). For `staging-db`: CIPORT_STAGING_DB_URL / _HOST / _PORT;
// for a single postgres target also DATABASE_URL and libpq's PG* variables; for a single mysql
// target MYSQL_HOST/_TCP_PORT/_USER/_PWD (and DATABASE_URL unless postgres has it); for redis targets
// REDISCLI_AUTH (the port's one-time password) and, for a single one, REDIS_URL; for ssh targets
// CIPORT_<T>_SSH_CONFIG (a private ssh_config) and, for a single one, GIT_SSH_COMMAND.
import { CiportError } from '../errors/errors.js';
import type { OneTimeCredential, Protocol } from './session.js';

/** `db` or `db:15432` from the command line. */
export interface TargetSpec {
  name: string;
  /** 0: any free port. */
  port: number;
}

const TARGET_RE = /^([a-z0-9][a-z0-9_-]{0,62})(?::(\d{1,5}))?$/;

export function parseTargetSpec(text: string): TargetSpec {
  const m = TARGET_RE.exec(text);
  if (!m) {
    throw new CiportError(
      'CIPORT_E_USAGE',
      `target "${text}": expected NAME or NAME:LOCALPORT (lowercase letters, digits, "-", "_")`,
    );
  }
  const port = m[2] === undefined ? 0 : Number(m[2]);
  if (port > 65535) throw new CiportError('CIPORT_E_USAGE', `target "${text}": port ${port} is out of range`);
  const name = m[1] as string;
  return { name, port };
}

export function parseTargetSpecs(texts: string[]): TargetSpec[] {
  const specs = texts.map(parseTargetSpec);
  const seen = new Set<string>();
  for (const s of specs) {
    if (seen.has(s.name)) throw new CiportError('CIPORT_E_USAGE', `target "${s.name}" is named twice`);
    seen.add(s.name);
  }
  return specs;
}

/** A granted target with its local listener. */
export interface BoundTarget {
  name: string;
  protocol: Protocol;
  database?: string | undefined;
  host: string;
  port: number;
  credentials?: OneTimeCredential | undefined;
  /** ssh: the session's private ssh_config naming the target as its Host (docs/ssh.md). */
  sshConfig?: string | undefined;
  /** aws: the loopback endpoint's path, the port's authorization token, the target's region. */
  aws?: { path: string; token: string; region?: string | undefined } | undefined;
}

const SCHEMES: Record<Protocol, string> = {
  postgres: 'postgres',
  mysql: 'mysql',
  redis: 'redis',
  http: 'http',
  tcp: 'tcp',
  ssh: 'ssh',
  aws: 'http',
};

/** `staging-db` → `STAGING_DB`. */
export function envName(target: string): string {
  return target.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

/** encodeURIComponent, plus the sub-delimiters it leaves alone (`!'()*`). */
function encode(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * The connection URL for a bound target (a one-time credential in it when there is one; redis's
 * has no user: `redis://:OTP@127.0.0.1:PORT/DB`, Redis's `default` user).
 */
export function targetUrl(t: BoundTarget): string {
  const auth = t.credentials ? `${encode(t.credentials.user)}:${encode(t.credentials.password)}@` : '';
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  const path = t.aws ? t.aws.path : t.database ? `/${encode(t.database)}` : '';
  return `${SCHEMES[t.protocol]}://${auth}${host}:${t.port}${path}`;
}

/** Every variable exported to the command, in a stable order. */
export function exportedEnv(targets: BoundTarget[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const t of targets) {
    const n = envName(t.name);
    env[`CIPORT_${n}_URL`] = targetUrl(t);
    env[`CIPORT_${n}_HOST`] = t.host;
    env[`CIPORT_${n}_PORT`] = String(t.port);
  }
  const postgres = targets.filter((t) => t.protocol === 'postgres');
  const pg = postgres[0];
  if (postgres.length === 1 && pg) {
    env.DATABASE_URL = targetUrl(pg);
    env.PGHOST = pg.host;
    env.PGPORT = String(pg.port);
    if (pg.database) env.PGDATABASE = pg.database;
    if (pg.credentials) {
      env.PGUSER = pg.credentials.user;
      env.PGPASSWORD = pg.credentials.password;
    }
  }
  const mysql = targets.filter((t) => t.protocol === 'mysql');
  const my = mysql[0];
  if (mysql.length === 1 && my) {
    // What the mysql/mariadb CLI reads (the user still goes on its command line: -u "$MYSQL_USER").
    env.MYSQL_HOST = my.host;
    env.MYSQL_TCP_PORT = String(my.port);
    if (my.credentials) {
      env.MYSQL_USER = my.credentials.user;
      env.MYSQL_PWD = my.credentials.password;
    }
    // DATABASE_URL is postgres's when the port also has one postgres target.
    if (!env.DATABASE_URL) env.DATABASE_URL = targetUrl(my);
  }
  const redis = targets.filter((t) => t.protocol === 'redis');
  // One password for every redis target of a port, so redis-cli works with any of them.
  const redisPassword = redis.find((t) => t.credentials)?.credentials?.password;
  if (redisPassword) env.REDISCLI_AUTH = redisPassword;
  if (redis.length === 1 && redis[0]) env.REDIS_URL = targetUrl(redis[0]);
  const ssh = targets.filter((t) => t.sshConfig);
  for (const t of ssh) env[`CIPORT_${envName(t.name)}_SSH_CONFIG`] = t.sshConfig as string;
  // git runs it through the shell: the path single-quoted.
  if (ssh.length === 1 && ssh[0]) env.GIT_SSH_COMMAND = `ssh -F ${shellQuote(ssh[0].sshConfig as string)}`;
  // aws: what every AWS SDK and the CLI read (docs/aws.md). One token per port; with several aws
  // targets, the job points AWS_CONTAINER_CREDENTIALS_FULL_URI at the CIPORT_<T>_URL it wants.
  const aws = targets.filter((t) => t.aws);
  const token = aws[0]?.aws?.token;
  if (token) env.AWS_CONTAINER_AUTHORIZATION_TOKEN = token;
  if (aws.length === 1 && aws[0]) {
    env.AWS_CONTAINER_CREDENTIALS_FULL_URI = targetUrl(aws[0]);
    // Both names: the AWS CLI v2 and the newer SDKs read AWS_REGION, botocore/boto3 and the
    // AWS CLI v1 only AWS_DEFAULT_REGION.
    const region = aws[0].aws?.region;
    if (region) Object.assign(env, { AWS_REGION: region, AWS_DEFAULT_REGION: region });
  }
  return env;
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * Variables of the job's own environment that would take precedence over the exported endpoint
 * (an ECS task's relative URI wins over the full URI in the SDKs): removed when a port has an
 * aws target.
 */
export function shadowingKeys(targets: BoundTarget[]): string[] {
  return targets.some((t) => t.aws) ? ['AWS_CONTAINER_CREDENTIALS_RELATIVE_URI'] : [];
}

/** The exported variables that carry a one-time credential (kept out of logs). */
export function credentialKeys(targets: BoundTarget[]): string[] {
  const keys = targets.filter((t) => t.credentials).map((t) => `CIPORT_${envName(t.name)}_URL`);
  const postgres = targets.filter((t) => t.protocol === 'postgres');
  if (postgres.length === 1 && postgres[0]?.credentials) keys.push('DATABASE_URL', 'PGPASSWORD');
  const mysql = targets.filter((t) => t.protocol === 'mysql');
  if (mysql.length === 1 && mysql[0]?.credentials) {
    keys.push('MYSQL_PWD');
    if (!keys.includes('DATABASE_URL')) keys.push('DATABASE_URL');
  }
  const redis = targets.filter((t) => t.protocol === 'redis');
  if (redis.some((t) => t.credentials)) keys.push('REDISCLI_AUTH');
  if (redis.length === 1 && redis[0]?.credentials) keys.push('REDIS_URL');
  if (targets.some((t) => t.aws)) keys.push('AWS_CONTAINER_AUTHORIZATION_TOKEN');
  return keys;
}

/**
 * The command's environment: ours, minus the variables that hold the ID token, plus the
 * exports. The token is for the gateway only; the command never needs it.
 */
export function childEnv(
  base: NodeJS.ProcessEnv,
  exports: Record<string, string>,
  strip: Array<string | undefined>,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const name of strip) if (name) delete env[name];
  return { ...env, ...exports };
}
