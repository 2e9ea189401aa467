// `npm run bench` as a user types it (bench/main.ts, built to dist/bench/main.js): wrong names
// and flags get a clear one-line error and exit 2 without starting anything, and the benches
// leave nothing behind in the temporary directory. Run `npm run build` first.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseArgs, UsageError } from '../../bench/cli.js';
import { table } from '../../bench/stats.js';

const root = resolve(import.meta.dirname, '../..');
const main = join(root, 'dist/bench/main.js');
const results = join(root, 'bench/results');
const tmps: string[] = [];
afterAll(() => {
  for (const d of tmps) rmSync(d, { recursive: true, force: true });
});

/** Runs the bench CLI with its own TMPDIR, so what it leaves behind is visible. */
function bench(args: string[], timeout = 60_000) {
  const tmp = mkdtempSync(join(tmpdir(), 'ciport-bench-cli-test-'));
  tmps.push(tmp);
  chmodSync(tmp, 0o1777); // like /tmp: the throwaway PostgreSQL runs as the postgres user
  const before = new Set(readdirSync(results));
  const r = spawnSync(process.execPath, [main, ...args], {
    cwd: root,
    env: { ...process.env, TMPDIR: tmp },
    encoding: 'utf8',
    timeout,
  });
  const newResults = readdirSync(results).filter((f) => !before.has(f));
  for (const f of newResults) rmSync(join(results, f), { force: true });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, leftInTmp: readdirSync(tmp), newResults };
}

const stackTrace = /^\s+at .+:\d+:\d+\)?$/m;

describe('npm run bench: wrong arguments', () => {
  it('names an unknown bench and exits 2', () => {
    const r = bench(['nosuch']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('nosuch');
  });

  it('refuses a bad --rounds value with a one-line error and exit 2, not a stack trace', () => {
    const r = bench(['pg', '--rounds=abc']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--rounds');
    expect(r.stderr).not.toMatch(stackTrace);
  });

  it('reports a missing --summarize file without a stack trace', () => {
    const r = bench(['--summarize=bench/results/raw-does-not-exist.tsv']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('raw-does-not-exist.tsv');
    expect(r.stderr).not.toMatch(stackTrace);
  });

  it('--help prints the usage and exits 0', () => {
    const r = bench(['--help']);
    expect(r.code).toBe(0);
    expect(`${r.stdout}${r.stderr}`).toContain('usage: npm run bench');
  });

  // Today: silently dropped; the run measures nothing (or only direct), writes a raw file with
  // "median over 0 interleaved round(s)" and exits 0. Each case must name its own wrong id.
  it.each([
    [['table', '--tests=nosuch'], 'nosuch'],
    [['table', '--tests=c1,C4,tpc8'], 'tpc8'], // one typo among known ids
    [['table', '--tests=c1', '--peers=pgbouncr'], 'pgbouncr'],
    [['table', '--peers=ssh,sttunnel'], 'sttunnel'],
  ])('refuses unknown test or peer ids (%j) before starting anything', (args, wrong) => {
    const r = bench(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`'${wrong}'`);
    expect(r.stderr).not.toMatch(stackTrace);
    expect(r.newResults).toEqual([]);
    expect(r.leftInTmp).toEqual([]);
  });

  it('refuses --rounds=0, an unknown option, and an empty --tests= with exit 2', () => {
    for (const [args, named] of [
      [['decide', '--rounds=0'], '--rounds'],
      [['decide', '--round=2'], '--round=2'],
      [['table', '--tests='], '--tests'],
    ] as const) {
      const r = bench([...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toContain(named);
      expect(r.stderr).toContain('usage: npm run bench');
      expect(r.stderr).not.toMatch(stackTrace);
    }
  });

  it('refuses a --summarize file that is not a raw results file, without a stack trace', () => {
    const r = bench(['--summarize=package.json']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('package.json');
    expect(r.stderr).toContain('not a raw results file');
    expect(r.stderr).not.toMatch(stackTrace);
  });

  it('--stop-leftovers with nothing to stop says so', () => {
    const r = bench(['--stop-leftovers']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('nothing to stop');
  });
});

describe('npm run bench: argument parsing (bench/cli.ts)', () => {
  const benches = ['decide', 'pg'];
  it('accepts test and peer ids in any case, as their canonical ids (c4 = C4)', () => {
    const a = parseArgs(['table', '--tests=c4,TCP1,ci', '--peers=PgBouncer,ciport'], benches);
    expect(a.tests).toEqual(['C4', 'tcp1', 'ci']);
    expect(a.peers).toEqual(['pgbouncer', 'ciport']);
  });
  it('wants positive integers for --rounds', () => {
    expect(parseArgs(['pg', '--rounds=2'], benches).rounds).toBe(2);
    for (const bad of ['abc', '0', '-1', '1.5', ''])
      expect(() => parseArgs(['pg', `--rounds=${bad}`], benches)).toThrow(UsageError);
  });
  it('refuses table options with another bench, and unknown names', () => {
    expect(() => parseArgs(['pg', '--tests=c1'], benches)).toThrow(/--tests/);
    expect(() => parseArgs(['nosuch'], benches)).toThrow(/'nosuch'/);
  });
});

describe('bench tables (bench/stats.ts table)', () => {
  it('rules off the header row as markdown', () => {
    expect(
      table([
        ['a', 'bb'],
        ['1', '2'],
      ]).split('\n'),
    ).toEqual(['| a   | bb  |', '|-----|-----|', '| 1   | 2   |']);
  });
});

describe('npm run bench: a TMPDIR the throwaway PostgreSQL cannot reach', () => {
  // As root the server runs as the postgres OS user (test/fixtures/pg-server.ts), which cannot
  // enter a private (0700) TMPDIR: initdb used to fail with an uncaught stack, leaving the work dir.
  it.runIf(process.getuid?.() === 0)('is refused with one line naming it, and nothing is left', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'ciport-bench-cli-private-'));
    tmps.push(tmp);
    const r = spawnSync(process.execPath, [main, 'table', '--tests=c1', '--peers=pgbouncer'], {
      cwd: root,
      env: { ...process.env, TMPDIR: tmp },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('postgres');
    expect(r.stderr).toContain(tmp);
    expect(r.stderr).not.toMatch(stackTrace);
    expect(readdirSync(tmp)).toEqual([]);
  });
});

describe('npm run bench: nothing left in the temporary directory', () => {
  it('decide removes its work directory', () => {
    const r = bench(['decide', '--rounds=1']);
    expect(r.code).toBe(0);
    expect(r.leftInTmp).toEqual([]);
  });

  // bench/pg.ts never removes its ciport-bench-pg-* directory (gateway data dir with the SQLite
  // store and audit chain, pgbouncer.log: 3-54 MB per run; 50 of them, 600 MB, were in /tmp).
  // About 75 s.
  it('pg removes its work directory (and the throwaway PostgreSQL)', () => {
    const r = bench(['pg', '--rounds=1'], 240_000);
    expect(r.code).toBe(0);
    expect(r.leftInTmp).toEqual([]);
  }, 250_000);
});
