// protocol aws: each tunnel stream carries one request of the job's SDK for credentials (the
// client's loopback endpoint relays it, src/client/aws-endpoint.ts); the exit answers it with the
// session's role credentials in the container-credentials shape the SDKs read
// (`{AccessKeyId, SecretAccessKey, Token, Expiration, RoleArn}`), or with a ciport error.
import { asCiportError, CiportError } from '../../errors/index.js';
import type { ExitDefinition, StreamExit } from '../contract.js';
import { type AssumeRoleCall, RoleSessions, stsAssumeRole } from './assume.js';
import { answer, answerError, MAX_REQUEST_HEAD, parseRequestHead, readHead } from './http1.js';

/** The app must send its request head within this. */
const HEAD_TIMEOUT_MS = 10_000;

/** Tests replace STS here (the default calls it through the AWS SDK). */
export interface AwsExitOptions {
  assumeRole?: AssumeRoleCall | undefined;
}

export function awsExitDefinition(options: AwsExitOptions = {}): ExitDefinition<'aws'> {
  return {
    protocol: 'aws',
    advertise: (target) => ({
      name: target.name,
      protocol: 'aws',
      ...(target.region ? { region: target.region } : {}),
    }),
    build(target): StreamExit {
      const sts = options.assumeRole ? { call: options.assumeRole, close() {} } : stsAssumeRole(target);
      const sessions = new RoleSessions(target, sts.call);
      return {
        mode: 'stream',
        target,
        async serve(stream, connection) {
          connection.onConnected?.({});
          try {
            const head = parseRequestHead(await readHead(stream, MAX_REQUEST_HEAD, HEAD_TIMEOUT_MS));
            if (head.method !== 'GET') {
              throw new CiportError('CIPORT_E_METHOD_NOT_ALLOWED', 'credentials are fetched with GET');
            }
            const length = head.headers.get('content-length');
            if (head.headers.has('transfer-encoding') || (length !== undefined && length !== '0')) {
              throw new CiportError('CIPORT_E_AWS_BAD_REQUEST', 'a credentials request has no body');
            }
            if (!connection.facts) {
              throw new CiportError('CIPORT_E_INTERNAL', 'the host gave the aws exit no session facts');
            }
            const credentials = await sessions.get(
              connection.session.id,
              connection.facts,
              connection.onCredentials,
            );
            // Cut meanwhile (the session ended): nothing more goes to the app.
            if (connection.signal.aborted) return { error: 'the session ended before the answer' };
            answer(stream, 200, credentials);
            return {};
          } catch (thrown) {
            const err = asCiportError(thrown);
            if (!connection.signal.aborted) answerError(stream, err);
            throw err;
          }
        },
        sessionEnded: (id) => sessions.forget(id),
        close: () => sts.close(),
      };
    },
  };
}

export const awsExit = awsExitDefinition();
