// The connection's client character set, as far as the audit is concerned (docs/mysql.md,
// "Character sets"). The observer reads statement text as UTF-8; the server reads it in the
// connection's `character_set_client`. In GBK, Big5, SJIS, CP932 or GB18030 a byte ≥ 0x80 can
// swallow the next one — a backslash or a quote — so the two readings can disagree about where a
// string literal ends, and a statement can hide in what the audit shows as a literal. Pure ASCII
// is read the same in every character set a server accepts for `character_set_client` (UCS-2,
// UTF-16 and UTF-32 are refused there), so only statements with a byte ≥ 0x80 are at stake.
//
// So: the connection's set must be one the audit can follow — UTF-8 (utf8mb4, utf8mb3), ascii
// or binary, read exactly as the audit reads them ("verified"), or a single-byte ASCII-compatible
// set like latin1 (the mariadb CLI's choice in a C locale), where quotes and backslashes are the
// same bytes and only the non-ASCII characters differ. Multi-byte sets (gbk, big5, sjis, cp932,
// gb18030, …) are refused: in the handshake's collation, and in `SET NAMES x`, `SET CHARACTER
// SET x`, `SET character_set_client = x`. A statement is recorded as the hex of its bytes when it
// has a byte ≥ 0x80 and the set is not verified: a single-byte set, or anything the observer
// cannot be sure about — a statement that mentions a word able to change the set (NAMES,
// CHARSET, CHARACTER, character_set_client) or runs dynamic SQL (EXECUTE) leaves the connection
// unverified. A plain `SET NAMES utf8mb4` the server answers with OK verifies it again.

/** How the audit can read statements in a character set. */
export type CharsetClass = 'utf8' | 'single-byte' | 'refused';

/** Character sets whose reading of a statement is the observer's UTF-8 reading. */
const UTF8_CHARSETS: ReadonlySet<string> = new Set(['utf8mb4', 'utf8mb3', 'utf8', 'ascii', 'binary']);
/** Single-byte sets whose lower half is ASCII (not swe7, which puts letters at `[\]{|}`). */
const SINGLE_BYTE_CHARSETS: ReadonlySet<string> = new Set([
  'armscii8',
  'cp1250',
  'cp1251',
  'cp1256',
  'cp1257',
  'cp850',
  'cp852',
  'cp866',
  'dec8',
  'geostd8',
  'greek',
  'hebrew',
  'hp8',
  'keybcs2',
  'koi8r',
  'koi8u',
  'latin1',
  'latin2',
  'latin5',
  'latin7',
  'macce',
  'macroman',
  'tis620',
]);

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * Collation ids (≤ 255: what a handshake carries) of the UTF-8 sets: ascii 11, 65; binary 63;
 * utf8mb3 33, 76 (MySQL 8), 83, 192–215, 223; utf8mb4 45, 46, 224–247, 255 (MySQL 8).
 */
const UTF8_COLLATIONS: ReadonlySet<number> = new Set([
  11,
  65,
  63,
  33,
  76,
  83,
  ...range(192, 215),
  223,
  45,
  46,
  ...range(224, 247),
  255,
]);
/** …and of the single-byte ones (MariaDB's and MySQL's ids agree below 248). */
const SINGLE_BYTE_COLLATIONS: ReadonlySet<number> = new Set([
  2, 3, 4, 5, 6, 7, 8, 9, 14, 15, 16, 18, 20, 21, 22, 23, 25, 26, 27, 29, 30, 31, 32, 34, 36, 37, 38, 39, 40,
  41, 42, 43, 44, 47, 48, 49, 50, 51, 52, 53, 57, 58, 59, 64, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 77, 78,
  79, 80, 81, 89, 92, 93, 94, 99,
]);

export function collationClass(id: number): CharsetClass {
  if (UTF8_COLLATIONS.has(id)) return 'utf8';
  return SINGLE_BYTE_COLLATIONS.has(id) ? 'single-byte' : 'refused';
}

export function charsetClass(name: string): CharsetClass {
  const n = name.toLowerCase();
  if (UTF8_CHARSETS.has(n)) return 'utf8';
  return SINGLE_BYTE_CHARSETS.has(n) ? 'single-byte' : 'refused';
}

/** What a statement that sets the client character set does, when it is nothing but that. */
export interface CharsetStatement {
  /** The value it names: a set name, a collation id, or `default`. */
  value: string;
  /** The named set's class; `unknown` for `DEFAULT` (the server's default). */
  verdict: CharsetClass | 'unknown';
  /** It changes this session's set (not `GLOBAL`/`PERSIST`), outside a versioned comment. */
  session: boolean;
}

