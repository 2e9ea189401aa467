// Session identifiers and secrets. The secret is 32 random bytes, base64url, prefixed `cps_`;
// the gateway keeps only its SHA-256, so a store dump cannot be replayed against tunnels.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const SECRET_PREFIX = 'cps_';
export const SESSION_ID_PREFIX = 'ses_';

export function newSessionId(): string {
  return `${SESSION_ID_PREFIX}${randomBytes(16).toString('base64url')}`;
}

export function newSessionSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** Hex SHA-256 of a secret: what the store holds. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Constant-time comparison of a presented secret with a stored hash. */
export function secretMatches(presented: string, storedHashHex: string): boolean {
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = Buffer.from(storedHashHex, 'hex');
  return b.length === a.length && timingSafeEqual(a, b);
}

/** Constant-time: does `presented` equal any of `tokens`? Every token is compared. */
export function tokenInList(presented: string, tokens: readonly string[]): boolean {
  const a = createHash('sha256').update(presented, 'utf8').digest();
  let ok = false;
  for (const t of tokens) {
    const b = createHash('sha256').update(t, 'utf8').digest();
    if (timingSafeEqual(a, b) && t.length > 0) ok = true;
  }
  return ok;
}

/** The credential of an `Authorization: Bearer …` header, or undefined. */
export function bearer(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (!value) return undefined;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(value);
  return m?.[1];
}
