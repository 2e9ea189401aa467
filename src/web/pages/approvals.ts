// Pending approvals (docs/console.md, docs/approvals.md): the list of sessions waiting for an
// approver, and one session's page — the link a waiting job prints — with Approve and Deny
// buttons. Everything shown comes from approvalView and every decision goes through
// decideAsOperator, exactly what GET /v1/approvals and POST /v1/approvals/{id}/approve|deny use:
// the role is checked here (`sessions.approve`), the groups, self-approval and the session's
// state by the session manager; a refusal is shown as an error page with its code.

import { approvalOf, approvalView, decideAsOperator, type PublicUrl } from '../../gateway/approval-view.js';
import { assertMayDo } from '../../gateway/operators.js';
import type { PageCtx } from '../context.js';
import { field } from '../form.js';
import { age, isoTime, principalCell } from '../format.js';
import { type Html, html } from '../html.js';
import { csrfField, page, type Viewer } from '../layout.js';
import { redirect, sendHtml } from '../respond.js';

type View = ReturnType<typeof approvalView>;

const urlOf = (ctx: PageCtx): PublicUrl => ({ publicUrl: () => ctx.deps.publicUrl });

/** `1/2 of dba, sre` per requirement, with who approved. */
function requirements(view: View): Html[] {
  return view.requirements.map(
    (r) =>
      html`<div>${r.approvers.length}/${r.count} of ${r.groups.join(', ')}${view.requirements.length > 1 ? html` <span class="muted">(rule ${r.rule})</span>` : ''}${r.approvers.length ? html`<br><span class="muted">${r.approvers.join(', ')}</span>` : ''}</div>`,
  );
}

function timeLeft(view: View, now: number): Html {
  const left = Date.parse(view.expires_at) - now;
  return html`<span class="nw">${age(left)}</span><br><span class="muted nw">${view.expires_at}</span>`;
}

/** Why the viewer may not decide, in a few words (the list's last column). */
function mayDecide(view: View): Html {
  if (view.may_decide) return html`<span class="ok">yes</span>`;
  return html`<span class="muted" title="${view.refusal?.message ?? ''}">${view.refusal?.code.replace(/^CIPORT_E_/, '').toLowerCase() ?? 'no'}</span>`;
}

export async function approvalsPage(ctx: PageCtx): Promise<void> {
  const { deps, viewer } = ctx;
  assertMayDo(deps.log, viewer.operator, 'sessions.read', ctx.url.pathname);
  const pending = await deps.sessions.pendingApprovals();
  const rows = pending.map(({ record, votes }) => {
    const v = approvalView(urlOf(ctx), record, votes, viewer.operator);
    return html`<tr data-approval="${v.session}">
<td><a href="/ui/approvals/${v.session}"><code>${v.session}</code></a></td>
<td>${principalCell(v.principal)}</td>
<td>${v.targets.join(', ')}</td>
<td>${v.rule ?? ''}</td>
<td>${requirements(v)}</td>
<td class="n">${timeLeft(v, ctx.now)}</td>
<td>${mayDecide(v)}</td>
</tr>`;
  });
  if (rows.length === 0)
    rows.push(html`<tr><td colspan="7" class="muted">No session waits for approval.</td></tr>`);
  sendHtml(
    ctx.res,
    200,
    page(
      viewer,
      {
        title: 'Pending approvals',
        current: '/ui/approvals',
        head: html`<meta http-equiv="refresh" content="15">`,
      },
      html`<h1>Pending approvals</h1>
<p class="muted no-print">Sessions of every gateway sharing the store that wait for an approver, newest first. Reloads every 15 s.</p>
<table><thead><tr><th>Session</th><th>Principal</th><th>Targets</th><th>Rule</th><th>Approvals</th><th>Time left</th><th>You may decide</th></tr></thead>
<tbody>${rows}</tbody></table>`,
    ),
  );
}

function decisionForms(viewer: Viewer, id: string): Html {
  const form = (decision: 'approve' | 'deny', label: string, cls: string, confirm: string) =>
    html`<form class="decision" method="post" action="/ui/approvals/${id}/${decision}" data-confirm="${confirm}">
${csrfField(viewer)}<input type="text" name="reason" maxlength="200" placeholder="reason (optional)" aria-label="reason for ${decision}">
<button type="submit" class="${cls}">${label}</button></form>`;
  return html`<div class="decisions">
${form('approve', 'Approve', 'primary', `Approve session ${id}? Its job gets access.`)}
${form('deny', 'Deny', 'danger', `Deny session ${id}? Its job stops (exit 3).`)}
</div>`;
}

