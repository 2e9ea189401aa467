// One session (docs/console.md): its record (state, end reason and who ended it), its principal,
// the connections open on this gateway, and — for roles that may read the audit log — its
// connections, queries and requests from the log, newest first, paged by seq.
import type { JsonObject } from '../../audit/canonical.js';
import type { AuditEvent } from '../../audit/events.js';
import { CiportError } from '../../errors/index.js';
import { actorOf, assertMayDo } from '../../gateway/operators.js';
import { mayDo } from '../../identity/operator.js';
import { shownState } from '../../store/types.js';
import type { PageCtx } from '../context.js';
import { field } from '../form.js';
import { age, bytes, isoTime, member, principalCell } from '../format.js';
import { type Html, html, lines } from '../html.js';
import { page } from '../layout.js';
import { redirect, sendHtml } from '../respond.js';
import { revokeForm } from './sessions.js';

const PAGE = 200;

function statements(data: JsonObject): Html[] {
  const list = Array.isArray(data.statements) ? (data.statements as JsonObject[]) : [];
  return list.map(
    (s) =>
      html`<div><span class="muted">${member(s, 'at')}</span> <code>${member(s, 'statement')}</code>${s.truncated ? html` <span class="muted">(cut)</span>` : ''}${s.outcome ? html` <span class="muted">${member(s, 'outcome')}</span>` : ''}</div>`,
  );
}

function eventRows(events: AuditEvent[]) {
  const connections = new Map<string, { opened?: AuditEvent; closed?: AuditEvent; target: string }>();
  const queries: Html[] = [];
  const requests: Html[] = [];
  const other: Html[] = [];
  for (const e of events) {
    const d = e.data;
    const connection = member(d, 'connection');
    if ((e.type === 'connection.opened' || e.type === 'connection.closed') && connection) {
      const c = connections.get(connection) ?? { target: member(d, 'target') };
      if (e.type === 'connection.opened') c.opened = e;
      else c.closed = e;
      connections.set(connection, c);
    } else if (e.type === 'query') {
      queries.push(
        html`<tr><td class="n">${e.seq}</td><td>${isoTime(e.time)}</td><td><code>${connection}</code></td><td>${member(d, 'target')}</td><td>${statements(d)}</td></tr>`,
      );
    } else if (e.type === 'http.request') {
      requests.push(
        html`<tr><td class="n">${e.seq}</td><td>${isoTime(e.time)}</td><td>${member(d, 'target')}</td><td><code>${member(d, 'method')} ${member(d, 'path')}</code></td><td class="n">${member(d, 'status')}</td><td class="n">↑ ${bytes(Number(d.bytes_out) || 0)} ↓ ${bytes(Number(d.bytes_in) || 0)}</td><td>${member(d, 'error')}</td></tr>`,
      );
    } else {
      other.push(
        html`<tr><td class="n">${e.seq}</td><td>${isoTime(e.time)}</td><td>${e.type}</td><td>${member(d, 'reason')} ${member(d, 'by')} ${member(d, 'note')}</td></tr>`,
      );
    }
  }
  const conns = [...connections.entries()].map(([id, c]) => {
    const closed = c.closed?.data;
    const how = closed ? member(closed, 'error') || member(closed, 'closed_by') : 'open';
    return html`<tr><td><code>${id}</code></td><td>${c.target}</td><td>${isoTime(c.opened?.time)}</td><td>${isoTime(c.closed?.time)}</td>
<td class="n">${closed ? html`↑ ${bytes(Number(closed.bytes_to_target) || 0)} ↓ ${bytes(Number(closed.bytes_from_target) || 0)}` : ''}</td>
<td>${how}${closed?.end_reason ? html` (${member(closed, 'end_reason')})` : ''}</td></tr>`;
  });
  return { conns, queries, requests, other };
}

function table(head: Html, rows: Html[], empty: string): Html {
  return rows.length === 0
    ? html`<p class="muted">${empty}</p>`
    : html`<table><thead>${head}</thead><tbody>${rows}</tbody></table>`;
}

