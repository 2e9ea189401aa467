import type { Command } from 'commander';
import { loadAgentConfig } from '../../agent/config.js';
import { loadGatewayConfig } from '../../config/load.js';
import { configReference } from '../../config/reference.js';
import { gatewayJsonSchema } from '../../config/schema.js';
import { CiportError, UsageError } from '../../errors/index.js';
import { AdminTokens } from '../../gateway/operators.js';
import { action, type CliContext, examples } from '../command.js';
import { count, printable, writeJson } from '../output.js';

interface CheckOptions {
  config?: string;
  agent?: boolean;
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

/** An agent's file checked as a gateway's fails on its top-level keys: say which flag checks it. */
function withAgentHint<T>(file: string, load: () => T): T {
  try {
    return load();
  } catch (err) {
    if (err instanceof CiportError && /\(root\): unknown keys[^\n]*"gateway"/.test(err.message)) {
      throw new CiportError(
        err.code,
        `${err.message}\n(an agent's configuration? check it with: ciport config check --agent ${printable(file)})`,
        { cause: err },
      );
    }
    throw err;
  }
}

export function registerConfig(program: Command, ctx: CliContext): void {
  const config = program.command('config').description('check a configuration file or print its JSON Schema');

  examples(
    config
      .command('check')
      .description('validate a gateway configuration, or an agent one with --agent (exit 0 valid, 2 invalid)')
      .argument('[file]', 'YAML configuration file (or --config FILE)')
      .option('-c, --config <file>', 'YAML configuration file, as the other commands take it')
      .option('--agent', "the file is an agent's configuration (ciport agent --config FILE)")
      .option('--skip-secrets', 'do not require {env}/{file} secrets to be resolvable here')
      .option('--json', 'print {"ok": true, "issuers", "targets", "rules"} or {"error": …}')
      .option('-q, --quiet', 'print nothing on success')
      .option('-v, --verbose', '(the default now: a one-line summary on success)'),
    [
      'ciport config check /etc/ciport/gateway.yaml',
      'ciport config check --config examples/gateway-local.yaml',
      'ciport config check --skip-secrets examples/gateway.yaml',
      'ciport config check --agent /etc/ciport/agent.yaml',
    ],
  ).action(
    action(ctx, (fileArg: string | undefined, opts: CheckOptions) => {
      const file = configFileArg(fileArg, opts.config);
      const load = { resolveSecrets: !opts.skipSecrets, env: ctx.io.env };
      let summary: Record<string, string | number>;
      let what: string;
      if (opts.agent) {
        const cfg = loadAgentConfig(file, load);
        summary = { agent: cfg.name, targets: cfg.targets.length };
        what = `agent ${cfg.name}, ${count(cfg.targets.length, 'target')}`;
      } else {
        const cfg = withAgentHint(file, () => loadGatewayConfig(file, load));
        // Two admin tokens with one value: refused at start too (operators.ts), so say it now.
        if (!opts.skipSecrets) AdminTokens.fromConfig(cfg.admin_tokens);
        summary = { issuers: cfg.issuers.length, targets: cfg.targets.length, rules: cfg.rules.length };
        what = `${count(cfg.issuers.length, 'issuer')}, ${count(cfg.targets.length, 'target')}, ${count(cfg.rules.length, 'rule')}`;
      }
      if (opts.json) writeJson(ctx.io, { ok: true, ...summary });
      else if (!opts.quiet) {
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