function statusCell(v: View): Html {
  const cls = v.status === 'approved' ? 'ok' : v.status === 'pending' ? '' : 'bad';
  return html`<span class="${cls}" data-status="${v.status}">${v.status}</span>`;
}

export async function approvalDetailPage(ctx: PageCtx): Promise<void> {
  const { deps, viewer } = ctx;
  assertMayDo(deps.log, viewer.operator, 'sessions.read', ctx.url.pathname);
  const id = ctx.params[0] as string;
  const found = await approvalOf(deps.sessions, id);
  const v = approvalView(urlOf(ctx), found.record, found.votes, viewer.operator);
  const decide = v.may_decide
    ? decisionForms(viewer, id)
    : v.status === 'pending'
      ? html`<p class="notice">You may not decide on this request: ${v.refusal?.message ?? ''} <span class="muted">(<code>${v.refusal?.code ?? ''}</code>)</span></p>`
      : '';
  const decisions = v.decisions.map(
    (d) =>
      html`<tr><td>${d.at}</td><td>${d.decision}</td><td><code>${d.by}</code></td><td>${d.note ?? ''}</td></tr>`,
  );
  const ended = v.ended
    ? html`<tr><th>Ended</th><td>${v.ended.at ?? ''} (${v.ended.reason ?? ''})${v.ended.by ? html` by <code>${v.ended.by}</code>` : ''}${v.ended.note ? html` — <q>${v.ended.note}</q>` : ''}</td></tr>`
    : '';
  sendHtml(
    ctx.res,
    200,
    page(
      viewer,
      { title: `Approval ${id}`, current: '/ui/approvals' },
      html`<h1>Approval for session <code>${id}</code></h1>
${decide}
<table class="record"><tbody>
<tr><th>Status</th><td>${statusCell(v)}</td></tr>
<tr><th>Principal</th><td>${principalCell(v.principal)}</td></tr>
<tr><th>Targets</th><td>${v.targets.join(', ')}</td></tr>
<tr><th>Rule</th><td>${v.rule ?? ''}</td></tr>
<tr><th>Approvals needed</th><td>${requirements(v)}</td></tr>
<tr><th>Requested</th><td>${v.requested_at}</td></tr>
<tr><th>${v.status === 'pending' ? 'Time left' : 'Deadline'}</th><td>${v.status === 'pending' ? html`${age(Date.parse(v.expires_at) - ctx.now)} (until ${v.expires_at})` : v.expires_at}</td></tr>
${v.approved_at ? html`<tr><th>Approved</th><td>${v.approved_at}</td></tr>` : ''}${ended}
</tbody></table>
<h2>Decisions</h2>
${decisions.length ? html`<table><thead><tr><th>Time</th><th>Decision</th><th>By</th><th>Reason</th></tr></thead><tbody>${decisions}</tbody></table>` : html`<p class="muted">No decision yet.</p>`}
<p><a href="/ui/sessions/${id}">The session</a> · <a href="/ui/approvals">All pending approvals</a> <span class="muted">(as of ${isoTime(ctx.now)})</span></p>`,
    ),
  );
}

/** POST /ui/approvals/{id}/approve|deny: what `POST /v1/approvals/{id}/approve|deny` does. */
function decide(decision: 'approve' | 'deny') {
  return async (ctx: PageCtx): Promise<void> => {
    const { deps, viewer } = ctx;
    assertMayDo(deps.log, viewer.operator, 'sessions.approve', ctx.url.pathname);
    const id = ctx.params[0] as string;
    const reason = ctx.form ? field(ctx.form, 'reason', 1000) : undefined;
    const result = await decideAsOperator(
      deps.sessions,
      id,
      viewer.operator,
      decision,
      reason === undefined ? {} : { reason },
    );
    deps.log.info({ session: id, decision, status: result.status }, 'console: approval decision');
    redirect(ctx.res, `/ui/approvals/${id}`);
  };
}

export const approveFromConsole = decide('approve');
export const denyFromConsole = decide('deny');
