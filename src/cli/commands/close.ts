import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { defaultStateFile, isRunning, looksLikeCiport, readState } from '../../client/state.js';
import { CiportError } from '../../errors/index.js';
import { action, type CliContext, examples } from '../command.js';
import { writeJson } from '../output.js';

interface CloseFlags {
  state?: string;
  timeout?: string;
  json?: boolean;
}

export function registerClose(program: Command, ctx: CliContext): void {
  examples(
    program
      .command('close')
      .description('end the port a `ciport open` keeps open (it ends the session and exits 0)')
      .option(
        '--state <file>',
        'state file of the `ciport open` to stop (default: per-user runtime directory)',
      )
      .option('--timeout <seconds>', 'how long to wait for it to finish', '15')
      .option('--json', 'print {"closed": true|false, …}'),
    ['ciport close', 'ciport close --state /tmp/ciport-db.json'],
  ).action(
    action(ctx, async (opts: CloseFlags) => {
      const stateFile = resolve(opts.state ?? defaultStateFile(ctx.io.env));
      const timeoutMs = Math.max(0, Number(opts.timeout ?? 15)) * 1000;
      const state = readState(stateFile);
      const nothing = (why: string) => {
        if (opts.json) writeJson(ctx.io, { closed: false, reason: why });
        else ctx.io.stderr.write(`ciport: nothing to close: ${why}\n`);
        return 0;
      };
      if (!state) return nothing(`no open port recorded in ${stateFile}`);
      if (!isRunning(state.pid) || !looksLikeCiport(state.pid)) {
        rmSync(stateFile, { force: true });
        return nothing(`the recorded ciport open (pid ${state.pid}) is no longer running`);
      }
      try {
        process.kill(state.pid, 'SIGTERM');
      } catch (err) {
        throw new CiportError(
          'CIPORT_E_USAGE',
          `cannot signal ciport open (pid ${state.pid}): ${(err as NodeJS.ErrnoException).code}`,
        );
      }
      const deadline = Date.now() + timeoutMs;
      // Finished when the process is gone, or when it removed its state file (it has then ended
      // the session and is only exiting).
      while (isRunning(state.pid) && readState(stateFile)?.pid === state.pid) {
        if (Date.now() > deadline) {
          throw new CiportError(
            'CIPORT_E_INTERNAL',
            `ciport open (pid ${state.pid}) did not finish within ${timeoutMs / 1000}s; its session ends by its lease`,
          );
        }
        await sleep(50);
      }
      if (opts.json) writeJson(ctx.io, { closed: true, pid: state.pid, session_id: state.session_id });
      return 0;
    }),
  );
}
