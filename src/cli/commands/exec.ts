import type { Command } from 'commander';
import { exitCodeOf, FORWARDED_SIGNALS, runCommand } from '../../client/child.js';
import { childEnv, parseTargetSpecs, shadowingKeys, type TargetSpec } from '../../client/env.js';
import { type ClientLog, Port, stderrLog } from '../../client/port.js';
import { SignalTrap } from '../../client/signals.js';
import { parseDuration } from '../../config/duration.js';
import { UsageError } from '../../errors/index.js';
import { action, type CliContext, examples } from '../command.js';
import { type Io, paint } from '../output.js';

export interface ConnectionFlags {
  gateway?: string;
  tokenEnv?: string;
  audience?: string;
  verbose?: boolean;
}

/** `--gateway`, `--token-env`, `--audience`: shared by exec, open and whoami. */
export function connectionOptions(cmd: Command): Command {
  return cmd
    .option('--gateway <url>', 'gateway URL (default: $CIPORT_GATEWAY)')
    .option('--token-env <name>', 'environment variable holding the job ID token (default: CIPORT_ID_TOKEN)')
    .option(
      '--audience <aud>',
      'audience to request on GitHub Actions (default: what the gateway advertises at /v1/info, else its URL)',
    );
}

export function checkTtl(ttl: string | undefined): string | undefined {
  if (ttl !== undefined && parseDuration(ttl) === undefined) {
    throw new UsageError(`--ttl "${ttl}": expected a duration such as 30s, 15m or 2h`);
  }
  return ttl;
}

export function clientLog(io: Io, verbose: boolean) {
  return stderrLog(io.stderr, verbose, (t) => paint(io, io.stderr, 'dim', t));
}

/**
 * Port.open for `exec` and `open`, under their signal trap: a signal while the session waits for
 * approval stops the wait (the session is ended) and resolves undefined; so does a signal that
 * arrived while the port was being opened (trap.first tells which).
 */
export async function openTrapped(
  trap: SignalTrap,
  ctx: CliContext,
  opts: ConnectionFlags,
  targets: TargetSpec[],
  ttl: string | undefined,
  log: ClientLog,
): Promise<Port | undefined> {
  const stop = new AbortController();
  void trap.caught.then(() => stop.abort());
  try {
    const port = await trap.during(
      Port.open({
        env: ctx.io.env,
        gateway: opts.gateway,
        tokenEnv: opts.tokenEnv,
        audience: opts.audience,
        targets,
        ttl,
        log,
        signal: stop.signal,
      }),
    );
    if (!trap.first) return port;
    await port.close();
    return undefined;
  } catch (err) {
    if (trap.first) return undefined;
    throw err;
  }
}

/** The words after the first `--` of the command line (commander drops the `--` itself). */
function commandAfterDashDash(cmd: Command): string[] | undefined {
  let root: Command = cmd;
  while (root.parent) root = root.parent;
  const raw = (root as Command & { rawArgs?: string[] }).rawArgs ?? [];
  const i = raw.indexOf('--');
  return i < 0 ? undefined : raw.slice(i + 1);
}

export function registerExec(program: Command, ctx: CliContext): void {
  const exec = program
    .command('exec')
    .description(
      'open a port to targets, run a command with their local addresses in its environment, close the port when it exits',
    )
    .argument('[targets...]', 'TARGET[:LOCALPORT]... (none: every target policy grants), then -- CMD ARGS')
    .option('--ttl <duration>', 'requested session lifetime (capped by policy), e.g. 10m')
    .option('-v, --verbose', 'log the session and each connection (with bytes) on stderr');
  connectionOptions(exec);
  examples(exec, [
    "ciport exec staging-db -- psql -c 'select 1'",
    'ciport exec staging-db:5432 cache -- npm test',
    'ciport exec --gateway https://ciport.example.com --ttl 20m staging-db -- ./migrate.sh',
  ]).action(
    action(ctx, async (operands: string[], opts: ConnectionFlags & { ttl?: string }, cmd: Command) => {
      const command = commandAfterDashDash(cmd);
      if (!command || command.length === 0) {
        throw new UsageError('missing the command: ciport exec TARGET... -- CMD ARGS');
      }
      const targets = parseTargetSpecs(operands.slice(0, operands.length - command.length));
      const ttl = checkTtl(opts.ttl);
      const log = clientLog(ctx.io, Boolean(opts.verbose));
      const trap = new SignalTrap(FORWARDED_SIGNALS);
      try {
        const port = await openTrapped(trap, ctx, opts, targets, ttl, log);
        if (!port) return exitCodeOf(null, trap.first ?? null);
        try {
          if (trap.first) return exitCodeOf(null, trap.first);
          const env = childEnv(ctx.io.env, port.env, [port.tokenEnvName, ...shadowingKeys(port.bound)]);
          const result = await runCommand(command, {
            env,
            signalSource: trap.relay,
            onSignal: (sig) => log.info(`forwarding ${sig} to ${command[0]}`),
          });
          if (result.spawnError) log.warn(result.spawnError);
          else log.info(`${command[0]} exited with ${result.code ?? result.signal}`);
          return port.exitCodeFor(result.exitCode, command[0] ?? 'the command');
        } finally {
          await port.close();
        }
      } finally {
        trap.dispose();
      }
    }),
  );
}
