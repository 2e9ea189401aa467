// Agents (docs/console.md): every enrolled agent, its bound targets, whether it is connected to
// this gateway (and since when, from where), when it was last seen; admins may revoke one (what
// `POST /v1/agents/{id}/revoke` does: its credential is refused and its connections are cut).
import { CiportError } from '../../errors/index.js';
import { actorOf, assertMayDo } from '../../gateway/operators.js';
import { mayDo } from '../../identity/operator.js';
import type { ConsoleAgent, PageCtx } from '../context.js';
import { field } from '../form.js';
import { html } from '../html.js';
import { csrfField, page } from '../layout.js';
import { redirect, sendHtml } from '../respond.js';

function row(ctx: PageCtx, a: ConsoleAgent) {
  const canRevoke = !a.revoked_at && mayDo(ctx.viewer.operator, 'agents.manage');
  const connected = a.connections.map(
    (c) =>
      html`<div>since ${c.connected_at}${c.remote ? html` from <code>${c.remote}</code>` : ''}${c.version ? html`, v${c.version}` : ''}, ${c.streams} streams${c.refused.length ? html` <span class="bad">refused: ${c.refused.join(', ')}</span>` : ''}</div>`,
  );
  const revoke = canRevoke
    ? html`<form class="inline" method="post" action="/ui/agents/${a.id}/revoke" data-confirm="Revoke agent ${a.name} (${a.id})? It is cut off at once and must be enrolled again.">
${csrfField(ctx.viewer)}<input type="text" name="reason" maxlength="200" placeholder="reason (optional)" aria-label="reason">
<button type="submit" class="danger">Revoke</button></form>`
    : '';
  return html`<tr><td>${a.name}<br><code class="muted">${a.id}</code></td><td>${a.targets.join(', ')}</td>
<td>${a.revoked_at ? html`<span class="bad">revoked ${a.revoked_at}</span>` : connected.length ? html`<span class="ok">connected</span>${connected}` : html`<span class="muted">not connected here</span>`}</td>
<td>${a.last_seen_at ?? ''}</td><td>${a.credential_expires_at}</td><td>${revoke}</td></tr>`;
}

export async function agentsPage(ctx: PageCtx): Promise<void> {
  assertMayDo(ctx.deps.log, ctx.viewer.operator, 'agents.read', ctx.url.pathname);
  const agents = await ctx.deps.agents.list();
  const rows = agents.map((a) => row(ctx, a));
  sendHtml(
    ctx.res,
    200,
    page(
      ctx.viewer,
      { title: 'Agents', current: '/ui/agents' },
      html`<h1>Agents</h1>
${
  rows.length === 0
    ? html`<p class="muted">No agent is enrolled (<code>ciport agents enroll</code>).</p>`
    : html`<table><thead><tr><th>Agent</th><th>Bound targets</th><th>Connected (this gateway)</th><th>Last seen</th><th>Credential expires</th><th></th></tr></thead><tbody>${rows}</tbody></table>`
}`,
    ),
  );
}

export async function revokeAgent(ctx: PageCtx): Promise<void> {
  const { deps, viewer } = ctx;
  assertMayDo(deps.log, viewer.operator, 'agents.manage', ctx.url.pathname);
  const id = ctx.params[0] as string;
  const reason = ctx.form ? field(ctx.form, 'reason', 1000) : undefined;
  const actor = actorOf(viewer.operator, reason === undefined ? {} : { reason });
  const revoked = await deps.agents.revoke(id, actor);
  if (revoked.length === 0) throw new CiportError('CIPORT_E_NOT_FOUND', `agent ${id} is revoked already`);
  redirect(ctx.res, '/ui/agents');
}
