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
/**
 * Keywords after which SQL carries a password literal: `… PASSWORD 'x'`, MySQL
 * `IDENTIFIED BY 'x'` and `IDENTIFIED WITH plugin BY 'x'`. What follows is read by
 * sqlPasswordLiteralEnd, not by the pattern, so every literal spelling is covered.
 */
const SQL_PASSWORD_KEYWORD =
  /\b(?:password|identified(?:\s{1,16}with\s{1,16}[A-Za-z0-9_'"`]{1,64})?\s{1,16}by)\b/gi;
/** `$$` or `$tag$` opening a dollar-quoted string. */
const DOLLAR_TAG = /^\$(?:[A-Za-z_][A-Za-z0-9_]{0,62})?\$/;

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
  if (MAYBE_SQL_PASSWORD.test(out)) out = scrubSqlPasswords(out);
  return out;
}

/**
 * Replace the literal after each password keyword with `'***'`, whatever its spelling:
 * `'x'` (with `''` inside), `E'x'` (with backslash escapes), `U&'x'`, `$$x$$`, `$tag$x$tag$`,
 * separated from the keyword by blanks and comments or by nothing (`PASSWORD'x'`). A literal
 * without its end (the statement was cut before it closed) is replaced up to the end of the
 * text. A keyword not followed by a literal (`PASSWORD NULL`, a column named password) is left.
 * One pass over the text.
 */
function scrubSqlPasswords(text: string): string {
  SQL_PASSWORD_KEYWORD.lastIndex = 0;
  let out = '';
  let copied = 0;
  for (let m = SQL_PASSWORD_KEYWORD.exec(text); m; m = SQL_PASSWORD_KEYWORD.exec(text)) {
    const start = skipBlanksAndComments(text, m.index + m[0].length);
    const end = sqlLiteralEnd(text, start);
    if (end < 0) continue;
    out += `${text.slice(copied, start)}'***'`;
    copied = end;
    SQL_PASSWORD_KEYWORD.lastIndex = end;
  }
  return copied === 0 ? text : out + text.slice(copied);
}

function skipBlanksAndComments(text: string, from: number): number {
  let i = from;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 32 || (c >= 9 && c <= 13)) i += 1;
    else if (text.startsWith('/*', i)) {
      const close = text.indexOf('*/', i + 2);
      i = close < 0 ? text.length : close + 2;
    } else if (text.startsWith('--', i)) {
      const eol = text.indexOf('\n', i + 2);
      i = eol < 0 ? text.length : eol + 1;
    } else break;
  }
  return i;
}

/** Where the SQL string literal starting at `at` ends (exclusive; the text's end when it is cut), or -1. */
function sqlLiteralEnd(text: string, at: number): number {
  let i = at;
  let backslashEscapes = false;
  const c = text[i];
  if (c === 'E' || c === 'e') {
    backslashEscapes = true;
    i += 1;
  } else if ((c === 'U' || c === 'u') && text[i + 1] === '&') i += 2;
  if (text[i] === "'") {
    for (let k = i + 1; k < text.length; k++) {
      const ch = text[k];
      if (backslashEscapes && ch === '\\') k += 1;
      else if (ch === "'") {
        if (text[k + 1] === "'") k += 1;
        else return k + 1;
      }
    }
    return text.length;
  }
  if (i !== at) return -1; // E or U& not followed by a quote: an identifier
  const tag = text[i] === '$' ? DOLLAR_TAG.exec(text.slice(i, i + 65)) : null;
  if (!tag) return -1;
  const close = text.indexOf(tag[0], i + tag[0].length);
  return close < 0 ? text.length : close + tag[0].length;
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