const VALUE = String.raw`('[A-Za-z0-9_]*'|"[A-Za-z0-9_]*"|\x60[A-Za-z0-9_]*\x60|[A-Za-z0-9_]+)`;
const SCOPE = String.raw`(?:(SESSION|LOCAL|GLOBAL|PERSIST|PERSIST_ONLY)\s+|@@(?:(SESSION|LOCAL|GLOBAL|PERSIST|PERSIST_ONLY)\.)?)?`;
const SET_CHARSET = new RegExp(
  String.raw`^SET\s+(?:NAMES\s+${VALUE}(?:\s+COLLATE\s+${VALUE})?|(?:CHARACTER\s+SET|CHARSET)\s+${VALUE}|${SCOPE}\x60?character_set_client\x60?\s*:?=\s*${VALUE})$`,
  'i',
);
const VERSIONED = /^\/\*M?!\d*([\s\S]*)\*\/$/;

// A statement that is only `SET NAMES x [COLLATE y]`, `SET CHARACTER SET x`, `SET CHARSET x` or
// `SET [scope] character_set_client = x` (also inside a versioned comment `/*!40101 … */`, with
// a trailing `;`), in ASCII: what it sets. Anything else (other statements around it, comments,
// expressions): undefined — the taint scan (CharsetScan) covers those.
export function charsetStatement(text: Buffer): CharsetStatement | undefined {
  for (const b of text) if (b >= 0x80) return undefined;
  let sql = text.toString('latin1').trim();
  if (sql.endsWith(';')) sql = sql.slice(0, -1).trim();
  let versioned = false;
  const v = VERSIONED.exec(sql);
  if (v) {
    versioned = true;
    sql = (v[1] as string).trim();
  }
  const m = SET_CHARSET.exec(sql);
  if (!m) return undefined;
  const raw = (m[1] ?? m[3] ?? m[6]) as string;
  const scope = (m[4] ?? m[5] ?? 'SESSION').toUpperCase();
  const value = raw.replace(/^['"`]|['"`]$/g, '').toLowerCase();
  const verdict = /^\d+$/.test(value)
    ? collationClass(Number(value))
    : value === 'default' && !/^['"`]/.test(raw)
      ? 'unknown'
      : charsetClass(value);
  return { value, verdict, session: !versioned && (scope === 'SESSION' || scope === 'LOCAL') };
}

// ---- the taint scan ---------------------------------------------------------------------------

/**
 * Words that can change `character_set_client` (or run SQL the observer cannot read), compared
 * case-insensitively; in a word, a non-ASCII character matches any letter (a server looking up
 * a variable name may fold `á` to `a`).
 */
const TAINT_WORDS = ['names', 'charset', 'character', 'character_set_client', 'execute'];
const MAX_WORD = Math.max(...TAINT_WORDS.map((w) => w.length));
const WILDCARD = 0x3f; // '?'

/** Per byte: 0 separator, 1 ASCII word character, 2 a UTF-8 lead byte, 3 a continuation byte. */
const CLASS = new Uint8Array(256);
/** ASCII word characters, lower-cased. */
const LOWER = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  const c = String.fromCharCode(b);
  CLASS[b] = /[A-Za-z0-9_$]/.test(c) ? 1 : b >= 0xc0 ? 2 : b >= 0x80 ? 3 : 0;
  LOWER[b] = c.toLowerCase().charCodeAt(0);
}
const isLetter = (code: number) => code >= 0x61 && code <= 0x7a;

// Streams over a statement's bytes (all of them, whatever the observer keeps of its text) and
// says whether it has a byte ≥ 0x80 and whether it mentions a TAINT_WORDS word. Quotes and
// comments are not skipped: a word in a string literal (`PREPARE s FROM 'SET NAMES gbk'`) or in
// a comment (`/*!40101 SET NAMES gbk */` runs) counts too. Over-matching costs nothing but the
// hex form of later non-ASCII statements; missing a word would cost the audit.
export class CharsetScan {
  nonAscii = false;
  taint = false;
  readonly #word = Buffer.alloc(MAX_WORD);
  #len = 0;

  push(chunk: Buffer, from: number, to: number): void {
    if (this.taint && this.nonAscii) return;
    for (let i = from; i < to; i++) {
      const b = chunk[i] as number;
      const cls = CLASS[b] as number;
      if (cls === 0) {
        if (this.#len > 0) this.#endWord();
        continue;
      }
      if (b >= 0x80) this.nonAscii = true;
      if (cls === 3) continue;
      if (this.#len <= MAX_WORD) {
        if (this.#len < MAX_WORD) this.#word[this.#len] = cls === 2 ? WILDCARD : (LOWER[b] as number);
        this.#len++;
      }
    }
  }

  /** The statement's bytes are all in. */
  end(): void {
    if (this.#len > 0) this.#endWord();
  }

  #endWord(): void {
    const len = this.#len;
    this.#len = 0;
    if (len > MAX_WORD || this.taint) return;
    for (const w of TAINT_WORDS) {
      if (w.length !== len) continue;
      let i = 0;
      for (; i < len; i++) {
        const want = w.charCodeAt(i);
        const got = this.#word[i];
        if (got !== want && !(got === WILDCARD && isLetter(want))) break;
      }
      if (i === len) {
        this.taint = true;
        return;
      }
    }
  }
}
