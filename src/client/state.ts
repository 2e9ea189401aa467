// The small state file of a running `ciport open`, so that `ciport close` can find and stop it.
// It holds no secret: the pid, the session id and what was opened. Default location:
// $XDG_RUNTIME_DIR/ciport/open.json, else $TMPDIR/ciport-<uid>/open.json (a 0700 directory
// that must belong to us), or wherever --state says.
import { lstatSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { CiportError } from '../errors/errors.js';
import { writeFileAtomic } from './dotenv.js';

export interface OpenState {
  pid: number;
  session_id: string;
  gateway: string;
  targets: Array<{ name: string; host: string; port: number }>;
  env_file: string | null;
  started_at: string;
}

export function defaultStateFile(env: NodeJS.ProcessEnv): string {
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, 'ciport', 'open.json');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return join(tmpdir(), `ciport-${uid}`, 'open.json');
}

/** Create the state directory (0700) and refuse one that is a symlink or someone else's. */
function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) {
    throw new CiportError(
      'CIPORT_E_USAGE',
      `state directory ${dir} is not a directory of this user; pass --state FILE`,
    );
  }
}

export function writeState(file: string, state: OpenState): void {
  ensureDir(dirname(file));
  writeFileAtomic(file, `${JSON.stringify(state, null, 2)}\n`);
}

export function readState(file: string): OpenState | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const value = JSON.parse(text) as Partial<OpenState>;
    if (typeof value.pid !== 'number' || typeof value.session_id !== 'string') return undefined;
    return value as OpenState;
  } catch {
    return undefined;
  }
}

/** Remove the state file if it still describes process `pid`. */
export function removeState(file: string, pid: number): void {
  if (readState(file)?.pid === pid) rmSync(file, { force: true });
}

/** Whether `pid` is a running process (a zombie is not). */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // Linux: "pid (comm) S …"; a zombie has exited and only waits for its parent.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true;
  }
}

/** Best effort: does `pid` look like a ciport process? (Linux only; true elsewhere.) */
export function looksLikeCiport(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('ciport');
  } catch {
    return true;
  }
}
