import type { Command } from 'commander';
import { runDemo } from '../../demo/run.js';
import { action, type CliContext, examples } from '../command.js';
import { paint } from '../output.js';

export function registerDemo(program: Command, ctx: CliContext): void {
  examples(
    program
      .command('demo')
      .description('run issuer, gateway, a target and two CI jobs in one process, and show what happened'),
    ['ciport demo', 'npm run demo'],
  ).action(
    action(ctx, () =>
      runDemo({ stdout: ctx.io.stdout, heading: (text) => paint(ctx.io, ctx.io.stdout, 'bold', text) }),
    ),
  );
}
