// The review as one self-contained, printable HTML page: inline CSS only, no script, no external
// asset (a Content-Security-Policy forbids both, should escaping ever fail), every value from the
// log escaped (`escapeHtml`): refs and project paths come from job tokens.
import { canonicalJson, type JsonValue } from '../audit/canonical.js';
import { count } from '../text/count.js';
import { escapeHtml } from '../text/html.js';
import { policyVersions, type ReviewReport } from './report.js';
import { operatorsInWords } from './words.js';

/** The review's CSS (inline in the page; the console serves it as a file: docs/console.md). */
export const REVIEW_STYLE = `
body{font:13px/1.4 system-ui,sans-serif;color:#111;margin:2em}
h1{font-size:20px}h2{font-size:16px;margin-top:2em;border-bottom:1px solid #999}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:left;vertical-align:top;word-break:break-word}
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,monospace}.bad{color:#a00;font-weight:bold}.ok{color:#060}
.total td{font-weight:bold;background:#f6f6f6}.empty{color:#666;font-style:italic}
@media print{body{margin:0}h2{break-after:avoid}tr{break-inside:avoid}th{background:#ddd!important;-webkit-print-color-adjust:exact;print-color-adjust:exact}}
`;

type Cell = string | number | null | { html: string };

/** The page for `report`. */
export function reviewHtml(report: ReviewReport): string {
  const p = report.period;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>ciport access review ${escapeHtml(p.since)} – ${escapeHtml(p.until)}</title>
<style>${REVIEW_STYLE}</style></head><body>
${reviewBody(report)}</body></html>
`;
}

/** The review's sections (everything inside <body>), as the console also shows them. */
export function reviewBody(report: ReviewReport): string {
  const p = report.period;
  const v = report.verification;
  const verification = v.ok
    ? `<span class="ok">intact</span>: ${count(v.events, 'event')} from genesis to the end of the period${v.head ? `, head <code>${escapeHtml(`${v.head.seq}:${v.head.hash}`)}</code>` : ''}`
    : `<span class="bad">BROKEN at seq ${v.seq}</span>: ${escapeHtml(v.reason)}`;
  return `<h1>Access review ${escapeHtml(p.since)} – ${escapeHtml(p.until)}</h1>
${table(null, [
  ['Period', `${p.since} (inclusive) to ${p.until} (exclusive)`],
  ['Events in the period', p.first_seq === null ? '0' : `${p.events} (seq ${p.first_seq}–${p.last_seq})`],
  ['Audit chain', { html: verification }],
  ['Review hash', { html: `<code>${escapeHtml(report.review_hash)}</code>` }],
])}
<h2>Access by target</h2>
${targets(report)}
<h2>Denials</h2>
${table(
  ['Reason', 'Count', 'First', 'Last', 'Projects'],
  report.denials.map((d) => [
    d.reason,
    d.count,
    d.first_at,
    d.last_at,
    projects(d.projects, d.distinct_projects),
  ]),
)}
<h2>Approvals</h2>
${table(
  ['Time', 'Decision', 'By', 'Reason', 'Project', 'Ref', 'Targets', 'Rule', 'Session'],
  report.approvals.map((a) => [
    a.time,
    a.type.replace(/^approval\./, ''),
    json(a.by),
    a.reason,
    a.project,
    a.ref,
    a.targets.join(', '),
    a.rule,
    a.session,
  ]),
  'No approvals were recorded in the period.',
)}
<h2>Policy versions</h2>
${table(
  ['Loaded', 'Config hash', 'Previous hash', 'Source', 'Rules', 'Operators (admin tokens)'],
  policyVersions(report).map(({ version: c, inForceAtSince }) => [
    inForceAtSince ? `${c.time} (in force at the start)` : c.time,
    { html: `<code>${escapeHtml(c.config_hash)}</code>` },
    c.previous_hash,
    c.source,
    c.rules.join(', '),
    operatorsInWords(c.operators),
  ]),
  'No configuration was loaded before or during the period.',
)}
<h2>Agents enrolled, revoked or rebound</h2>
${table(
  ['Time', 'Change', 'Agent', 'Id', 'Stage', 'Targets'],
  report.agents.map((a) => [a.time, a.change, a.agent, a.agent_id, a.stage, a.targets?.join(', ') ?? null]),
)}
<h2>Attestations recorded in the period</h2>
${table(
  ['Time', 'Reviewer', 'Period', 'Review hash', 'Comment'],
  report.attestations.map((a) => [
    a.time,
    json(a.reviewer),
    `${a.since} – ${a.until}`,
    { html: `<code>${escapeHtml(a.review_hash)}</code>` },
    a.comment,
  ]),
)}
`;
}

function targets(report: ReviewReport): string {
  if (report.targets.length === 0) return '<p class="empty">No target was used in the period.</p>';
  const head = [
    'Issuer',
    'Project',
    'Ref',
    'Environment',
    'Sessions',
    'Connections',
    'Bytes to target',
    'Bytes from target',
    'First use',
    'Last use',
    'Rules',
  ];
  return report.targets
    .map((t) => {
      const rows = t.principals.map((p) =>
        row([
          p.issuer,
          p.project,
          p.ref,
          p.environment,
          p.sessions,
          p.connections,
          p.bytes_to_target,
          p.bytes_from_target,
          p.first_use,
          p.last_use,
          p.rules.join(', '),
        ]),
      );
      const total = `<tr class="total">${cells(['', count(t.principals.length, 'principal'), '', '', t.sessions, t.connections, t.bytes_to_target, t.bytes_from_target, t.first_use, t.last_use, ''])}</tr>`;
      return `<h3>${escapeHtml(t.target)}</h3>\n<table><thead>${headRow(head)}</thead><tbody>\n${rows.join('\n')}\n${total}</tbody></table>`;
    })
    .join('\n');
}

function projects(list: string[], distinct: number): string {
  const more = distinct > list.length ? ` (+${distinct - list.length} more)` : '';
  return `${list.join(', ')}${more}`;
}

function json(value: JsonValue): string {
  return value === null ? '' : canonicalJson(value);
}

/** `head` null: a table of label and value, without a header row. */
function table(head: string[] | null, rows: Cell[][], empty = 'None in the period.'): string {
  if (rows.length === 0) return `<p class="empty">${escapeHtml(empty)}</p>`;
  const thead = head ? `<thead>${headRow(head)}</thead>` : '';
  return `<table>${thead}<tbody>\n${rows.map(row).join('\n')}\n</tbody></table>`;
}

function headRow(head: string[]): string {
  return `<tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr>`;
}

function row(cellsOf: Cell[]): string {
  return `<tr>${cells(cellsOf)}</tr>`;
}

function cells(values: Cell[]): string {
  return values
    .map((c) => {
      if (c === null) return '<td></td>';
      if (typeof c === 'number') return `<td class="n">${c}</td>`;
      if (typeof c === 'string') return `<td>${escapeHtml(c)}</td>`;
      return `<td>${c.html}</td>`;
    })
    .join('');
}
