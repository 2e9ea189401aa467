import type { Command } from 'commander';
import { UsageError } from '../../errors/index.js';
import { type AdminOptions, reasonBody, reasonOption, tableLines, withAdmin } from '../admin.js';
import { action, type CliContext, examples } from '../command.js';
import { type Io, paint, printable, writeJson } from '../output.js';

/** A session summary as the admin API returns it (docs/protocol.md). */
export interface SessionSummary {
  id: string;
  /** `pending`: waiting for approval (docs/approvals.md). */
  state: 'active' | 'pending' | 'ended';
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
      'list, revoke, approve and deny sessions on a running gateway (as CIPORT_ADMIN_TOKEN, else your `ciport login`)',
    );

  examples(
    sessions
      .command('list')
      .description(
        'sessions of the last 24 hours, ended ones included; --pending: those waiting for approval',
      )
      .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY)')
      .option('--active', 'only sessions not ended (pending ones included)')
      .option('--pending', 'only sessions waiting for approval, with who may decide (GET /v1/approvals)')
      .option(
        '--json',
        'print a JSON array of {id, state, end_reason, targets, principal, created_at, expires_at} (--pending: of approvals, docs/approvals.md)',
      ),
    [
      'CIPORT_ADMIN_TOKEN=… ciport sessions list --gateway https://ciport.example.com:8443',
      'ciport sessions list --active --json | jq -r ".[].id"',
      'ciport sessions list --pending',
    ],
  ).action(
    action(ctx, async (opts: AdminOptions & { active?: boolean; pending?: boolean }) => {
      if (opts.pending && opts.active) throw new UsageError('give --pending or --active, not both');
      if (opts.pending) {
        const pending = await withAdmin(ctx.io, opts, async (client, token) => {
          const res = await client.api('GET', '/v1/approvals', { bearer: token });
          return res.body as ApprovalSummary[];
        });
        if (opts.json) writeJson(ctx.io, pending);
        else ctx.io.stdout.write(formatApprovals(ctx.io, pending));
        return 0;
      }
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
      checkSessionId(id);
      const reason = reasonBody(opts.reason);
      const body = await withAdmin(ctx.io, opts, async (client, token) => {
        const res = await client.api('POST', `/v1/sessions/${id}/revoke`, {
          bearer: token,
          ...(reason.reason !== undefined ? { body: reason } : {}),
        });
        return res.body as {
          state: string;
          end_reason: string | null;
          revoked?: boolean;
          ended_at?: string | null;
        };
      });
      if (opts.json) writeJson(ctx.io, body);
      else if (body.revoked === false) {
        // Nothing to revoke: say so, with how and when it ended. Exit 0: it is not active, as asked.
        const when = body.ended_at ? ` at ${body.ended_at}` : '';
        ctx.io.stdout.write(
          `${id}: already ended (${printable(body.end_reason ?? 'unknown')}${when}); nothing revoked, nothing recorded\n`,
        );
      } else ctx.io.stdout.write(`${id}: ${body.state} (${printable(body.end_reason ?? 'unknown')})\n`);
      return 0;
    }),
  );

  for (const decision of ['approve', 'deny'] as const) {
    examples(
      reasonOption(
        sessions
          .command(decision)
          .description(
            decision === 'approve'
              ? "approve a session waiting for approval (role approver or admin, in one of its rule's groups); counted once per approver"
              : 'deny a session waiting for approval: it ends at once (approval_denied) and its job exits 3',
          )
          .argument('<id>', 'session id (ses_…)')
          .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY)'),
        decision === 'approve' ? 'approval.granted' : 'approval.denied',
      ).option('--json', 'print the approval as the API returns it (docs/approvals.md)'),
      [
        `ciport sessions ${decision} ses_3q2XJ0lQ0m5pV6kq1m2cXg --gateway https://ciport.example.com:8443`,
        decision === 'approve'
          ? 'ciport sessions approve ses_3q2XJ0lQ0m5pV6kq1m2cXg --reason "CHG-4711: schema migration"'
          : 'ciport sessions deny ses_3q2XJ0lQ0m5pV6kq1m2cXg --reason "not during the freeze"',
      ],
    ).action(
      action(ctx, async (id: string, opts: AdminOptions & { reason?: string }) => {
        checkSessionId(id);
        const reason = reasonBody(opts.reason);
        const body = await withAdmin(ctx.io, opts, async (client, token) => {
          const res = await client.api('POST', `/v1/approvals/${id}/${decision}`, {
            bearer: token,
            body: reason,
          });
          return res.body as ApprovalSummary & { counted?: boolean };
        });
        if (opts.json) writeJson(ctx.io, body);
        else ctx.io.stdout.write(`${id}: ${decisionText(body)}\n`);
        return 0;
      }),
    );
  }
}

function checkSessionId(id: string): void {
  if (!/^ses_[A-Za-z0-9_-]{1,64}$/.test(id))
    throw new UsageError(`"${printable(id)}" is not a session id (ses_…)`);
}

/** A session's approval as the API returns it (docs/approvals.md). */
export interface ApprovalSummary {
  session: string;
  status: string;
  url: string;
  expires_at: string;
  principal: Record<string, unknown>;
  targets: string[];
  rule: string | null;
  requirements: Array<{ rule: string; groups: string[]; count: number; approvers: string[] }>;
  decisions: Array<{ by: string; decision: string; at: string; note: string | null }>;
  may_decide?: boolean;
  refusal?: { code: string; message: string } | null;
  [key: string]: unknown;
}

/** `approved by token:bob`, `pending: 1 of 2 approvals (token:bob)`, `denied`. */
function decisionText(a: ApprovalSummary & { counted?: boolean }): string {
  const approvers = [...new Set(a.requirements.flatMap((r) => r.approvers))];
  if (a.status === 'approved') return `approved (by ${approvers.join(', ')})`;
  if (a.status === 'denied') return 'denied: the session ended (approval_denied)';
  const progress = a.requirements
    .map((r) => `${r.approvers.length}/${r.count} of ${r.groups.join('|')}`)
    .join(', ');
  const again = a.counted === false ? '; you had approved it already, counted once' : '';
  return `${a.status}: ${progress} approved (${approvers.join(', ') || 'nobody yet'})${again}`;
}

export function formatApprovals(io: Io, list: readonly ApprovalSummary[]): string {
  if (list.length === 0) return 'no sessions waiting for approval\n';
  const rows = list.map((a) => [
    a.session,
    who(a.principal ?? {}),
    a.targets.join(',') || '-',
    str(a.rule),
    a.requirements.map((r) => `${r.approvers.length}/${r.count} ${r.groups.join('|')}`).join(', '),
    a.expires_at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    a.may_decide ? 'yes' : (a.refusal?.code.replace('CIPORT_E_', '').toLowerCase() ?? 'no'),
  ]);
  const head = ['ID', 'WHO', 'TARGETS', 'RULE', 'APPROVALS', 'EXPIRES', 'YOU MAY DECIDE'];
  const [title, ...lines] = tableLines(head, rows);
  return `${[paint(io, io.stdout, 'bold', title as string), ...lines].join('\n')}\n`;
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
    out.push(rows[i]?.[1] !== 'ended' ? text : paint(io, io.stdout, 'dim', text));
  });
  return `${out.join('\n')}\n`;
}
