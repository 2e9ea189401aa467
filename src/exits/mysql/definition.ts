// protocol mysql: with credentials, the exit reads the local side's connect request, logs in
// upstream with the injected user and password (native, caching_sha2, ed25519; TLS verified),
// relays with query events and kills a statement left running when the tunnel is cut (exit.ts,
// docs/mysql.md). Without credentials: a raw relay, the application logging in itself.
import { databaseAudit, type ExitAdvertisement, type ExitDefinition } from '../contract.js';
import { rawExit } from '../tcp/definition.js';
import { serveMysqlExitStream } from './exit.js';
import { MysqlStreamObserver } from './observe-stream.js';
import { MysqlThreadRegistry } from './threads.js';
import type { MysqlUpstreamTarget } from './upstream.js';

type Target = Parameters<ExitDefinition['build']>[0];

/** Upstream settings of a mysql target: `tls: true` or an object means verified TLS. */
export function mysqlUpstreamFromTarget(target: Target): MysqlUpstreamTarget {
  const tls = target.tls && typeof target.tls === 'object' ? target.tls : undefined;
  return {
    address: target.address,
    user: target.credentials?.user ?? '',
    password: target.credentials?.password?.reveal(),
    database: target.database,
    tls: target.tls ? { mode: 'verify-full', ca: tls?.ca?.reveal(), servername: tls?.servername } : undefined,
  };
}

export const mysqlExit: ExitDefinition = {
  protocol: 'mysql',
  build(target, host) {
    if (!target.credentials) return rawExit(target);
    if (!target.credentials.user) return { skip: 'mysql target with credentials but no credentials.user' };
    const upstream = { ...mysqlUpstreamFromTarget(target), timeoutMs: host.connectTimeoutMs };
    const threads = new MysqlThreadRegistry();
    return {
      mode: 'stream',
      target,
      // Failures before the login completes reach the app as an ERR packet (exit.ts), then reject.
      async serve(stream, connection) {
        const result = await serveMysqlExitStream(stream, {
          upstream,
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
    // Relayed raw: nothing to say beyond the protocol.
    if (!target.credentials?.user) return { name: target.name, protocol: target.protocol };
    return {
      name: target.name,
      protocol: target.protocol,
      ...(target.database ? { database: target.database } : {}),
      user: target.credentials.user,
      query_audit: target.query_audit ?? true,
      ...(target.query_max_length ? { query_max_length: target.query_max_length } : {}),
    };
  },
  observe(advertised, onQuery) {
    // A raw relay carries the app's own login, not the listener's connect request: nothing to read.
    if (!advertised.user) return { push() {}, outOfBand: false };
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
