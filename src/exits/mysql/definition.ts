// protocol mysql: with credentials, the exit reads the local side's connect request, logs in
// upstream with the injected user and password — the target's, or the session's own user
// (`credentials.dynamic`, src/credentials/mysql-users.ts) — (native, caching_sha2, ed25519; TLS verified),
// relays with query events and kills a statement left running when the tunnel is cut (exit.ts,
// docs/mysql.md). Without credentials: a raw relay, the application logging in itself.
import { createPublicKey } from 'node:crypto';
import type { TargetOf } from '../../config/targets/index.js';
import { asCiportError, CiportError, ConfigError } from '../../errors/index.js';
import {
  databaseAudit,
  type ExitAdvertisement,
  type ExitConnection,
  type ExitDefinition,
  type SessionCredential,
} from '../contract.js';
import { rdsAuthTokens } from '../rds-iam.js';
import { rawExit } from '../tcp/definition.js';
import { serveMysqlExitStream } from './exit.js';
import { MysqlStreamObserver } from './observe-stream.js';
import { MysqlThreadRegistry } from './threads.js';
import type { MysqlUpstreamTarget } from './upstream.js';

/**
 * Upstream settings of a mysql target: `tls: true` or an object means verified TLS; a pinned
 * `server_public_key` lets caching_sha2/sha256 full authentication run without TLS (the exit
 * never asks the server for its key: over plaintext it could be a man in the middle's).
 */
export function mysqlUpstreamFromTarget(target: TargetOf<'mysql'>): MysqlUpstreamTarget {
  const tls = target.tls && typeof target.tls === 'object' ? target.tls : undefined;
  return {
    address: target.address,
    user: target.credentials?.user ?? target.credentials?.aws_rds_iam?.user ?? '',
    password: target.credentials?.password?.reveal(),
    database: target.database,
    tls: target.tls ? { mode: 'verify-full', ca: tls?.ca?.reveal(), servername: tls?.servername } : undefined,
    serverPublicKey: pinnedServerKey(target),
  };
}

/** The pinned RSA public key (PEM), checked when the exit is built: a bad one fails the start. */
function pinnedServerKey(target: TargetOf<'mysql'>): string | undefined {
  const secret = target.server_public_key;
  if (!secret) return undefined;
  const pem = secret.reveal();
  let type: string | undefined;
  try {
    type = createPublicKey(pem).asymmetricKeyType;
  } catch {
    type = undefined;
  }
  if (type !== 'rsa') {
    throw new ConfigError(
      'CIPORT_E_CONFIG_INVALID',
      `target ${target.name}: server_public_key (${secret.origin}) is not an RSA public key in PEM`,
      { details: { target: target.name } },
    );
  }
  return pem;
}

export const mysqlExit: ExitDefinition<'mysql'> = {
  protocol: 'mysql',
  build(target, host) {
    if (!target.credentials) return rawExit(target);
    const dynamic = Boolean(target.credentials.dynamic || target.credentials.vault_database);
    const rdsIam = target.credentials.aws_rds_iam;
    if (!target.credentials.user && !dynamic && !rdsIam)
      return {
        skip: 'mysql target with credentials but no credentials.user, credentials.dynamic, credentials.vault_database or credentials.aws_rds_iam',
      };
    // Checked now (a bad secret fails the start), read again per connection (rotation).
    mysqlUpstreamFromTarget(target);
    const password = target.credentials.password;
    const upstream = () => ({ ...mysqlUpstreamFromTarget(target), timeoutMs: host.connectTimeoutMs });
    // RDS IAM: a fresh token per connection; the server's mysql_clear_password switch gets it,
    // and upstream-auth.ts sends a cleartext password only inside TLS (which the schema requires).
    const rdsToken = rdsIam ? rdsAuthTokens(target, rdsIam) : undefined;
    const rdsCredential = rdsToken
      ? async () => ({ user: rdsIam?.user ?? '', password: await rdsToken() })
      : undefined;
    const threads = new MysqlThreadRegistry();
    return {
      mode: 'stream',
      target,
      // Failures before the login completes reach the app as an ERR packet (exit.ts), then reject.
      async serve(stream, connection) {
        const result = await serveMysqlExitStream(stream, {
          upstream,
          onAuthRefused: dynamic || !password ? undefined : () => password.refused(),
          // With dynamic credentials: the session's own user, created on its first connection.
          credential: dynamic ? sessionUser(connection) : rdsCredential,
          credentialExpires: rdsCredential !== undefined,
          sessionId: connection.session.id,
          threads,
          ...databaseAudit(target, connection),
        });
        return {
          error: result.error?.message,
          after: result.killed?.then((sent) => ({ note: 'statement in progress killed upstream', sent })),
        };
      },
      sessionEnded: (sessionId) => threads.dropSession(sessionId),
      close() {},
    };
  },
  advertise(target): ExitAdvertisement {
    const dynamic = Boolean(target.credentials?.dynamic || target.credentials?.vault_database);
    const user = target.credentials?.user ?? target.credentials?.aws_rds_iam?.user;
    // Relayed raw: nothing to say beyond the protocol.
    if (!user && !dynamic) return { name: target.name, protocol: target.protocol };
    return {
      name: target.name,
      protocol: target.protocol,
      ...(target.database ? { database: target.database } : {}),
      ...(dynamic ? { dynamic: true } : { user }),
      query_audit: target.query_audit ?? true,
      ...(target.query_max_length ? { query_max_length: target.query_max_length } : {}),
    };
  },
  observe(advertised, onQuery) {
    // A raw relay carries the app's own login, not the listener's connect request: nothing to read.
    if (!advertised.user && !advertised.dynamic) return { push() {}, outOfBand: false };
    const observer = new MysqlStreamObserver({ maxQueryLength: advertised.query_max_length, onQuery });
    return {
      push: (chunk) => observer.pushFromApp(chunk),
      pushFromTarget: (chunk) => observer.pushFromExit(chunk),
      room: () => observer.room(),
      end: () => observer.end(),
      outOfBand: false,
    };
  },
};

/**
 * The session's own user (its first connection creates it); a failure is the app's ERR packet,
 * before anything reaches the upstream.
 */
function sessionUser(connection: ExitConnection): () => Promise<SessionCredential> {
  return async () => {
    let credential: SessionCredential | undefined;
    try {
      credential = await connection.credential?.();
    } catch (err) {
      const e = asCiportError(err);
      // The server refused the admin (the message says what the admin lacks): as it is.
      if (e.code === 'CIPORT_E_MYSQL_UPSTREAM_REFUSED') throw e;
      throw new CiportError(
        'CIPORT_E_MYSQL_UPSTREAM_REFUSED',
        `the per-session user could not be created: ${e.message}`,
      );
    }
    if (!credential) {
      throw new CiportError('CIPORT_E_CONFIG_INVALID', 'per-session users are not set up on this exit');
    }
    return credential;
  };
}
