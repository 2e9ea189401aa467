// Audit search (docs/console.md): project, target, session, event type, decision and a time
// range; newest first, paged by seq (store/audit-search.ts: indexed, never OFFSET). Every query
// parameter is checked and bounded before the store sees it; a bad one gets a 400 page that says
// which parameter and why, with the form kept.
import type { JsonObject } from '../../audit/canonical.js';
import {
  AUDIT_EVENT_TYPES,
  type AuditEvent,
  type AuditEventType,
  isAuditEventType,
} from '../../audit/events.js';
import { TARGET_NAME_RE } from '../../config/target-name.js';
import { asCiportError, CiportError } from '../../errors/index.js';
import { assertMayDo } from '../../gateway/operators.js';
import { parseReviewTime } from '../../review/index.js';
import type { AuditSearch } from '../../store/audit-search.js';
import { ERROR_HEADER } from '../../transport/wire.js';
import type { PageCtx } from '../context.js';
import { bytes, isoTime, member, principalView } from '../format.js';
import { type Html, html } from '../html.js';
import { page } from '../layout.js';
import { sendHtml } from '../respond.js';

const PARAMS = [
  'project',
  'target',
  'session',
  'type',
  'decision',
  'since',
  'until',
  'before',
  'after',
  'limit',
] as const;
type Param = (typeof PARAMS)[number];
/** Longest parameter value accepted. */
export const MAX_PARAM = 256;
const MAX_PARAMS = 32;
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 200;
const SEQ = /^\d{1,15}$/;
const DECISIONS: Record<string, AuditEventType[]> = {
  allow: ['session.opened'],
  deny: ['session.denied', 'session.denied_summary'],
};

interface Parsed {
  /** The parameters as given (for the form and the pager links). */
  given: Partial<Record<Param, string>>;
  search: AuditSearch;
  /** type and decision exclude each other: nothing can match. */
  none: boolean;
}

function usage(message: string): CiportError {
  return new CiportError('CIPORT_E_USAGE', message);
}

/** The search the query string asks for; CIPORT_E_USAGE naming the parameter otherwise. */
export function parseAuditQuery(query: URLSearchParams, now: number): Parsed {
  const keys = [...query.keys()];
  if (keys.length > MAX_PARAMS)
    throw usage(`too many query parameters (${keys.length}; at most ${MAX_PARAMS})`);
  const given: Partial<Record<Param, string>> = {};
  for (const name of PARAMS) {
    const all = query.getAll(name);
    if (all.length > 1) throw usage(`${name}: given ${all.length} times; give it once`);
    const value = all[0]?.trim();
    if (value === undefined || value === '') continue;
    if (value.length > MAX_PARAM) throw usage(`${name}: longer than ${MAX_PARAM} characters`);
    given[name] = value;
  }
  const search: AuditSearch = { limit: DEFAULT_LIMIT };
  if (given.project !== undefined) search.project = given.project;
  if (given.target !== undefined) {
    if (!TARGET_NAME_RE.test(given.target))
      throw usage('target: not a target name (lower case letters, digits, - and _)');
    search.target = given.target;
  }
  if (given.session !== undefined) {
    if (!/^ses_[A-Za-z0-9_-]{1,64}$/.test(given.session)) throw usage('session: not a session id (ses_…)');
    search.session = given.session;
  }
  let types: AuditEventType[] | undefined;
  if (given.type !== undefined) {
    if (!isAuditEventType(given.type)) throw usage('type: not an audit event type (see the list)');
    types = [given.type];
  }
  let none = false;
  if (given.decision !== undefined) {
    const decided = DECISIONS[given.decision];
    if (!decided) throw usage('decision: allow or deny');
    types = types ? types.filter((t) => decided.includes(t)) : decided;
    none = types.length === 0;
  }
  if (types && types.length > 0) search.types = types;
  if (given.since !== undefined) search.since = parseReviewTime('since', given.since, now);
  if (given.until !== undefined) search.until = parseReviewTime('until', given.until, now);
  if (search.since !== undefined && search.until !== undefined && search.since >= search.until) {
    throw usage('since must be before until');
  }
  for (const name of ['before', 'after'] as const) {
    const v = given[name];
    if (v !== undefined && !SEQ.test(v)) throw usage(`${name}: a sequence number`);
  }
  if (given.before !== undefined) search.beforeSeq = Number(given.before);
  else if (given.after !== undefined) search.afterSeq = Number(given.after);
  if (given.limit !== undefined) {
    const n = /^\d{1,4}$/.test(given.limit) ? Number(given.limit) : Number.NaN;
    if (!(n >= 1 && n <= MAX_LIMIT)) throw usage(`limit: between 1 and ${MAX_LIMIT}`);
    search.limit = n;
  }
  return { given, search, none };
}

