import type { Command } from 'commander';
import { loadGatewayConfig } from '../../config/load.js';
import { configReference } from '../../config/reference.js';
import { gatewayJsonSchema } from '../../config/schema.js';
import { UsageError } from '../../errors/index.js';
import { action, type CliContext, examples } from '../command.js';
import { count, printable, writeJson } from '../output.js';

interface CheckOptions {
  config?: string;
  skipSecrets?: boolean;
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

/** The file from `FILE` or `--config FILE` (every other command takes `--config`). */
export function configFileArg(file: string | undefined, flag: string | undefined): string {
  if (file && flag && file !== flag)
    throw new UsageError(`two configuration files given: ${file} and ${flag}`);
  const chosen = file ?? flag;
  if (!chosen) throw new UsageError('name the configuration file: config check FILE or --config FILE');
  return chosen;
}

export function registerConfig(program: Command, ctx: CliContext): void {
  const config = program.command('config').description('check a configuration file or print its JSON Schema');

  examples(
    config
      .command('check')
      .description('validate a gateway configuration (exit 0 valid, 2 invalid)')
      .argument('[file]', 'YAML configuration file (or --config FILE)')
      .option('-c, --config <file>', 'YAML configuration file, as the other commands take it')
      .option('--skip-secrets', 'do not require {env}/{file} secrets to be resolvable here')
      .option('--json', 'print {"ok": true, "issuers", "targets", "rules"} or {"error": …}')
      .option('-q, --quiet', 'print nothing on success')
      .option('-v, --verbose', '(the default now: a one-line summary on success)'),
    [
      'ciport config check /etc/ciport/gateway.yaml',
      'ciport config check --config examples/gateway-local.yaml',
      'ciport config check --skip-secrets examples/gateway.yaml',
    ],
  ).action(
    action(ctx, (fileArg: string | undefined, opts: CheckOptions) => {
      const file = configFileArg(fileArg, opts.config);
      const cfg = loadGatewayConfig(file, { resolveSecrets: !opts.skipSecrets, env: ctx.io.env });
      const counts = { issuers: cfg.issuers.length, targets: cfg.targets.length, rules: cfg.rules.length };
      if (opts.json) writeJson(ctx.io, { ok: true, ...counts });
      else if (!opts.quiet) {
        const what = `${count(counts.issuers, 'issuer')}, ${count(counts.targets, 'target')}, ${count(counts.rules, 'rule')}`;
        ctx.io.stdout.write(
          `config OK: ${printable(file)} (${what}${opts.skipSecrets ? '; secrets not checked' : ''})\n`,
        );
      }
      return 0;
    }),
  );

  examples(
    config
      .command('schema')
      .description('print the JSON Schema of the gateway configuration, or its reference as Markdown')
      .option(
        '--format <format>',
        'json (JSON Schema) or markdown (the reference in docs/config.md)',
        'json',
      ),
    ['ciport config schema > ciport.schema.json', 'ciport config schema --format markdown'],
  ).action(
    action(ctx, (opts: { format: string }) => {
      if (opts.format === 'markdown') ctx.io.stdout.write(configReference());
      else if (opts.format === 'json') writeJson(ctx.io, gatewayJsonSchema());
      else throw new UsageError(`--format: expected json or markdown, got ${opts.format}`);
      return 0;
    }),
  );
}
