// `ciport audit sinks` (docs/audit-sinks.md): each audit sink's cursor against the log's head,
// read from the store a gateway config names, and `ciport audit sinks resume`, the operator's
// answer to a sink halted because the log lost events the sink had acknowledged.
import type { Command } from 'commander';
import { auditEvent, jsonlLine } from '../../audit/index.js';
import { HALT_CODE } from '../../audit/sinks/index.js';
import { ExitCode, UsageError } from '../../errors/index.js';
import { operatorReason } from '../../gateway/operators.js';
import { OPERATOR_REASON_MAX } from '../../identity/operator.js';
import type { AuditSinkCursor } from '../../store/index.js';
import { tableLines } from '../admin.js';
import { action, type CliContext, examples } from '../command.js';
import { withStore } from '../configured-store.js';
import { osUser } from '../os-user.js';
import { printable, writeJson } from '../output.js';

/** A sink as `ciport audit sinks --json` prints it. */
interface SinkState {
  sink: string;
  cursor: number;
  /** Events in the log after the cursor. */
  lag: number;
  state: 'halted' | 'ahead_of_log' | 'leased' | 'idle';
  owner: string | null;
  lease_until: string | null;
}

function sinkState(c: AuditSinkCursor, head: number, now: number): SinkState {
  const leased = c.owner !== null && c.leaseUntil > now;
  return {
    sink: c.sink,
    cursor: c.seq,
    lag: Math.max(0, head - c.seq),
    state: c.halted ? 'halted' : c.seq > head ? 'ahead_of_log' : leased ? 'leased' : 'idle',
    owner: leased ? c.owner : null,
    lease_until: leased ? new Date(c.leaseUntil).toISOString() : null,
  };
}

const SHOWN: Record<SinkState['state'], (s: SinkState) => string> = {
  halted: () => `HALTED (${HALT_CODE}): run "ciport audit sinks resume"`,
  ahead_of_log: () => `AHEAD OF THE LOG (${HALT_CODE}): events it acknowledged were removed`,
  leased: (s) => `delivered by ${s.owner} (lease until ${s.lease_until})`,
  idle: () => 'no gateway delivering',
};

/** `--after`: a seq, at most the log's head (a cursor above it would skip the next events). */
function parseAfter(text: string, head: number): number {
  const after = /^\d{1,15}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(after) || after > head) {
    throw new UsageError(
      `--after: expected a seq from 0 to the log's head (${head}), got ${printable(text.slice(0, 40))}`,
    );
  }
  return after;
}

export function registerAuditSinks(audit: Command, ctx: CliContext): void {
  const sinks = examples(
    audit
      .command('sinks')
      .description("audit sinks' cursors against the log (list), and resuming a halted sink")
      .usage('[list] --config FILE [--json] | resume --config FILE --sink NAME --after SEQ')
      .addHelpText(
        'after',
        '\nSee `ciport audit sinks list --help` (the default) and `ciport audit sinks resume --help`,\nand docs/audit-sinks.md.',
      ),
    [
      'ciport audit sinks --config /etc/ciport/gateway.yaml',
      'ciport audit sinks resume --config gw.yaml --sink siem --after 4210 --reason "INC-7: truncation restored from backup"',
    ],
  );

  examples(
    sinks
      .command('list', { isDefault: true })
      .description(
        "each sink's cursor, lag and state (exit 1 when a sink is halted or its cursor is above the log's head)",
      )
      .requiredOption('--config <file>', 'gateway configuration (its store is read)')
      .option('--json', 'print {"head", "sinks": [{sink, cursor, lag, state, owner, lease_until}]}'),
    ['ciport audit sinks --config gw.yaml', 'ciport audit sinks --config gw.yaml --json | jq ".sinks[]"'],
  ).action(
    action(ctx, async (opts: { config: string; json?: boolean }) => {
      const { head, cursors } = await withStore(opts.config, ctx.io.env, async (store) => {
        // The cursors first: read before the head, a cursor is never above it unless events were removed.
        const cursors = await store.auditSinkCursors();
        return { cursors, head: (await store.auditHead())?.seq ?? 0 };
      });
      const now = Date.now();
      const states = cursors.map((c) => sinkState(c, head, now));
      if (opts.json) writeJson(ctx.io, { head, sinks: states });
      else if (states.length === 0)
        ctx.io.stdout.write(`no audit sink has run on this store (log head ${head})\n`);
      else {
        const rows = states.map((s) => [s.sink, String(s.cursor), String(s.lag), SHOWN[s.state](s)]);
        ctx.io.stdout.write(
          `log head: seq ${head}\n${tableLines(['SINK', 'CURSOR', 'LAG', 'STATE'], rows).join('\n')}\n`,
        );
      }
      const bad = states.some((s) => s.state === 'halted' || s.state === 'ahead_of_log');
      return bad ? ExitCode.problemsFound : ExitCode.ok;
    }),
  );

  examples(
    sinks
      .command('resume')
      .description(
        'let a halted sink deliver again, from the event after --after (records audit.sink_resumed)',
      )
      .requiredOption('--config <file>', 'gateway configuration (its store is written)')
      .requiredOption('--sink <name>', 'the halted sink')
      .requiredOption(
        '--after <seq>',
        'deliver the events after this seq (estimated as resume_after in the halt; docs/audit-sinks.md)',
      )
      .option(
        '--reason <text>',
        `why, recorded with your OS user name in audit.sink_resumed (at most ${OPERATOR_REASON_MAX} characters)`,
      )
      .option('--json', 'print the audit.sink_resumed event as `audit export --format jsonl` does'),
    [
      'ciport audit sinks resume --config gw.yaml --sink siem --after 4210',
      'ciport audit sinks resume --config gw.yaml --sink siem --after 4180 --reason "SIEM compared by hash: 4181+ differ"',
    ],
  ).action(
    action(
      ctx,
      async (opts: { config: string; sink: string; after: string; reason?: string; json?: boolean }) => {
        const note = operatorReason({ reason: opts.reason });
        const by = `local:${osUser(ctx.io)}`;
        const event = await withStore(opts.config, ctx.io.env, async (store) => {
          const after = parseAfter(opts.after, (await store.auditHead())?.seq ?? 0);
          const resumed = await store.resumeAuditSink(opts.sink, after, Date.now(), (cursor) =>
            auditEvent('audit.sink_resumed', {
              sink: opts.sink,
              cursor,
              after,
              by,
              ...(note ? { note } : {}),
            }),
          );
          if (!resumed) {
            throw new UsageError(
              `audit sink ${JSON.stringify(printable(opts.sink))} is not halted (see "ciport audit sinks")`,
            );
          }
          return resumed;
        });
        if (opts.json) writeJson(ctx.io, JSON.parse(jsonlLine(event)));
        else
          ctx.io.stdout.write(
            `resumed audit sink ${printable(opts.sink)}: it delivers the events after seq ${Number(event.data.after)} (audit seq ${event.seq})\n`,
          );
        return ExitCode.ok;
      },
    ),
  );
}
