import { EventEmitter } from 'node:events';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { loadGatewayConfig } from '../../config/load.js';
import { asCiportError } from '../../errors/index.js';
import { quietAwsSdkNodeWarning } from '../../exits/aws-sdk-warning.js';
import { startGateway } from '../../gateway/server.js';
import { createLogger } from '../../log/logger.js';
import { action, type CliContext, examples } from '../command.js';
import { type Io, printableLines } from '../output.js';

export function registerGateway(program: Command, ctx: CliContext): void {
  examples(
    program
      .command('gateway')
      .description(
        'run the gateway: verify job tokens, open sessions, serve tunnels and the admin API on one TLS port ' +
          '(SIGTERM drains: no new sessions, live tunnels get server.drain_grace, then exit 0; ' +
          'SIGHUP reloads rules, issuers and admin_tokens from the file)',
      )
      .requiredOption('-c, --config <file>', 'gateway configuration (YAML)')
      .option(
        '--log-level <level>',
        'pino level: trace, debug, info, warn, error (default info, or CIPORT_LOG_LEVEL)',
      ),
    [
      'ciport gateway --config /etc/ciport/gateway.yaml',
      'CIPORT_LOG_LEVEL=debug ciport gateway --config gateway.yaml',
    ],
  ).action(
    action(ctx, (opts: { config: string; logLevel?: string }) => {
      quietAwsSdkNodeWarning();
      return runGateway(opts.config, ctx.io, opts.logLevel ? { logLevel: opts.logLevel } : {});
    }),
  );
}

export interface RunGatewayOptions {
  logLevel?: string;
  /** Where SIGTERM/SIGINT/SIGHUP come from (default: the process). */
  signals?: EventEmitter;
}

/**
 * Start the gateway and serve until SIGTERM or SIGINT, then drain and resolve 0. A second
 * signal during the drain stops at once (sessions stay as stored; the next start adopts them).
 */
export async function runGateway(file: string, io: Io, options: RunGatewayOptions = {}): Promise<number> {
  const config = loadGatewayConfig(file, { env: io.env });
  const logger = createLogger({ level: options.logLevel ?? io.env.CIPORT_LOG_LEVEL ?? 'info' });
  const source = resolve(file);
  const gateway = await startGateway(config, { logger, stderr: io.stderr, configSource: source });
  io.stderr.write(`ciport: gateway listening on ${gateway.url}\n`);

  const signals = options.signals ?? process;
  // SIGHUP: read the file again and apply it; anything wrong keeps the running configuration.
  const onHup = () => {
    void (async () => {
      try {
        const next = loadGatewayConfig(file, { env: io.env });
        const { hash } = await gateway.reload(next, { source });
        io.stderr.write(
          `ciport: SIGHUP: configuration reloaded from ${file} (sha256 ${hash.slice(0, 12)})\n`,
        );
      } catch (thrown) {
        const err = asCiportError(thrown);
        logger.error({ code: err.code, err: err.message }, 'configuration reload refused');
        io.stderr.write(
          `ciport: SIGHUP: reload refused, the running configuration is kept: ${err.code}: ${printableLines(err.message)}\n`,
        );
      }
    })();
  };
  signals.on('SIGHUP', onHup);
  const signal = await new Promise<string>((done) => {
    const onSignal = (name: string) => () => {
      signals.off('SIGTERM', onTerm);
      signals.off('SIGINT', onInt);
      done(name);
    };
    const onTerm = onSignal('SIGTERM');
    const onInt = onSignal('SIGINT');
    signals.on('SIGTERM', onTerm);
    signals.on('SIGINT', onInt);
  });
  io.stderr.write(
    `ciport: ${signal}: draining (no new sessions; live tunnels get ${config.server.drain_grace} ms)\n`,
  );
  const hurry = () => {
    io.stderr.write('ciport: second signal: stopping now\n');
    void gateway.close();
  };
  signals.once('SIGTERM', hurry);
  signals.once('SIGINT', hurry);
  try {
    await gateway.drain();
  } finally {
    signals.off('SIGTERM', hurry);
    signals.off('SIGINT', hurry);
    // Registered until the end: a SIGHUP while draining is refused, not the default (exit).
    signals.off('SIGHUP', onHup);
    await new Promise<void>((done) => logger.flush(() => done()));
  }
  io.stderr.write('ciport: gateway stopped\n');
  return 0;
}

/** For tests: an emitter standing in for the process's signals. */
export function signalSource(): EventEmitter {
  return new EventEmitter();
}
