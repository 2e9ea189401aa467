// The runner client: only what a CI job runs (exec, open, close, whoami). It is what
// `npm run build:client` bundles into the self-contained client (scripts/build-client.mjs), so
// nothing it imports may reach the gateway, the store or a native module (test/client/bundle.test.ts).
import type { Command } from 'commander';
import type { CliContext } from './command.js';
import { registerClose } from './commands/close.js';
import { registerExec } from './commands/exec.js';
import { registerOpen } from './commands/open.js';
import { registerWhoami } from './commands/whoami.js';
import { type Io, processIo } from './output.js';
import { rootCommand, runProgram } from './program.js';

export const CLIENT_DESCRIPTION =
  'ciport runner client: open audited ports to private targets with this CI job’s OIDC token.';

export function registerClientCommands(program: Command, ctx: CliContext): void {
  registerExec(program, ctx);
  registerOpen(program, ctx);
  registerClose(program, ctx);
  registerWhoami(program, ctx);
}

export function buildClientProgram(ctx: CliContext): Command {
  const program = rootCommand(ctx, CLIENT_DESCRIPTION);
  registerClientCommands(program, ctx);
  return program;
}

/** Run the runner client; resolves to the process exit code. */
export async function clientMain(argv: string[], io: Io = processIo): Promise<number> {
  const ctx: CliContext = { io, exitCode: 0 };
  return runProgram(buildClientProgram(ctx), argv, ctx);
}
