// protocol postgres: the exit reads the client's startup frame, authenticates upstream with the
// injected credential (the target's, or the session's own role), and relays with query events
// (exit.ts); cancel requests are forwarded with the backend keys this exit recorded.
import { asCiportError } from '../../errors/index.js';
import { databaseAudit, type ExitAdvertisement, type ExitDefinition, type StreamExit } from '../contract.js';
import { rdsAuthTokens } from '../rds-iam.js';
import { CancelRegistry } from './cancel.js';
import { sendErrorAndClose } from './errors.js';
import { pgUpstreamFromTarget, servePgExitStream } from './exit.js';
import { PgStreamObserver } from './observe.js';

export const postgresExit: ExitDefinition<'postgres'> = {
  protocol: 'postgres',
  build(target): StreamExit | { skip: string } {
    const rdsIam = target.credentials?.aws_rds_iam;
    const c = target.credentials;
    if (!c?.user && !c?.dynamic && !c?.vault_database && !rdsIam) {
      return {
        skip: 'postgres target without credentials.user, credentials.dynamic, credentials.vault_database or credentials.aws_rds_iam',
      };
    }
    // Checked now (a bad secret fails the start), read again per connection (rotation).
    pgUpstreamFromTarget(target);
    const password = target.credentials?.password;
    const rdsToken = rdsIam ? rdsAuthTokens(target, rdsIam) : undefined;
    const cancels = new CancelRegistry();
    return {
      mode: 'stream',
      target,
      async serve(stream, connection) {
        try {
          const credential = rdsToken
            ? // A fresh IAM token per connection, accepted only as the cleartext password RDS asks
              // for (over the verified TLS the schema requires): never hashed into another method.
              { password: await rdsToken(), allowedAuth: ['password' as const] }
            : await connection.credential?.();
          const result = await servePgExitStream(stream, {
            sessionId: connection.session.id,
            upstream: () => ({ ...pgUpstreamFromTarget(target), ...credential }),
            onAuthRefused: credential || !password ? undefined : () => password.refused(),
            cancelRegistry: cancels,
            ...databaseAudit(target, connection),
          });
          if (result.kind === 'cancel') {
            return {
              outOfBand: true,
              after: Promise.resolve({ note: 'cancel request', forwarded: result.forwarded }),
            };
          }
          return {
            error: result.error?.message,
            after: result.cancelled?.then((sent) => ({
              note: 'statement in progress cancelled upstream',
              sent,
            })),
          };
        } catch (thrown) {
          const err = asCiportError(thrown);
          if (!stream.destroyed && !stream.writableEnded) await sendErrorAndClose(stream, err);
          throw err;
        }
      },
      sessionEnded: (sessionId) => cancels.dropSession(sessionId),
      close() {},
    };
  },
  advertise(target): ExitAdvertisement {
    const dynamic = Boolean(target.credentials?.dynamic || target.credentials?.vault_database);
    const user = target.credentials?.user ?? target.credentials?.aws_rds_iam?.user;
    return {
      name: target.name,
      protocol: target.protocol,
      ...(target.database ? { database: target.database } : {}),
      ...(!dynamic && user ? { user } : {}),
      ...(dynamic ? { dynamic: true } : {}),
      query_audit: target.query_audit ?? true,
      ...(target.query_max_length ? { query_max_length: target.query_max_length } : {}),
    };
  },
  observe(advertised, onQuery) {
    const observer = new PgStreamObserver({ maxQueryLength: advertised.query_max_length, onQuery });
    return {
      push: (chunk) => observer.push(chunk),
      get outOfBand() {
        return observer.kind === 'cancel';
      },
    };
  },
};
