import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  formatDotenv,
  formatExports,
  parseDotenv,
  shellQuote,
  writeFileAtomic,
} from '../../src/client/dotenv.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-dotenv-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const NASTY: Record<string, string> = {
  PLAIN: 'postgres://127.0.0.1:5432/app',
  SPACES: 'a b  c',
  SINGLE: "it's 'quoted'",
  DOUBLE: 'say "hi"',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal shell expansion is the point
  DOLLAR: '$HOME and ${PATH} and $(id) and `id`',
  NEWLINE: 'line1\nline2',
  BACKSLASH: 'C:\\temp\\x',
  HASH: 'a#not-a-comment',
  EMPTY: '',
  UNICODE: 'pässwörd ✓',
};

/** What `sh` reads back after `set -a; . FILE`. */
function sourcedBySh(file: string, names: string[]): Record<string, string> {
  const script = `set -a; . "$1"; set +a; shift; for n in "$@"; do eval "printf '%s\\0' \\"\\$$n\\""; done`;
  const out = execFileSync('sh', ['-c', script, 'sh', file, ...names], { env: { PATH: process.env.PATH } });
  const values = out.toString('utf8').split('\0').slice(0, -1);
  return Object.fromEntries(names.map((n, i) => [n, values[i] as string]));
}

describe('dotenv and export lines', () => {
  it('quotes values so that sh reads back exactly the same bytes', () => {
    const file = join(dir, 'nasty.env');
    writeFileAtomic(file, formatDotenv(NASTY));
    expect(sourcedBySh(file, Object.keys(NASTY))).toEqual(NASTY);
  });

  it('export lines evaluate to the same values', () => {
    const script = `eval "$(cat "$1")"; printf '%s' "$DOLLAR"`;
    const file = join(dir, 'exports.sh');
    writeFileAtomic(file, formatExports(NASTY));
    expect(readFileSync(file, 'utf8').split('\n')[0]).toBe('export PLAIN=postgres://127.0.0.1:5432/app');
    const out = execFileSync('sh', ['-c', script, 'sh', file]).toString();
    expect(out).toBe(NASTY.DOLLAR);
  });

  it('leaves simple values bare and quotes the rest', () => {
    expect(shellQuote('127.0.0.1')).toBe('127.0.0.1');
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(shellQuote('')).toBe("''");
  });

  it('round-trips through parseDotenv', () => {
    expect(parseDotenv(formatDotenv(NASTY))).toEqual(NASTY);
    expect(parseDotenv(formatExports(NASTY))).toEqual(NASTY);
  });

  it('refuses a name that is not a variable name', () => {
    expect(() => formatDotenv({ 'BAD-NAME': 'x' })).toThrow(/not an environment variable name/);
  });

  it('writes atomically with mode 0600 and leaves no temporary file', () => {
    const file = join(dir, 'ready.env');
    writeFileAtomic(file, 'A=1\n');
    writeFileAtomic(file, 'A=2\n');
    expect(readFileSync(file, 'utf8')).toBe('A=2\n');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp'))).toEqual([]);
  });
});
