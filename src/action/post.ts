// The action's post step (action.yml `runs.post`, `post-if: always()`): close the port the main
// step opened. The runner hands the main step's GITHUB_STATE back as STATE_<name>; without
// STATE_state_file the main step opened nothing (it failed or was denied) and there is nothing to
// do. Otherwise `ciport close --state S` ends the session and waits for the client to exit;
// what the client logged during the job (refusals, a session ended early) is shown, and the work
// directory with the CA copy and the logs is removed.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { basename } from 'node:path';
import { printable } from '../text/printable.js';
import { error, type Log, verbatim, warning } from './commands.js';
import { withoutInputs } from './inputs.js';
import { clientErrorText, workFiles } from './open-port.js';

const CLOSE_TIMEOUT_S = 15;

export function runPost(env: NodeJS.ProcessEnv, log: Log, clientPath: string): number {
  const stateFile = env.STATE_state_file;
  const workDir = env.STATE_work_dir;
  if (!stateFile) {
    log.write('ciport: nothing to close: the main step opened no port\n');
    return 0;
  }
  const close = spawnSync(
    process.execPath,
    ['--', clientPath, 'close', '--state', stateFile, '--json', `--timeout=${CLOSE_TIMEOUT_S}`],
    { env: withoutInputs(env), encoding: 'utf8', timeout: (CLOSE_TIMEOUT_S + 15) * 1000 },
  );
  if (workDir) verbatim(log, readLog(workDir, Number(env.STATE_log_offset) || 0));
  const code = close.status ?? 1;
  const answer = parseClose(close.stdout);
  if (code !== 0 || !answer) {
    const why = clientErrorText(close.stdout) ?? `ciport close exited with code ${code}`;
    verbatim(log, `${close.stderr ?? ''}${why}\n`);
    error(log, `${why}; the session ends when its lease lapses`);
    return code === 0 ? 1 : code;
  }
  if (answer.closed) {
    log.write(`ciport: port closed: session ${printable(String(answer.session_id))} ended\n`);
  } else {
    warning(log, `ciport: the port had closed before the post step: ${printable(String(answer.reason))}`);
  }
  if (workDir && basename(workDir).startsWith('ciport-')) rmSync(workDir, { recursive: true, force: true });
  return 0;
}

/** The client's log after what main showed. */
function readLog(workDir: string, offset: number): string {
  try {
    return readFileSync(workFiles(workDir).stderr).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

function parseClose(
  stdout: string | null,
): { closed: boolean; session_id?: unknown; reason?: unknown } | undefined {
  try {
    const value = JSON.parse(stdout ?? '') as { closed?: unknown };
    return typeof value.closed === 'boolean' ? (value as { closed: boolean }) : undefined;
  } catch {
    return undefined;
  }
}
