import type { Command } from 'commander';
import { exportEvents, verifyChain } from '../../audit/index.js';
import { ExitCode, UsageError } from '../../errors/index.js';
import { action, type CliContext, examples } from '../command.js';
import { withStore } from '../configured-store.js';
import { count, printable, writeJson } from '../output.js';
import { registerAuditSinks } from './audit-sinks.js';

export { openConfiguredStore, withStore } from '../configured-store.js';

function parseTime(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new UsageError(`${flag}: not an ISO 8601 time: ${text}`);
  return ms;
}

function parseAnchor(text: string | undefined): { seq: number; hash: string } | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+):([0-9a-f]{64})$/.exec(text);
  if (!m) throw new UsageError(`--anchor: expected SEQ:HASH as printed by a previous verify, got ${text}`);
  return { seq: Number(m[1]), hash: m[2] as string };
}

export function registerAudit(program: Command, ctx: CliContext): void {
  const audit = program
    .command('audit')
    .description('verify and export the tamper-evident audit log, and check its sinks');

  examples(
    audit
      .command('verify')
      .description('check the hash chain (exit 0 intact, 1 with the first bad seq)')
      .requiredOption('--config <file>', 'gateway configuration (its store is read)')
      .option('--anchor <seq:hash>', 'a head printed by an earlier verify: also detects truncation')
      .option('--json', 'print {"ok", "count", "head"} or {"ok": false, "seq", "reason"}'),
    [
      'ciport audit verify --config /etc/ciport/gateway.yaml',
      'ciport audit verify --config gw.yaml --anchor 1042:9f2c…   # head recorded last week',
    ],
  ).action(
    action(ctx, async (opts: { config: string; anchor?: string; json?: boolean }) => {
      const anchor = parseAnchor(opts.anchor);
      const result = await withStore(opts.config, ctx.io.env, (store) =>
        verifyChain(store, anchor ? { anchor } : {}),
      );
      if (opts.json) writeJson(ctx.io, result);
      else if (result.ok) {
        const head = result.head ? `${result.head.seq}:${result.head.hash}` : 'empty';
        ctx.io.stdout.write(`ok: ${count(result.count, 'event')} verified; head ${head}\n`);
      } else {
        ctx.io.stdout.write(
          `BROKEN at seq ${result.seq}: ${printable(result.reason)} (${count(result.count, 'event')} verified before it)\n`,
        );
      }
      return result.ok ? ExitCode.ok : ExitCode.problemsFound;
    }),
  );

  examples(
    audit
      .command('export')
      .description('write audit events as JSON lines or CSV to stdout')
      .requiredOption('--config <file>', 'gateway configuration (its store is read)')
      .option('--format <format>', 'jsonl or csv', 'jsonl')
      .option('--since <time>', 'ISO 8601 time, inclusive')
      .option('--until <time>', 'ISO 8601 time, exclusive'),
    [
      'ciport audit export --config gw.yaml --format csv --since 2026-11-01 > november.csv',
      'ciport audit export --config gw.yaml | jq -c "select(.type == \\"session.denied\\")"',
    ],
  ).action(
    action(ctx, async (opts: { config: string; format: string; since?: string; until?: string }) => {
      if (opts.format !== 'jsonl' && opts.format !== 'csv') {
        throw new UsageError(`--format: expected jsonl or csv, got ${opts.format}`);
      }
      const format = opts.format;
      const since = parseTime('--since', opts.since);
      const until = parseTime('--until', opts.until);
      await withStore(opts.config, ctx.io.env, (store) =>
        exportEvents(
          store,
          { format, ...(since !== undefined && { since }), ...(until !== undefined && { until }) },
          ctx.io.stdout,
        ),
      );
      return ExitCode.ok;
    }),
  );

  registerAuditSinks(audit, ctx);
}
