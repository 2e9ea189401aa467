import { Command, CommanderError } from 'commander';
import { ExitCode } from '../errors/index.js';
import type { CliContext } from './command.js';
import { registerAgent, registerAgents } from './commands/agent.js';
import { registerAudit } from './commands/audit.js';
import { registerClose } from './commands/close.js';
import { registerConfig } from './commands/config.js';
import { registerDemo } from './commands/demo.js';
import { registerDev } from './commands/dev.js';
import { registerExec } from './commands/exec.js';
import { registerGateway } from './commands/gateway.js';
import { registerOpen } from './commands/open.js';
import { registerPolicy } from './commands/policy.js';
import { registerSessions } from './commands/sessions.js';
import { registerWhoami } from './commands/whoami.js';
import { type Io, paint, processIo } from './output.js';

export function buildProgram(ctx: CliContext): Command {
  const program = new Command('ciport')
    .description(
      'Identity-aware access gateway for CI/CD jobs: OIDC job tokens in, scoped audited ports out.',
    )
    .version('0.1.0')
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
  registerGateway(program, ctx);
  registerAgent(program, ctx);
  registerExec(program, ctx);
  registerOpen(program, ctx);
  registerClose(program, ctx);
  registerWhoami(program, ctx);
  registerConfig(program, ctx);
  registerPolicy(program, ctx);
  registerDev(program, ctx);
  registerDemo(program, ctx);
  registerAudit(program, ctx);
  registerSessions(program, ctx);
  registerAgents(program, ctx);
  return program;
}

/** Run the CLI; resolves to the process exit code. */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  const ctx: CliContext = { io, exitCode: 0 };
  const program = buildProgram(ctx);
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
