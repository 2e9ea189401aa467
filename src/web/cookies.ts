// The console's two cookies (docs/console.md, "Cookies"), both `__Host-` prefixed (so only this
// origin, over HTTPS, with Path=/ and no Domain, can set them), Secure, HttpOnly, SameSite=Lax:
// - `__Host-ciport_session`: the operator secret (`cpo_…`); the store keeps only its hash, so
//   signing out (or expiry) ends it on every gateway sharing the store.
// - `__Host-ciport_login`: the sign-in in progress (state, nonce, PKCE verifier, return path),
//   sealed with AES-256-GCM under a key kept in the store's meta (shared by the gateways of one
//   store, so a sign-in may start on one and finish on another), bound to the cookie's name and
//   valid for LOGIN_TTL_MS. Sealed rather than signed: the PKCE verifier stays secret even from
//   whoever can read the browser's cookie store.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

export const SESSION_COOKIE = '__Host-ciport_session';
export const LOGIN_COOKIE = '__Host-ciport_login';
/** How long a sign-in may take at the identity provider. */
export const LOGIN_TTL_MS = 10 * 60_000;
/** The store meta key of the sealing key. */
export const COOKIE_KEY_META = 'console.cookie_key.v1';

const MAX_COOKIES = 64;
const MAX_SEALED = 4096;

/** The Cookie header as name → value (the first of a repeated name; malformed pairs skipped). */
export function parseCookies(header: string | string[] | undefined): Map<string, string> {
  const out = new Map<string, string>();
  const text = Array.isArray(header) ? header.join('; ') : (header ?? '');
  for (const part of text.split(';').slice(0, MAX_COOKIES)) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name && !out.has(name)) out.set(name, value);
  }
  return out;
}

/** A Set-Cookie line for one of the console's cookies. */
export function setCookie(name: string, value: string, maxAgeS: number): string {
  return `${name}=${value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=${Math.max(0, Math.floor(maxAgeS))}`;
}

export function clearCookie(name: string): string {
  return `${name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0`;
}

/** A new sealing key (hex), for the store's meta. */
export function newCookieKey(): string {
  return randomBytes(32).toString('hex');
}

/** `payload` as JSON, encrypted and authenticated under `key`, bound to the cookie `name`. */
export function seal(key: Buffer, name: string, payload: unknown): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(name));
  const body = Buffer.concat([cipher.update(JSON.stringify(payload), 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
}

/** What `seal` sealed, or undefined for anything forged, cut, swapped or not base64url. */
export function unseal(key: Buffer, name: string, text: string | undefined): unknown {
  if (!text || text.length > MAX_SEALED || !/^[A-Za-z0-9_-]+$/.test(text)) return undefined;
  const raw = Buffer.from(text, 'base64url');
  if (raw.length < 12 + 16 + 2) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
    decipher.setAAD(Buffer.from(name));
    decipher.setAuthTag(raw.subarray(12, 28));
    const plain = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]);
    return JSON.parse(plain.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}
