// protocol postgres: the exit reads the client's startup frame, authenticates upstream with the
// injected credential (the target's, or the session's own role), and relays with query events
// (exit.ts); cancel requests are forwarded with the backend keys this exit recorded.
import { asCiportError } from '../../errors/index.js';
import { databaseAudit, type ExitAdvertisement, type ExitDefinition, type StreamExit } from '../contract.js';
import { CancelRegistry } from './cancel.js';
import { sendErrorAndClose } from './errors.js';
import { pgUpstreamFromTarget, servePgExitStream } from './exit.js';
import { PgStreamObserver } from './observe.js';

export const postgresExit: ExitDefinition<'postgres'> = {
  protocol: 'postgres',
  build(target): StreamExit | { skip: string } {
    if (!target.credentials?.user && !target.credentials?.dynamic && !target.credentials?.vault_database) {
      return {
        skip: 'postgres target without credentials.user, credentials.dynamic or credentials.vault_database',
      };
    }
    // Checked now (a bad secret fails the start), read again per connection (rotation).
    pgUpstreamFromTarget(target);
    const password = target.credentials?.password;
    const cancels = new CancelRegistry();
    return {
      mode: 'stream',
      target,
      async serve(stream, connection) {
        try {
          const credential = await connection.credential?.();
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
    return {
      name: target.name,
      protocol: target.protocol,
      ...(target.database ? { database: target.database } : {}),
      ...(!dynamic && target.credentials?.user ? { user: target.credentials.user } : {}),
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
