// docs/errors.md must list exactly the codes the program can emit, with the exit code and
// HTTP status of src/errors/codes.ts. A code added without docs, or documented but gone from
// the source, fails here.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/errors/index.js';

const root = new URL('..', import.meta.url).pathname;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith('.ts') ? [path] : [];
  });
}

const CODE_RE = /CIPORT_E_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])/g;

function documented(): Map<string, { exit: number; http: number }> {
  const rows = new Map<string, { exit: number; http: number }>();
  for (const line of readFileSync(join(root, 'docs/errors.md'), 'utf8').split('\n')) {
    const m = /^\|\s*`(CIPORT_E_[A-Z0-9_]+)`\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|/.exec(line);
    if (m) rows.set(m[1] as string, { exit: Number(m[2]), http: Number(m[3]) });
  }
  return rows;
}

describe('docs/errors.md', () => {
  const docs = documented();
  const table = Object.keys(ERROR_CODES);
  // Codes used anywhere in src other than the table itself.
  const used = new Set(
    sourceFiles(join(root, 'src'))
      .filter((f) => !f.endsWith(join('errors', 'codes.ts')))
      .flatMap((f) => readFileSync(f, 'utf8').match(CODE_RE) ?? []),
  );

  it('documents every code in the table, with its exit code and HTTP status', () => {
    for (const code of table) {
      const spec = ERROR_CODES[code as keyof typeof ERROR_CODES];
      expect(docs.get(code), `${code} missing from docs/errors.md`).toEqual({
        exit: spec.exit,
        http: spec.http,
      });
    }
  });

  it('documents no code that the table lacks', () => {
    expect([...docs.keys()].filter((c) => !table.includes(c))).toEqual([]);
  });

  it('has no code in the table that the program never emits', () => {
    expect(table.filter((c) => !used.has(c))).toEqual([]);
  });

  it('has every code the program emits in the table', () => {
    expect([...used].filter((c) => !table.includes(c))).toEqual([]);
  });
});
