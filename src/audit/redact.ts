// Defence in depth for the audit log: whatever a caller hands the audit writer, no field named
// like a credential and no value shaped like a bearer token or a URL password reaches the store.
// Callers are expected never to pass secrets; this is the net under that expectation.

import type { JsonObject, JsonValue } from './canonical.js';

/** Substrings that mark a key as secret-bearing once lower-cased and stripped of `_`, `-`, `.`. */
const SECRET_KEY_PARTS = [
  'password',
  'passwd',
  'passphrase',
  'secret',
  'token',
  'apikey',
  'privatekey',
  'authorization',
  'cookie',
  'credential',
] as const;
/** Whole keys (normalised as above) that are secret-bearing on their own. */
const SECRET_KEYS = new Set(['pass', 'pwd', 'pw', 'auth']);

// The patterns run on attacker-influenced text (query statements, refs), so each may only start
// at a boundary (lookbehind) and repeats are bounded: scrubbing stays linear in the input.

/** A compact JWS (an ID token, a session token): header and payload both start with `eyJ`. */
const JWT_PATTERN = /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g;
/** `scheme://user:password@host` — keep the user, drop the password. */
const URL_PASSWORD_PATTERN =
  /(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{0,31}:\/\/[^\s:/@]{0,256}:)[^\s/@]{1,256}@/g;
/** SQL that carries a password literal: `… PASSWORD 'x'`, MySQL `IDENTIFIED BY 'x'`. */
const SQL_PASSWORD_PATTERN = /\b(password|identified\s+by)(\s+)'(?:[^']|'')*'/gi;

export const REDACTED_JWT = '[redacted-jwt]';

/** isSecretKey's answers: events use a small, fixed set of keys (bounded, in case they do not). */
const keyVerdicts = new Map<string, boolean>();
const MAX_KEY_VERDICTS = 4096;

export function isSecretKey(key: string): boolean {
  const known = keyVerdicts.get(key);
  if (known !== undefined) return known;
  const k = key.toLowerCase().replace(/[-_.\s]/g, '');
  const secret = SECRET_KEYS.has(k) || SECRET_KEY_PARTS.some((part) => k.includes(part));
  if (keyVerdicts.size < MAX_KEY_VERDICTS) keyVerdicts.set(key, secret);
  return secret;
}

/** A cheap necessary condition for SQL_PASSWORD_PATTERN to match. */
const MAYBE_SQL_PASSWORD = /password|identified/i;

/**
 * Replace token-shaped substrings and URL passwords inside a free-text value. Every pattern
 * needs a literal its text must contain (`eyJ`, `://`, `password`/`identified`); checking for
 * those first keeps the common case (a statement, a ref) to three substring scans.
 */
export function scrubText(text: string): string {
  let out = text;
  if (out.includes('eyJ')) out = out.replace(JWT_PATTERN, REDACTED_JWT);
  if (out.includes('://')) out = out.replace(URL_PASSWORD_PATTERN, '$1***@');
  if (MAYBE_SQL_PASSWORD.test(out)) out = out.replace(SQL_PASSWORD_PATTERN, "$1$2'***'");
  return out;
}

export interface Redaction {
  data: JsonObject;
  /** Paths (`a.b[2].c`) of the members that were removed because of their name. */
  removed: string[];
}

/**
 * Copy `data` without secret-named members (at any depth) and with token-shaped strings
 * scrubbed. Returns the paths it removed so the writer can record that it had to.
 */
export function redactSecrets(data: JsonObject): Redaction {
  const removed: string[] = [];
  const clean = (value: JsonValue, path: string): JsonValue => {
    if (typeof value === 'string') return scrubText(value);
    if (value === null || typeof value !== 'object') return value;
    if (Array.isArray(value)) return value.map((item, i) => clean(item, `${path}[${i}]`));
    // Not a plain object (Date, Map, …): leave it for canonicalJson to refuse with a clear error.
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return value;
    const out: JsonObject = {};
    for (const [key, member] of Object.entries(value)) {
      const where = path ? `${path}.${key}` : key;
      if (isSecretKey(key)) {
        removed.push(where);
        continue;
      }
      out[key] = clean(member, where);
    }
    return out;
  };
  return { data: clean(data, '') as JsonObject, removed };
}
