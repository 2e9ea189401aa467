// The runner's file commands: GITHUB_ENV (variables of the later steps), GITHUB_STATE (what the
// post step gets as STATE_<name>) and GITHUB_OUTPUT (the step's outputs). The runner creates a
// fresh regular file for each before the step and reads it after. Every entry is written in the
// heredoc form with a random delimiter, `NAME<<ghadelimiter_<uuid>` LF value LF delimiter LF, so a
// value with newlines or `=` stays one value and cannot add a variable of its own.
import { randomUUID } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, openSync, writeSync } from 'node:fs';
import { RunnerFileError } from './errors.js';

export type RunnerFile = 'GITHUB_ENV' | 'GITHUB_STATE' | 'GITHUB_OUTPUT';
export const RUNNER_FILES: readonly RunnerFile[] = ['GITHUB_ENV', 'GITHUB_STATE', 'GITHUB_OUTPUT'];

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** Refuse to start when a runner file is unset, missing, a symlink or not a regular file. */
export function checkRunnerFiles(env: NodeJS.ProcessEnv, files: readonly RunnerFile[] = RUNNER_FILES): void {
  for (const name of files) {
    const path = pathOf(env, name);
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(path);
    } catch (err) {
      throw new RunnerFileError(`${name} (${path}) cannot be read: ${(err as NodeJS.ErrnoException).code}`);
    }
    if (st.isSymbolicLink()) throw new RunnerFileError(`${name} (${path}) is a symbolic link`);
    if (!st.isFile()) throw new RunnerFileError(`${name} (${path}) is not a regular file`);
  }
}

/** One heredoc entry; the delimiter is fresh for every entry. */
export function heredocEntry(name: string, value: string): string {
  if (!NAME_RE.test(name)) throw new RunnerFileError(`"${name}" is not a name the runner accepts`);
  const delimiter = `ghadelimiter_${randomUUID()}`;
  // A random UUID cannot be guessed, but a value that holds it would end the entry early.
  if (value.includes(delimiter)) throw new RunnerFileError(`a value of ${name} contains its delimiter`);
  return `${name}<<${delimiter}\n${value}\n${delimiter}\n`;
}

/**
 * Append entries to a runner file in one write. O_NOFOLLOW: a symlink put in its place after
 * the check does not redirect the values (credentials among them) into another file.
 */
export function appendRunnerFile(
  env: NodeJS.ProcessEnv,
  file: RunnerFile,
  entries: Record<string, string>,
): void {
  const path = pathOf(env, file);
  const text = Object.entries(entries)
    .map(([k, v]) => heredocEntry(k, v))
    .join('');
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new RunnerFileError(
      code === 'ELOOP'
        ? `${file} (${path}) is a symbolic link`
        : `${file} (${path}) cannot be opened: ${code}`,
    );
  }
  try {
    if (!fstatSync(fd).isFile()) throw new RunnerFileError(`${file} (${path}) is not a regular file`);
    const bytes = Buffer.from(text, 'utf8');
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written);
  } finally {
    closeSync(fd);
  }
}

function pathOf(env: NodeJS.ProcessEnv, file: RunnerFile): string {
  const path = env[file];
  if (!path) {
    throw new RunnerFileError(`${file} is not set: this action runs as a step of a GitHub Actions job`);
  }
  return path;
}