export async function sessionDetailPage(ctx: PageCtx): Promise<void> {
  const { deps, viewer } = ctx;
  assertMayDo(deps.log, viewer.operator, 'sessions.read', ctx.url.pathname);
  const id = ctx.params[0] as string;
  const s = await deps.store.getSession(id);
  if (!s) throw new CiportError('CIPORT_E_SESSION_NOT_FOUND', `no session ${id}`);
  const live = deps.sessions.liveConnections(id);
  const summary = html`<table><tbody>
<tr><th>State</th><td class="${shownState(s) === 'active' ? 'ok' : ''}">${shownState(s)}</td></tr>
<tr><th>Principal</th><td>${principalCell(s.principal)}</td></tr>
<tr><th>Targets</th><td>${s.targets.join(', ')}</td></tr>
<tr><th>Rule</th><td>${s.rule ?? ''}</td></tr>
<tr><th>Opened</th><td>${isoTime(s.createdAt)} (${age(ctx.now - s.createdAt)} ago)</td></tr>
<tr><th>Expires</th><td>${isoTime(s.expiresAt)}</td></tr>
<tr><th>Ended</th><td>${isoTime(s.endedAt)}</td></tr>
<tr><th>End reason</th><td>${s.endReason ?? ''}</td></tr>
<tr><th>Ended by</th><td>${s.endedBy ?? ''}${s.endNote ? html` — <q>${s.endNote}</q>` : ''}</td></tr>
<tr><th>Gateway</th><td><code>${s.gatewayId ?? ''}</code></td></tr>
</tbody></table>
<details><summary>Principal as recorded</summary><pre>${lines(JSON.stringify(s.principal, null, 2))}</pre></details>`;
  const revoke =
    s.state === 'active' && mayDo(viewer.operator, 'sessions.revoke')
      ? html`<p>${revokeForm(viewer, s.id, 'Revoke this session')}</p>`
      : '';
  const liveTable = table(
    html`<tr><th>Connection</th><th>Target</th><th>Bytes so far</th></tr>`,
    live.map(
      (c) =>
        html`<tr><td><code>${c.id}</code></td><td>${c.target}</td><td class="n">↑ ${bytes(c.bytesIn)} ↓ ${bytes(c.bytesOut)}</td></tr>`,
    ),
    'No connection of this session is open on this gateway.',
  );
  let fromLog: Html = html`<p class="muted">The connections, queries and requests of a session come from the audit log: they need role admin or auditor.</p>`;
  if (mayDo(viewer.operator, 'audit.read')) {
    const beforeText = ctx.url.searchParams.get('before');
    const before = beforeText && /^\d{1,15}$/.test(beforeText) ? Number(beforeText) : undefined;
    const result = await deps.store.searchAudit({
      session: id,
      limit: PAGE,
      ...(before ? { beforeSeq: before } : {}),
    });
    const { conns, queries, requests, other } = eventRows(result.events);
    const last = result.events.at(-1);
    const older =
      result.more && last
        ? html`<p class="pager"><a href="/ui/sessions/${id}?before=${last.seq}">Older events →</a></p>`
        : '';
    fromLog = html`<p class="muted">From the audit log: the newest ${result.events.length} events of this session${before ? html` before seq ${before}` : ''}. <a href="/ui/audit?session=${id}">Search them</a></p>
<h2>Connections</h2>
${table(html`<tr><th>Connection</th><th>Target</th><th>Opened</th><th>Closed</th><th>Bytes</th><th>How it ended</th></tr>`, conns, 'No connection in these events.')}
<h2>Queries</h2>
${table(html`<tr><th>Seq</th><th>Time</th><th>Connection</th><th>Target</th><th>Statements</th></tr>`, queries, 'No query in these events.')}
<h2>Requests</h2>
${table(html`<tr><th>Seq</th><th>Time</th><th>Target</th><th>Request</th><th>Status</th><th>Bytes</th><th>Error</th></tr>`, requests, 'No HTTP request in these events.')}
<h2>Session events</h2>
${table(html`<tr><th>Seq</th><th>Time</th><th>Type</th><th>Details</th></tr>`, other, 'None in these events.')}
${older}`;
  }
  sendHtml(
    ctx.res,
    200,
    page(
      viewer,
      { title: `Session ${id}`, current: '/ui/sessions' },
      html`<h1>Session <code>${id}</code></h1>${revoke}${summary}
<h2>Open on this gateway</h2>${liveTable}${fromLog}`,
    ),
  );
}

/** POST /ui/sessions/{id}/revoke: what `POST /v1/sessions/{id}/revoke` does, as the signed-in operator. */
export async function revokeSession(ctx: PageCtx): Promise<void> {
  const { deps, viewer } = ctx;
  assertMayDo(deps.log, viewer.operator, 'sessions.revoke', ctx.url.pathname);
  const id = ctx.params[0] as string;
  const reason = ctx.form ? field(ctx.form, 'reason', 1000) : undefined;
  const actor = actorOf(viewer.operator, reason === undefined ? {} : { reason });
  const { record, revoked } = await deps.sessions.revoke(id, actor.by, actor.note);
  deps.log.info({ session: id, by: actor.by, state: record.state, revoked }, 'console: session revoked');
  redirect(ctx.res, `/ui/sessions/${id}`);
}
