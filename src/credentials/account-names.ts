// Names of per-session database accounts (pure: the client bundle and the exits both use them).
// One account per (session, target): a session granted two targets on one server gets two.
import { createHash } from 'node:crypto';

/** Prefix of every per-session account; the reapers only ever touch accounts with it. */
export const DYNAMIC_ROLE_PREFIX = 'ciport_';

const sha256 = (text: string) => createHash('sha256').update(text).digest();

/** The first `length` base-36 digits of SHA-256(`text`) ([0-9a-z], ~5.2 bits each). */
function base36(text: string, length: number): string {
  const n = BigInt(`0x${sha256(text).toString('hex')}`);
  return n.toString(36).padStart(length, '0').slice(0, length);
}

/**
 * `ciport_<16 hex>`: the per-session PostgreSQL role of `sessionId` on `target` (a hash, so the
 * name is a plain lower-case identifier whatever the id's alphabet). The session id and the
 * target are in the role's COMMENT, which the reaper reads.
 */
export function dynamicRoleName(sessionId: string, target: string): string {
  return `${DYNAMIC_ROLE_PREFIX}${sha256(`${sessionId}\u0000${target}`).toString('hex').slice(0, 16)}`;
}

/**
 * `ciport_<deployment:6>_<target:5>_`: every MySQL user of a deployment's target starts with
 * this (base 36: 31 bits of the deployment, 26 of the target). MariaDB keeps no comment on
 * users, so the name is the tag: a target's reaper lists only its own users.
 */
export function mysqlUserPrefix(deployment: string, target: string): string {
  return `${DYNAMIC_ROLE_PREFIX}${base36(`ciport deployment ${deployment}`, 6)}_${base36(`ciport target ${target}`, 5)}_`;
}

/**
 * `ciport_<6>_<5>_<12>`: the per-session MySQL user of `session` of `deployment` on `target`
 * (32 characters, MySQL's limit; 62 bits of the session).
 */
export function mysqlUserName(session: string, deployment: string, target: string): string {
  return `${mysqlUserPrefix(deployment, target)}${base36(`ciport session ${session}`, 12)}`;
}
