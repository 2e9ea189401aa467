// The env file `ciport open --env-file F` writes, and the `export K=V` lines it prints. Both
// are written so that `set -a; . F` in sh/bash and dotenv parsers (docker --env-file aside)
// read back exactly the values: single quotes, with embedded single quotes closed and escaped.
import { chmodSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** POSIX shell single-quoting; safe for any value, including newlines. */
export function shellQuote(value: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

function checkName(name: string): string {
  if (!NAME_RE.test(name)) throw new Error(`not an environment variable name: ${name}`);
  return name;
}

/** `K=V` lines (shell-quoted values), one per variable, newline-terminated. */
export function formatDotenv(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => `${checkName(k)}=${shellQuote(v)}\n`)
    .join('');
}

/** `export K=V` lines for `eval "$(ciport open …)"`. */
export function formatExports(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => `export ${checkName(k)}=${shellQuote(v)}\n`)
    .join('');
}

/**
 * Write the file atomically (a temporary file renamed into place), mode 0600: a reader polling
 * for a non-empty file (`[ -s F ]`) never sees it half written.
 */
export function writeFileAtomic(file: string, content: string): void {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  try {
    writeFileSync(tmp, content, { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** Parse what formatDotenv wrote (for tests and `ciport close`); not a general dotenv parser. */
export function parseDotenv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    if (eq < 0) break;
    const name = text.slice(i, eq).replace(/^export /, '');
    i = eq + 1;
    let value = '';
    while (i < text.length && text[i] !== '\n') {
      if (text[i] === "'") {
        const close = text.indexOf("'", i + 1);
        value += text.slice(i + 1, close);
        i = close + 1;
      } else if (text[i] === '\\') {
        value += text[i + 1] ?? '';
        i += 2;
      } else {
        value += text[i];
        i += 1;
      }
    }
    env[name] = value;
    i += 1;
  }
  return env;
}
