import type { Command } from 'commander';
import type { CliContext } from './command.js';
import { registerAgent, registerAgents } from './commands/agent.js';
import { registerAudit } from './commands/audit.js';
import { registerClose } from './commands/close.js';
import { registerConfig } from './commands/config.js';
import { registerDemo } from './commands/demo.js';
import { registerDev } from './commands/dev.js';
import { registerExec } from './commands/exec.js';
import { registerGateway } from './commands/gateway.js';
import { registerLogin } from './commands/login.js';
import { registerOpen } from './commands/open.js';
import { registerPolicy } from './commands/policy.js';
import { registerReview } from './commands/review.js';
import { registerSessions } from './commands/sessions.js';
import { registerSshCa } from './commands/ssh-ca.js';
import { registerWhoami } from './commands/whoami.js';
import { type Io, processIo } from './output.js';
import { rootCommand, runProgram } from './program.js';

export function buildProgram(ctx: CliContext): Command {
  const program = rootCommand(
    ctx,
    'Identity-aware access gateway for CI/CD jobs: OIDC job tokens in, scoped audited ports out.',
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
  registerReview(program, ctx);
  registerLogin(program, ctx);
  registerSessions(program, ctx);
  registerAgents(program, ctx);
  registerSshCa(program, ctx);
  return program;
}

/** Run the CLI; resolves to the process exit code. */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  const ctx: CliContext = { io, exitCode: 0 };
  return runProgram(buildProgram(ctx), argv, ctx);
}
