import type { Command } from 'commander';
import { loadGatewayConfig } from '../../config/load.js';
import { gatewayJsonSchema } from '../../config/schema.js';
import { action, type CliContext, examples } from '../command.js';
import { writeJson } from '../output.js';

export function registerConfig(program: Command, ctx: CliContext): void {
  const config = program.command('config').description('check a configuration file or print its JSON Schema');

  examples(
    config
      .command('check')
      .description('validate a gateway configuration (exit 0 valid, 2 invalid)')
      .argument('<file>', 'YAML configuration file')
      .option('--skip-secrets', 'do not require {env}/{file} secrets to be resolvable here')
      .option('--json', 'print {"ok": true} or {"error": …}')
      .option('-v, --verbose', 'print a summary on success'),
    [
      'ciport config check /etc/ciport/gateway.yaml',
      'ciport config check --skip-secrets examples/gateway.yaml',
    ],
  ).action(
    action(ctx, (file: string, opts: { skipSecrets?: boolean; json?: boolean; verbose?: boolean }) => {
      const cfg = loadGatewayConfig(file, { resolveSecrets: !opts.skipSecrets, env: ctx.io.env });
      if (opts.json) writeJson(ctx.io, { ok: true });
      else if (opts.verbose) {
        ctx.io.stdout.write(
          `${file}: ok (${cfg.issuers.length} issuers, ${cfg.targets.length} targets, ${cfg.rules.length} rules)\n`,
        );
      }
      return 0;
    }),
  );

  examples(config.command('schema').description('print the JSON Schema of the gateway configuration'), [
    'ciport config schema > ciport.schema.json',
  ]).action(
    action(ctx, () => {
      writeJson(ctx.io, gatewayJsonSchema());
      return 0;
    }),
  );
}
