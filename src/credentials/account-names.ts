// Names of per-session database accounts (pure: the client bundle and the exits both use them).
import { createHash } from 'node:crypto';

/** Prefix of every per-session account; the reapers only ever touch accounts with it. */
export const DYNAMIC_ROLE_PREFIX = 'ciport_';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * `ciport_<16 hex>`: the per-session PostgreSQL role of `sessionId` (a hash of the id, so the
 * name is a plain lower-case identifier whatever the id's alphabet). The session id itself is in
 * the role's COMMENT, which the reaper reads.
 */
export function dynamicRoleName(sessionId: string): string {
  return `${DYNAMIC_ROLE_PREFIX}${sha256(sessionId).slice(0, 16)}`;
}

/** `ciport_<8 hex of the deployment>_`: every MySQL user of a deployment starts with this. */
export function mysqlUserPrefix(deployment: string): string {
  return `${DYNAMIC_ROLE_PREFIX}${sha256(`ciport deployment ${deployment}`).slice(0, 8)}_`;
}

/**
 * `ciport_<8 hex>_<16 hex>`: the per-session MySQL user of `session` of `deployment` (32
 * characters, MySQL's limit). MariaDB keeps no comment on users, so the name is the tag.
 */
export function mysqlUserName(session: string, deployment: string): string {
  return `${mysqlUserPrefix(deployment)}${sha256(session).slice(0, 16)}`;
}
