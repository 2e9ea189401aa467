// Run the job's command with inherited stdio, forward the signals that ask it to stop, and
// report its exit the way shells do: its code, or 128 + the signal number if a signal killed it.
import { spawn } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import { constants } from 'node:os';

export const FORWARDED_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  /** Where signals come from (the process; tests pass an emitter). */
  signalSource?: EventEmitter;
  signals?: NodeJS.Signals[];
  stdio?: 'inherit' | 'pipe' | 'ignore';
  /** Called with each signal forwarded (for --verbose). */
  onSignal?: (signal: NodeJS.Signals) => void;
  onSpawn?: (pid: number | undefined) => void;
}

export interface CommandExit {
  /** What `ciport exec` exits with. */
  exitCode: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the command could not be started (ENOENT → 127, EACCES → 126). */
  spawnError?: string | undefined;
}

export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  if (signal) return 128 + (constants.signals[signal] ?? 0);
  return 1;
}

export function runCommand(argv: string[], options: RunOptions): Promise<CommandExit> {
  const [file, ...args] = argv;
  if (!file) return Promise.resolve({ exitCode: 2, code: null, signal: null, spawnError: 'no command' });
  const source = options.signalSource ?? process;
  const signals = options.signals ?? FORWARDED_SIGNALS;
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: options.stdio ?? 'inherit', env: options.env });
    const handlers = new Map<NodeJS.Signals, () => void>();
    for (const sig of signals) {
      const handler = () => {
        options.onSignal?.(sig);
        if (child.exitCode === null && child.signalCode === null) child.kill(sig);
      };
      handlers.set(sig, handler);
      source.on(sig, handler);
    }
    const cleanup = () => {
      for (const [sig, handler] of handlers) source.off(sig, handler);
    };
    child.once('spawn', () => options.onSpawn?.(child.pid));
    child.once('error', (err: NodeJS.ErrnoException) => {
      cleanup();
      const exitCode = err.code === 'ENOENT' ? 127 : 126;
      resolve({
        exitCode,
        code: null,
        signal: null,
        spawnError: `${file}: ${err.code === 'ENOENT' ? 'command not found' : err.message}`,
      });
    });
    child.once('exit', (code, signal) => {
      cleanup();
      resolve({ exitCode: exitCodeOf(code, signal), code, signal });
    });
  });
}
