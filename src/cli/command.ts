import type { Command } from 'commander';
import { asCiportError, ExitCode } from '../errors/index.js';
import { type Io, reportError, writeJson } from './output.js';

/** What every command registration receives. */
export interface CliContext {
  io: Io;
  /** Set by actions; main() returns it. */
  exitCode: number;
}

/**
 * Wrap a command action: its return value is the exit code; a thrown error is reported once,
 * as text or (with --json) as `{"error": {code, message}}`, and mapped to its exit code.
 */
export function action<A extends unknown[]>(
  ctx: CliContext,
  fn: (...args: A) => Promise<number | undefined> | number | undefined,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      ctx.exitCode = (await fn(...args)) ?? ExitCode.ok;
    } catch (thrown) {
      const err = asCiportError(thrown);
      const cmd = args[args.length - 1] as Command | undefined;
      const json = Boolean(cmd && typeof cmd.opts === 'function' && (cmd.opts() as { json?: boolean }).json);
      if (json) writeJson(ctx.io, { error: err.toJSON() });
      else reportError(ctx.io, err);
      if (err.code === 'CIPORT_E_INTERNAL' && ctx.io.env.CIPORT_DEBUG)
        ctx.io.stderr.write(`${String(err.cause)}\n`);
      ctx.exitCode = err.exitCode;
    }
  };
}

/** `--help` epilogue with examples, in the style of good Unix tools. */
export function examples(cmd: Command, lines: string[]): Command {
  return cmd.addHelpText('after', `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`);
}
