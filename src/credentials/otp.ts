// One-time passwords for the local database hop (docs/protocol.md, "One-time credentials").
// Minted by the gateway per session and target, returned once in the session response, checked
// only by the client's local listener (postgres SCRAM, mysql native). The gateway keeps nothing:
// the exit authenticates the tunnel stream with the session secret, and the upstream with the
// injected credential.
import { randomBytes } from 'node:crypto';
import { dynamicRoleName, mysqlUserName } from './account-names.js';

/** 32 random bytes, base64url (43 characters, URL- and libpq-safe). */
export function oneTimePassword(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * The one-time credential of a database target in the session response: the user the local
 * listener accepts (the static user, or the session's own account name — a mysql one needs the
 * deployment id) and a fresh random password.
 */
export function oneTimeCredential(
  target: {
    name: string;
    protocol?: string;
    credentials?:
      | { user?: string | undefined; dynamic?: unknown; aws_rds_iam?: { user: string } | undefined }
      | undefined;
  },
  sessionId: string,
  deployment?: string,
): { user: string; password: string } {
  const user = !target.credentials?.dynamic
    ? (target.credentials?.user ?? target.credentials?.aws_rds_iam?.user ?? 'ciport')
    : target.protocol === 'mysql' && deployment
      ? mysqlUserName(sessionId, deployment, target.name)
      : dynamicRoleName(sessionId, target.name);
  return { user, password: oneTimePassword() };
}
