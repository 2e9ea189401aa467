import type { Command } from 'commander';
import { UsageError } from '../../errors/index.js';
import { type AdminOptions, reasonBody, reasonOption, tableLines, withAdmin } from '../admin.js';
import { action, type CliContext, examples } from '../command.js';
import { type Io, paint, printable, writeJson } from '../output.js';

/** A session summary as the admin API returns it (docs/protocol.md). */
export interface SessionSummary {
  id: string;
  state: 'active' | 'ended';
  end_reason: string | null;
  targets: string[];
  principal: Record<string, unknown>;
  created_at: string;
  expires_at: string;
  /** Who ended it (`token:<name>` for an operator's revoke), null otherwise or from older gateways. */
  ended_by?: string | null;
  /** The operator's --reason. */
  end_note?: string | null;
  [key: string]: unknown;
}

export function registerSessions(program: Command, ctx: CliContext): void {
  const sessions = program
    .command('sessions')
    .description(
      'list and revoke sessions on a running gateway (as CIPORT_ADMIN_TOKEN, else your `ciport login`)',
    );

  examples(
    sessions
      .command('list')
      .description('sessions of the last 24 hours, ended ones included')
      .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY)')
      .option('--active', 'only active sessions')
      .option(
        '--json',
        'print a JSON array of {id, state, end_reason, targets, principal, created_at, expires_at}',
      ),
    [
      'CIPORT_ADMIN_TOKEN=… ciport sessions list --gateway https://ciport.example.com:8443',
      'ciport sessions list --active --json | jq -r ".[].id"',
    ],
  ).action(
    action(ctx, async (opts: AdminOptions & { active?: boolean }) => {
      const list = await withAdmin(ctx.io, opts, async (client, token) => {
        const res = await client.api('GET', `/v1/sessions${opts.active ? '?active=1' : ''}`, {
          bearer: token,
        });
        return res.body as SessionSummary[];
      });
      if (opts.json) writeJson(ctx.io, list);
      else ctx.io.stdout.write(formatSessions(ctx.io, list, Boolean(opts.active)));
      return 0;
    }),
  );

  examples(
    reasonOption(
      sessions
        .command('revoke')
        .description('end a session now: its tunnels are cut and its end is audited (end_reason revoked)')
        .argument('<id>', 'session id (ses_…)')
        .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY)'),
      'session.ended',
    ).option('--json', 'print {"state": "ended", "end_reason": …}'),
    [
      'ciport sessions revoke ses_3q2XJ0lQ0m5pV6kq1m2cXg --gateway https://ciport.example.com:8443',
      'ciport sessions revoke ses_3q2XJ0lQ0m5pV6kq1m2cXg --reason "INC-1234: runner compromised"',
    ],
  ).action(
    action(ctx, async (id: string, opts: AdminOptions & { reason?: string }) => {
      if (!/^ses_[A-Za-z0-9_-]{1,64}$/.test(id))
        throw new UsageError(`"${printable(id)}" is not a session id (ses_…)`);
      const reason = reasonBody(opts.reason);
      const body = await withAdmin(ctx.io, opts, async (client, token) => {
        const res = await client.api('POST', `/v1/sessions/${id}/revoke`, {
          bearer: token,
          ...(reason.reason !== undefined ? { body: reason } : {}),
        });
        return res.body as { state: string; end_reason: string | null };
      });
      if (opts.json) writeJson(ctx.io, body);
      else ctx.io.stdout.write(`${id}: ${body.state} (${body.end_reason ?? 'unknown'})\n`);
      return 0;
    }),
  );
}

function str(v: unknown): string {
  return typeof v === 'string' && v !== '' ? v : '-';
}

/** Who, in a few characters: the project path (or subject) and ref. */
function who(principal: Record<string, unknown>): string {
  const project = (principal.project as { path?: unknown } | null | undefined)?.path;
  const ref = (principal.ref as { name?: unknown } | null | undefined)?.name;
  const base = str(project) !== '-' ? str(project) : str(principal.subject);
  return ref ? `${base}@${String(ref)}` : base;
}

/** The END column: the reason, and for a revoke who did it and why (`revoked by token:ci-bot: INC-1`). */
function endText(s: SessionSummary): string {
  const by = s.state === 'ended' && s.end_reason === 'revoked' && s.ended_by ? ` by ${s.ended_by}` : '';
  const note = by && s.end_note ? `: ${s.end_note}` : '';
  return `${str(s.end_reason)}${by}${note}`;
}

export function formatSessions(io: Io, sessions: readonly SessionSummary[], active = false): string {
  if (sessions.length === 0) return active ? 'no active sessions\n' : 'no sessions in the last 24 hours\n';
  const rows = sessions.map((s) => [
    s.id,
    s.state,
    endText(s),
    s.targets.join(',') || '-',
    who(s.principal ?? {}),
    s.created_at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    s.expires_at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
  ]);
  const head = ['ID', 'STATE', 'END', 'TARGETS', 'WHO', 'CREATED', 'EXPIRES'];
  const [title, ...lines] = tableLines(head, rows);
  const out = [paint(io, io.stdout, 'bold', title as string)];
  lines.forEach((text, i) => {
    out.push(rows[i]?.[1] === 'active' ? text : paint(io, io.stdout, 'dim', text));
  });
  return `${out.join('\n')}\n`;
}
