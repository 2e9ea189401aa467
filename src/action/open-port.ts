// Start `ciport open` in the background and wait until its port accepts connections. The client
// is the bundled runner client next to this file, run by the runner's own node, in its own
// session (detached) with its output in files: the runner waits for a step's output pipes to
// close, so a child holding them would hold the step. Ready means the client printed its JSON
// (`--json`), which it does after writing the env file; failed means it exited first.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseDotenv } from '../client/dotenv.js';
import { printable } from '../text/printable.js';
import type { ActionInputs } from './inputs.js';

/** What `ciport open --json` prints (docs/client.md); `env` lacks the credential variables. */
export interface OpenedJson {
  session: { id: string; expires_at: string; rule: string | null };
  targets: Array<{ name: string; protocol: string; host: string; port: number; database: string | null }>;
  env: Record<string, string>;
  env_file: string;
  state_file: string;
}

export interface WorkFiles {
  dir: string;
  envFile: string;
  stateFile: string;
  stdout: string;
  stderr: string;
}

export function workFiles(dir: string): WorkFiles {
  return {
    dir,
    envFile: join(dir, 'port.env'),
    stateFile: join(dir, 'open.json'),
    stdout: join(dir, 'client.out'),
    stderr: join(dir, 'client.log'),
  };
}

export type OpenOutcome =
  | { ok: true; child: ChildProcess; opened: OpenedJson; env: Record<string, string>; stderr: string }
  /** `error`: the client's `ciport: CODE: message` (with --json it prints it on stdout). */
  | { ok: false; exitCode: number; stderr: string; error: string | undefined };

/** Longer than any wait the client does on its own (rate-limit retries: 60 s by default). */
const READY_TIMEOUT_MS = 10 * 60_000;

/** The client's one line while its session waits for approval (src/client/port.ts waitingLine). */
const WAITING_LINE = /^ciport: session \S+ waits for approval \(.*, until (\S+)\): \S+$/m;
const POLL_MS = 100;

export async function openPort(
  clientPath: string,
  inputs: ActionInputs,
  files: WorkFiles,
  env: NodeJS.ProcessEnv,
  /** Shown at once (the step's log), not when the port opens: the approval link. */
  onWaiting?: (line: string) => void,
): Promise<OpenOutcome> {
  // `--` first: node would take a `--env-file` anywhere for its own (docs/client.md). Values as
  // `--name=value`: one starting with `-` stays a value.
  const args = [
    '--',
    clientPath,
    'open',
    ...inputs.targets,
    `--dotenv=${files.envFile}`,
    `--state=${files.stateFile}`,
    '--json',
    ...(inputs.ttl ? [`--ttl=${inputs.ttl}`] : []),
    ...(inputs.audience ? [`--audience=${inputs.audience}`] : []),
  ];
  const out = openSync(files.stdout, 'w', 0o600);
  const err = openSync(files.stderr, 'w', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out, err], env });
  } finally {
    closeSync(out);
    closeSync(err);
  }
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  child.once('exit', (code, signal) => {
    exit = { code, signal };
  });
  child.once('error', (e) => {
    spawnError = e;
  });
  const started = Date.now();
  let deadline = started + READY_TIMEOUT_MS;
  let waiting: string | undefined;
  // Said once, already shown: the stderr handed back leaves it out.
  const stderrText = () => {
    const text = readFileSync(files.stderr, 'utf8');
    return waiting ? text.replace(`${waiting}\n`, '') : text;
  };
  for (;;) {
    const opened = readOpened(files.stdout);
    if (opened) {
      child.unref();
      const env = parseDotenv(readFileSync(files.envFile, 'utf8'));
      return { ok: true, child, opened, env, stderr: stderrText() };
    }
    if (!waiting) {
      // Waiting for approval: say so now, with the link, and wait as long as the approval may.
      const m = WAITING_LINE.exec(readFileSync(files.stderr, 'utf8'));
      if (m) {
        waiting = m[0];
        onWaiting?.(printable(waiting));
        const until = Date.parse(m[1] as string);
        if (Number.isFinite(until)) deadline = Math.max(deadline, until + 60_000);
      }
    }
    const failed = (exitCode: number, error: string | undefined) =>
      ({ ok: false, exitCode, stderr: stderrText(), error }) as const;
    if (spawnError) return failed(1, `ciport: cannot start the client: ${spawnError.message}`);
    if (exit) return failed(exit.code ?? 1, clientErrorText(readFileSync(files.stdout, 'utf8')));
    if (Date.now() > deadline) {
      child.kill('SIGTERM');
      return failed(
        1,
        `ciport: the port was not open after ${Math.round((Date.now() - started) / 60_000)} minutes; stopped it`,
      );
    }
    await sleep(POLL_MS);
  }
}

/** The client's JSON once it is complete; undefined while it is being written. */
function readOpened(file: string): OpenedJson | undefined {
  try {
    const value = JSON.parse(readFileSync(file, 'utf8')) as Partial<OpenedJson>;
    return value.session?.id && value.env ? (value as OpenedJson) : undefined;
  } catch {
    return undefined;
  }
}

/** `{"error": {code, message}}`, what a `--json` command prints when it fails, as one line. */
export function clientErrorText(stdout: string | null): string | undefined {
  try {
    const { error } = JSON.parse(stdout ?? '') as { error?: { code?: unknown; message?: unknown } };
    if (typeof error?.code !== 'string' || typeof error.message !== 'string') return undefined;
    return `ciport: ${printable(error.code)}: ${printable(error.message)}`;
  } catch {
    return undefined;
  }
}

/** Stop a client this step started (the step fails after the port opened): it ends the session. */
export async function stopPort(child: ChildProcess, timeoutMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(timeoutMs)]);
}
