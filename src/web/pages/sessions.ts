// Live sessions (docs/console.md): every active session of the store (all gateways), with its
// principal and links, targets, age, connections and bytes; the table body refreshes itself
// (console.js polls /ui/sessions/rows; without script a meta refresh reloads the page). Admins
// get a Revoke button per session.
import { assertMayDo } from '../../gateway/operators.js';
import { mayDo } from '../../identity/operator.js';
import { SESSION_TRAFFIC_MAX } from '../../store/audit-search.js';
import { type SessionRecord, shownState } from '../../store/types.js';
import type { PageCtx } from '../context.js';
import { age, bytes, principalCell } from '../format.js';
import { type Html, html } from '../html.js';
import { csrfField, page, type Viewer } from '../layout.js';
import { sendHtml } from '../respond.js';

const REFRESH_MS = 5000;
/** Most sessions one page shows (newest first). */
const MAX_ROWS = SESSION_TRAFFIC_MAX;

export function revokeForm(viewer: Viewer, id: string, label = 'Revoke'): Html {
  return html`<form class="inline" method="post" action="/ui/sessions/${id}/revoke" data-confirm="Revoke session ${id}? Its connections are cut at once.">
${csrfField(viewer)}<input type="text" name="reason" maxlength="200" placeholder="reason (optional)" aria-label="reason">
<button type="submit" class="danger">${label}</button></form>`;
}

async function rows(ctx: PageCtx): Promise<{ body: Html; count: number; shown: number }> {
  const sessions = await ctx.deps.sessions.list({ activeOnly: true });
  const shown = sessions.slice(0, MAX_ROWS);
  const traffic = await ctx.deps.store.sessionTraffic(shown.map((s) => s.id));
  const canRevoke = mayDo(ctx.viewer.operator, 'sessions.revoke');
  const body = shown.map((s: SessionRecord) => {
    const live = ctx.deps.sessions.liveConnections(s.id);
    const closed = traffic.get(s.id);
    const up = (closed?.bytesToTarget ?? 0) + live.reduce((n, c) => n + c.bytesIn, 0);
    const down = (closed?.bytesFromTarget ?? 0) + live.reduce((n, c) => n + c.bytesOut, 0);
    return html`<tr data-session="${s.id}">
<td><a href="/ui/sessions/${s.id}"><code>${s.id}</code></a>${pendingMark(s)}</td>
<td>${principalCell(s.principal)}</td>
<td>${s.targets.join(', ')}</td>
<td class="n">${age(ctx.now - s.createdAt)}</td>
<td class="n">${age(s.expiresAt - ctx.now)}</td>
<td class="n">${live.length} open / ${closed?.connections ?? 0} closed</td>
<td class="n">↑ ${bytes(up)}<br>↓ ${bytes(down)}</td>
<td>${canRevoke ? revokeForm(ctx.viewer, s.id) : ''}</td>
</tr>`;
  });
  if (body.length === 0) body.push(html`<tr><td colspan="8" class="muted">No live session.</td></tr>`);
  return { body: html`${body}`, count: sessions.length, shown: shown.length };
}

/**
 * A session waiting for approval is live but opens nothing yet: say so, with its approval page,
 * and read its "expires in" as the approval deadline (what it is while pending).
 */
function pendingMark(s: SessionRecord): Html | string {
  if (shownState(s) !== 'pending') return '';
  return html`<br><a class="pending" href="/ui/approvals/${s.id}">pending approval</a>`;
}

const HEAD = html`<tr><th>Session</th><th>Principal</th><th>Targets</th><th>Age</th><th>Expires in</th><th>Connections</th><th>Bytes</th><th></th></tr>`;

export async function sessionsPage(ctx: PageCtx): Promise<void> {
  assertMayDo(ctx.deps.log, ctx.viewer.operator, 'sessions.read', ctx.url.pathname);
  const { body, count, shown } = await rows(ctx);
  const more =
    count > shown ? html`<p class="notice">Showing the newest ${shown} of ${count} live sessions.</p>` : '';
  sendHtml(
    ctx.res,
    200,
    page(
      ctx.viewer,
      {
        title: 'Live sessions',
        current: '/ui/sessions',
        // Without script the page reloads itself; console.js replaces only the rows instead.
        head: html`<noscript><meta http-equiv="refresh" content="15"></noscript>`,
      },
      html`<h1>Live sessions</h1>
<p class="muted no-print" id="refresh-status" aria-live="polite">Reloads every 15 s.</p>${more}
<table><thead>${HEAD}</thead>
<tbody data-refresh="/ui/sessions/rows" data-every="${REFRESH_MS}">${body}</tbody></table>`,
    ),
  );
}

/** The table body alone, for console.js to swap in. */
export async function sessionRowsFragment(ctx: PageCtx): Promise<void> {
  assertMayDo(ctx.deps.log, ctx.viewer.operator, 'sessions.read', ctx.url.pathname);
  const { body } = await rows(ctx);
  sendHtml(ctx.res, 200, body);
}
