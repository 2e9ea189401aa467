// The admin commands run in-process with commander, as `ciport` would run them: captured stdout
// and stderr, the exit code the command set (2 for a commander usage error).
import { Command } from 'commander';
import type { CliContext } from '../../src/cli/command.js';
import { Capture } from './helpers.js';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export type Register = (program: Command, ctx: CliContext) => void;

export async function runCli(registers: Register[], args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  const stdout = new Capture();
  const stderr = new Capture();
  const ctx: CliContext = { io: { stdout, stderr, env }, exitCode: 0 };
  const program = new Command('ciport').exitOverride();
  for (const register of registers) register(program, ctx);
  for (const cmd of [program, ...program.commands, ...program.commands.flatMap((c) => c.commands)]) {
    cmd.exitOverride();
    cmd.configureOutput({ writeOut: (s) => stdout.write(s), writeErr: (s) => stderr.write(s) });
  }
  try {
    await program.parseAsync(['node', 'ciport', ...args]);
  } catch {
    return { code: 2, stdout: stdout.text, stderr: stderr.text };
  }
  return { code: ctx.exitCode, stdout: stdout.text, stderr: stderr.text };
}
