// One-time passwords for the local postgres hop (docs/protocol.md, "One-time credentials").
// Minted by the gateway per session and target, returned once in the session response, checked
// only by the client's local listener (SCRAM). The gateway keeps nothing: the exit authenticates
// the tunnel stream with the session secret, and the upstream with the injected credential.
import { createHash, randomBytes } from 'node:crypto';

/** 32 random bytes, base64url (43 characters, URL- and libpq-safe). */
export function oneTimePassword(): string {
  return randomBytes(32).toString('base64url');
}

/** Prefix of every per-session role; the reaper only ever touches roles with it. */
export const DYNAMIC_ROLE_PREFIX = 'ciport_';

/**
 * `ciport_<16 hex>`: the per-session role of `sessionId` on a target (a hash of the id, so the
 * name is a plain lower-case identifier whatever the id's alphabet). The session id itself is in
 * the role's COMMENT, which the reaper reads.
 */
export function dynamicRoleName(sessionId: string): string {
  return `${DYNAMIC_ROLE_PREFIX}${createHash('sha256').update(sessionId).digest('hex').slice(0, 16)}`;
}

/**
 * The one-time credential of a postgres target in the session response: the user the local
 * listener accepts (the static user, or the session's role name) and a fresh random password.
 */
export function oneTimeCredential(
  target: { credentials?: { user?: string | undefined; dynamic?: unknown } | undefined },
  sessionId: string,
): { user: string; password: string } {
  const user = target.credentials?.dynamic
    ? dynamicRoleName(sessionId)
    : (target.credentials?.user ?? 'ciport');
  return { user, password: oneTimePassword() };
}
