// The runner files the action writes, read back the way the runner reads them: any value (newlines,
// `=`, `<<`, a would-be delimiter) is one value of one name; a file that is not the runner's
// regular file is refused, also when it is swapped for a symlink after the check.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { appendRunnerFile, checkRunnerFiles, heredocEntry } from '../../src/action/runner-files.js';
import { secretValues } from '../../src/action/secrets.js';
import { parseFileCommand } from '../fixtures/actions-runner.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-runner-files-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function runnerFiles(): NodeJS.ProcessEnv {
  const sub = mkdtempSync(join(dir, 'step-'));
  const env: NodeJS.ProcessEnv = {};
  for (const name of ['GITHUB_ENV', 'GITHUB_STATE', 'GITHUB_OUTPUT']) {
    env[name] = join(sub, name);
    writeFileSync(env[name] as string, '');
  }
  return env;
}

describe('heredoc entries', () => {
  it('any value reads back as exactly itself, under its own name only', () => {
    const awkward = fc.constantFrom('\n', '\r\n', '=', '<<', 'EOF', 'ghadelimiter_', 'A=1', '\n\n', ' ');
    const value = fc.array(fc.oneof(fc.string(), awkward), { maxLength: 12 }).map((parts) => parts.join(''));
    fc.assert(
      fc.property(value, value, (a, b) => {
        const text = heredocEntry('FIRST', a) + heredocEntry('SECOND', b);
        expect(parseFileCommand(text)).toEqual({ FIRST: a, SECOND: b });
      }),
      { numRuns: 500 },
    );
  });

  it('uses a fresh random delimiter for every entry', () => {
    const one = heredocEntry('A', 'x').split('\n')[0];
    const two = heredocEntry('A', 'x').split('\n')[0];
    expect(one).toMatch(/^A<<ghadelimiter_[0-9a-f-]{36}$/);
    expect(one).not.toBe(two);
  });

  it('refuses a name the runner would split', () => {
    for (const name of ['A=B', 'A<<B', 'A\nB', '', '1A'])
      expect(() => heredocEntry(name, 'v')).toThrow(/name/);
  });
});

describe('the runner files', () => {
  it('appends to GITHUB_ENV and leaves what an earlier writer put there', () => {
    const env = runnerFiles();
    writeFileSync(env.GITHUB_ENV as string, 'EARLIER=1\n');
    appendRunnerFile(env, 'GITHUB_ENV', { PGDATABASE: 'a\nB=2', PGPORT: '5432' });
    expect(parseFileCommand(readFileSync(env.GITHUB_ENV as string, 'utf8'))).toEqual({
      EARLIER: '1',
      PGDATABASE: 'a\nB=2',
      PGPORT: '5432',
    });
  });

  it('refuses a symlink at check time, and one swapped in after the check', () => {
    const env = runnerFiles();
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'untouched\n');
    rmSync(env.GITHUB_ENV as string);
    symlinkSync(victim, env.GITHUB_ENV as string);
    expect(() => checkRunnerFiles(env)).toThrow(/GITHUB_ENV \(.*\) is a symbolic link/);
    let thrown: unknown;
    try {
      appendRunnerFile(env, 'GITHUB_ENV', { PGPASSWORD: 'secret' });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toMatchObject({
      code: 'CIPORT_E_RUNNER_FILE',
      message: expect.stringMatching(/symbolic link/),
    });
    expect(readFileSync(victim, 'utf8')).toBe('untouched\n');
  });

  it('refuses an unset, missing or non-regular file', () => {
    const env = runnerFiles();
    expect(() => checkRunnerFiles({ ...env, GITHUB_OUTPUT: undefined })).toThrow(/GITHUB_OUTPUT is not set/);
    expect(() => checkRunnerFiles({ ...env, GITHUB_STATE: join(dir, 'nope') })).toThrow(/ENOENT/);
    const sub = join(dir, 'a-directory');
    mkdirSync(sub);
    expect(() => checkRunnerFiles({ ...env, GITHUB_STATE: sub })).toThrow(/not a regular file/);
    expect(() => checkRunnerFiles(env)).not.toThrow();
  });
});

describe('what is masked', () => {
  it('what the client kept off stdout, passwords inside URLs (as written and decoded), known names', () => {
    const all = {
      CIPORT_DB_URL: 'postgres://u:p%40ss@127.0.0.1:5000/app',
      CIPORT_DB_PORT: '5000',
      CIPORT_C_URL: 'redis://:otp-redis@127.0.0.1:5001/2',
      REDISCLI_AUTH: 'otp-redis',
      PGPASSWORD: 'p@ss',
    };
    const printed = { CIPORT_DB_PORT: '5000', CIPORT_C_URL: all.CIPORT_C_URL, REDISCLI_AUTH: 'otp-redis' };
    expect(new Set(secretValues(all, printed))).toEqual(
      new Set([all.CIPORT_DB_URL, 'p%40ss', 'p@ss', 'otp-redis']),
    );
    expect(
      secretValues({ CIPORT_API_URL: 'http://127.0.0.1:1' }, { CIPORT_API_URL: 'http://127.0.0.1:1' }),
    ).toEqual([]);
  });
});
