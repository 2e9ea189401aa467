import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { formatDotenv, formatExports, writeFileAtomic } from '../../client/dotenv.js';
import { credentialKeys, parseTargetSpecs } from '../../client/env.js';
import { SessionEndedError } from '../../client/errors.js';
import type { Port } from '../../client/port.js';
import { SignalTrap } from '../../client/signals.js';
import { defaultStateFile, isRunning, readState, removeState, writeState } from '../../client/state.js';
import { UsageError } from '../../errors/index.js';
import { action, type CliContext, examples } from '../command.js';
import { writeJson } from '../output.js';
import { type ConnectionFlags, checkTtl, clientLog, connectionOptions, openTrapped } from './exec.js';

interface OpenFlags extends ConnectionFlags {
  ttl?: string;
  envFile?: string;
  dotenv?: string;
  state?: string;
  json?: boolean;
}

export function registerOpen(program: Command, ctx: CliContext): void {
  const open = program
    .command('open')
    .description(
      'open a port to targets and keep it open in the foreground until SIGTERM, SIGINT or `ciport close`',
    )
    .argument('[targets...]', 'TARGET[:LOCALPORT]... (none: every target policy grants)')
    .option('--env-file <file>', 'write the exported variables here once the port accepts connections')
    .option(
      '--dotenv <file>',
      'the same as --env-file; the self-contained client needs this spelling (Node itself intercepts --env-file)',
    )
    .option('--state <file>', 'state file that `ciport close` reads (default: per-user runtime directory)')
    .option('--ttl <duration>', 'requested session lifetime (capped by policy), e.g. 30m')
    .option('--json', 'print the session, targets and variables as JSON instead of export lines')
    .option('-v, --verbose', 'log the session and each connection (with bytes) on stderr');
  connectionOptions(open);
  examples(open, [
    'ciport open staging-db:5432        # foreground: prints export lines, runs until Ctrl-C',
    'ciport open staging-db --dotenv .ciport.env &          # in a CI job: background it, then',
    'while [ ! -s .ciport.env ]; do sleep 0.2; done; set -a; . ./.ciport.env; set +a',
    'ciport close',
  ]).action(
    action(ctx, async (operands: string[], opts: OpenFlags) => {
      const targets = parseTargetSpecs(operands);
      const ttl = checkTtl(opts.ttl);
      const stateFile = resolve(opts.state ?? defaultStateFile(ctx.io.env));
      if (opts.envFile && opts.dotenv && resolve(opts.envFile) !== resolve(opts.dotenv)) {
        throw new UsageError('--env-file and --dotenv name the same thing: give one of them');
      }
      const envFileOption = opts.envFile ?? opts.dotenv;
      const envFile = envFileOption ? resolve(envFileOption) : undefined;
      const running = readState(stateFile);
      if (running && running.pid !== process.pid && isRunning(running.pid)) {
        throw new UsageError(
          `a port is already open (pid ${running.pid}, session ${running.session_id}); run \`ciport close\` first or pass --state`,
        );
      }
      const log = clientLog(ctx.io, Boolean(opts.verbose));
      const trap = new SignalTrap();
      let port: Port | undefined;
      try {
        port = await openTrapped(trap, ctx, opts, targets, ttl, log);
        // A signal before the port was open (while waiting for approval, say): no failure.
        if (!port) return 0;
        writeState(stateFile, {
          pid: process.pid,
          session_id: port.session.id,
          gateway: port.session.gateway.url.href,
          targets: port.bound.map((t) => ({ name: t.name, host: t.host, port: t.port })),
          env_file: envFile ?? null,
          started_at: new Date().toISOString(),
        });
        // The listeners accept connections already: the env file is the readiness signal.
        if (envFile) writeFileAtomic(envFile, formatDotenv(port.env));
        // With an env file, variables carrying a one-time credential stay out of the job log.
        const printed = envFile ? withoutCredentials(port) : port.env;
        if (opts.json) {
          writeJson(ctx.io, {
            session: {
              id: port.session.id,
              expires_at: port.session.info.expires_at,
              rule: port.session.info.rule,
            },
            targets: port.bound.map((t) => ({
              name: t.name,
              protocol: t.protocol,
              host: t.host,
              port: t.port,
              database: t.database ?? null,
            })),
            env: printed,
            env_file: envFile ?? null,
            state_file: stateFile,
          });
        } else ctx.io.stdout.write(formatExports(printed));
        log.info(`port open (pid ${process.pid}); stop it with \`ciport close\` or SIGTERM`);
        const outcome = await Promise.race([
          trap.caught.then((signal) => ({ signal }) as const),
          port.ended.then((end) => ({ end }) as const),
        ]);
        if ('end' in outcome) throw new SessionEndedError(outcome.end.reason, outcome.end.message);
        log.info(`${outcome.signal}: closing the port`);
        return 0;
      } finally {
        if (port) {
          await port.close();
          if (envFile) rmSync(envFile, { force: true });
          removeState(stateFile, process.pid);
        }
        trap.dispose();
      }
    }),
  );
}

/** The exports minus the variables that carry a one-time credential. */
function withoutCredentials(port: Port): Record<string, string> {
  const hidden = new Set(credentialKeys(port.bound));
  return Object.fromEntries(Object.entries(port.env).filter(([k]) => !hidden.has(k)));
}
