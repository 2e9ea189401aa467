// What every ciport program shares — the full CLI (src/cli/main.ts) and the runner client
// (src/cli/client.ts): the root command's output, errors and exit-code mapping.
import { Command, CommanderError } from 'commander';
import { ExitCode } from '../errors/index.js';
import { CIPORT_VERSION } from '../version.js';
import type { CliContext } from './command.js';
import { paint } from './output.js';

export function rootCommand(ctx: CliContext, description: string): Command {
  const program = new Command('ciport')
    .description(description)
    .version(CIPORT_VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({
      writeOut: (s) => ctx.io.stdout.write(s),
      writeErr: (s) => ctx.io.stderr.write(s),
      outputError: (s, write) => write(paint(ctx.io, ctx.io.stderr, 'red', s)),
    })
    .exitOverride();
  program.addHelpText(
    'after',
    `
Exit codes: 0 ok/allowed, 1 a check found problems, 2 usage or configuration error,
3 denied by policy, 4 token rejected, 5 gateway unreachable; exec returns its command's.
Errors carry stable codes (CIPORT_E_…), listed in docs/errors.md.`,
  );
  return program;
}

/** Parse and run; resolves to the process exit code. */
export async function runProgram(program: Command, argv: string[], ctx: CliContext): Promise<number> {
  for (const cmd of allCommands(program)) cmd.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version are successes; everything commander rejects is a usage error.
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help'
      ) {
        return ExitCode.ok;
      }
      return ExitCode.usage;
    }
    throw err;
  }
  return ctx.exitCode;
}

function allCommands(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(allCommands)];
}

/**
 * Run a CLI main as a process: a closed pipe (`ciport … | head`) ends it quietly, as Unix tools
 * do; it exits as soon as the command is done (a closing HTTP/2 connection or a keep-alive
 * socket must not hold the shell), but only after stdout and stderr drained — a pipe whose
 * reader is slower takes 64 KiB at once and queues the rest, which process.exit would drop.
 */
export function runAsProcess(main: (argv: string[]) => Promise<number>): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  const drained = (stream: NodeJS.WriteStream) =>
    new Promise<void>((resolve) => stream.write('', () => resolve()));
  void main(process.argv).then(async (code) => {
    process.exitCode = code;
    await Promise.all([drained(process.stdout), drained(process.stderr)]);
    process.exit(code);
  });
}