function text(value: unknown, max = 200): string {
  const s = typeof value === 'string' ? value : value === undefined ? '' : JSON.stringify(value);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** One line of what an event says, by type. */
function details(e: AuditEvent): Html {
  const d = e.data as JsonObject;
  switch (e.type) {
    case 'session.denied':
      return html`${member(d, 'reason')} <span class="muted">${member(d, 'error_code')}</span>`;
    case 'session.denied_summary':
      return html`${member(d, 'count')} × ${member(d, 'error_code')} <span class="muted">${member(d, 'first_at')} – ${member(d, 'last_at')}</span>`;
    case 'session.ended':
      return html`${member(d, 'reason')}${d.by ? html` by ${member(d, 'by')}` : ''}${d.note ? html` — <q>${member(d, 'note')}</q>` : ''}`;
    case 'connection.closed':
      return html`↑ ${bytes(Number(d.bytes_to_target) || 0)} ↓ ${bytes(Number(d.bytes_from_target) || 0)} ${member(d, 'closed_by') || member(d, 'error')}`;
    case 'query': {
      const list = Array.isArray(d.statements) ? (d.statements as JsonObject[]) : [];
      const first = list[0] ? member(list[0], 'statement') : '';
      return html`<code>${text(first)}</code>${list.length > 1 ? html` <span class="muted">(+${list.length - 1} more)</span>` : ''}`;
    }
    case 'http.request':
      return html`<code>${member(d, 'method')} ${text(member(d, 'path'))}</code> ${member(d, 'status')}`;
    case 'session.opened':
      return html`rule ${member(d, 'rule')}, expires ${member(d, 'expires_at')}`;
    default: {
      // What the other columns show already is left out.
      const { principal: _p, session: _s, target: _t, targets: _ts, ...rest } = d;
      return html`<span class="mono">${text(rest, 300)}</span>`;
    }
  }
}

function decisionOf(type: AuditEventType): Html {
  if (type === 'session.opened') return html`<span class="ok">allow</span>`;
  if (type === 'session.denied' || type === 'session.denied_summary')
    return html`<span class="bad">deny</span>`;
  return html``;
}

function resultRow(e: AuditEvent): Html {
  const d = e.data as JsonObject;
  const p = principalView(d.principal);
  const project = p.project ?? member(d, 'project');
  const targets = member(d, 'target') || (Array.isArray(d.targets) ? (d.targets as string[]).join(', ') : '');
  const session = member(d, 'session');
  return html`<tr><td class="n">${e.seq}</td><td class="nw">${isoTime(e.time)}</td><td class="nw">${e.type}</td><td>${decisionOf(e.type)}</td>
<td>${project}${p.ref ? html` @ ${p.ref}` : ''}</td><td>${targets}</td>
<td>${session ? html`<a href="/ui/sessions/${session}"><code>${session}</code></a>` : ''}</td><td>${details(e)}</td></tr>`;
}

function searchForm(given: Partial<Record<Param, string>>): Html {
  const input = (name: Param, label: string, placeholder = '') =>
    html`<label>${label}<input type="text" name="${name}" value="${given[name] ?? ''}" maxlength="${MAX_PARAM}" placeholder="${placeholder}"></label>`;
  const types = AUDIT_EVENT_TYPES.map(
    (t) => html`<option value="${t}"${given.type === t ? html` selected` : ''}>${t}</option>`,
  );
  const decisions = ['allow', 'deny'].map(
    (d) => html`<option value="${d}"${given.decision === d ? html` selected` : ''}>${d}</option>`,
  );
  return html`<form class="search" method="get" action="/ui/audit">
${input('project', 'Project', 'group/project')}${input('target', 'Target')}${input('session', 'Session', 'ses_…')}
<label>Event type<select name="type"><option value="">any</option>${types}</select></label>
<label>Decision<select name="decision"><option value="">any</option>${decisions}</select></label>
${input('since', 'Since', '2026-11-01 or 24h')}${input('until', 'Until', 'now')}
<button type="submit">Search</button></form>`;
}

function link(
  given: Partial<Record<Param, string>>,
  change: Partial<Record<Param, string | undefined>>,
): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...given, before: undefined, after: undefined, ...change })) {
    if (v !== undefined && v !== '') q.set(k, v);
  }
  return `/ui/audit?${q.toString()}`;
}

export async function auditPage(ctx: PageCtx): Promise<void> {
  const { deps, viewer } = ctx;
  assertMayDo(deps.log, viewer.operator, 'audit.read', ctx.url.pathname);
  const show = (status: number, body: Html, headers: Record<string, string> = {}) =>
    sendHtml(
      ctx.res,
      status,
      page(viewer, { title: 'Audit', current: '/ui/audit' }, html`<h1>Audit log</h1>${body}`),
      {
        headers,
      },
    );
  let parsed: Parsed;
  try {
    parsed = parseAuditQuery(ctx.url.searchParams, ctx.now);
  } catch (thrown) {
    const err = asCiportError(thrown);
    const given = Object.fromEntries(
      PARAMS.map((p) => [p, (ctx.url.searchParams.get(p) ?? '').slice(0, MAX_PARAM)]),
    ) as Record<Param, string>;
    show(
      err.httpStatus,
      html`${searchForm(given)}<div class="error"><p>${err.message}</p><p class="muted">Code <code>${err.code}</code></p></div>`,
      { [ERROR_HEADER]: err.code },
    );
    return;
  }
  const { given, search } = parsed;
  const result = parsed.none ? { events: [], more: false } : await deps.store.searchAudit(search);
  const first = result.events[0];
  const last = result.events.at(-1);
  const newer =
    first && (search.beforeSeq !== undefined || (search.afterSeq !== undefined && result.more))
      ? html`<a href="${link(given, { after: String(first.seq) })}">← Newer</a>`
      : '';
  const olderExists = search.afterSeq !== undefined || result.more;
  const older =
    last && olderExists ? html`<a href="${link(given, { before: String(last.seq) })}">Older →</a>` : '';
  const rows = result.events.map(resultRow);
  show(
    200,
    html`${searchForm(given)}
<p class="muted">${result.events.length} event${result.events.length === 1 ? '' : 's'}, newest first${first && last ? html` (seq ${last.seq}–${first.seq})` : ''}.</p>
<div class="pager">${newer}${older}</div>
${
  rows.length === 0
    ? html`<p class="muted">No event matches.</p>`
    : html`<table><thead><tr><th>Seq</th><th>Time</th><th>Type</th><th>Decision</th><th>Project</th><th>Targets</th><th>Session</th><th>Details</th></tr></thead><tbody>${rows}</tbody></table>`
}
<div class="pager">${newer}${older}</div>`,
  );
}
