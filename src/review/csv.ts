// The review as ONE CSV table (RFC 4180, CRLF): every row names its `section`, and only the
// columns that section uses are filled. Cells go through the audit export's `csvField`, which
// defuses spreadsheet formulas (a ref `=HYPERLINK(…)` becomes the text `'=HYPERLINK(…)`) and shows
// control characters as escapes: refs and project paths come from job tokens.
import { canonicalJson, type JsonValue } from '../audit/canonical.js';
import { csvField } from '../audit/export.js';
import { type PrincipalReview, policyVersions, type ReviewReport, type TargetReview } from './report.js';
import { operatorsInWords } from './words.js';

export const REVIEW_CSV_COLUMNS = [
  'section',
  'target',
  'issuer',
  'project',
  'ref',
  'environment',
  'sessions',
  'connections',
  'bytes_to_target',
  'bytes_from_target',
  'first_use',
  'last_use',
  'rules',
  'reason',
  'error_code',
  'count',
  'time',
  'name',
  'value',
  'detail',
  'operators',
] as const;

type Column = (typeof REVIEW_CSV_COLUMNS)[number];
type Row = Partial<Record<Column, JsonValue>>;

/** The whole report as CSV text, header first. */
export function reviewCsv(report: ReviewReport): string {
  const rows: Row[] = [
    ...meta(report),
    ...report.targets.flatMap((t) => [targetTotal(t), ...t.principals.map((p) => access(t, p))]),
    ...report.denials.map((d) => ({
      section: 'denial',
      reason: d.reason,
      error_code: d.error_code,
      rules: d.rule,
      count: d.count,
      first_use: d.first_at,
      last_use: d.last_at,
      value: d.projects.join(' '),
    })),
    ...report.approvals.map((a) => ({
      section: 'approval',
      time: a.time,
      name: a.type,
      value: canonicalJson({
        session: a.session,
        by: a.by,
        reason: a.reason,
        project: a.project,
        ref: a.ref,
        targets: a.targets,
        rule: a.rule,
      }),
    })),
    ...policyRows(report),
    ...report.agents.map((a) => ({
      section: 'agent',
      time: a.time,
      name: a.change,
      value: canonicalJson({ agent: a.agent, agent_id: a.agent_id, stage: a.stage, targets: a.targets }),
    })),
    ...report.attestations.map((a) => ({
      section: 'attestation',
      time: a.time,
      name: a.review_hash,
      value: canonicalJson({ reviewer: a.reviewer, since: a.since, until: a.until, comment: a.comment }),
    })),
  ];
  const lines = [
    REVIEW_CSV_COLUMNS.join(','),
    ...rows.map((r) => REVIEW_CSV_COLUMNS.map((c) => csvField(r[c])).join(',')),
  ];
  return `${lines.join('\r\n')}\r\n`;
}

function meta(report: ReviewReport): Row[] {
  const v = report.verification;
  const facts: [string, JsonValue][] = [
    ['since', report.period.since],
    ['until', report.period.until],
    ['events', report.period.events],
    ['review_hash', report.review_hash],
    ['verification', v.ok ? 'ok' : `broken at seq ${v.seq}: ${v.reason}`],
    ['verified_head', v.ok && v.head ? `${v.head.seq}:${v.head.hash}` : null],
  ];
  return facts.map(([name, value]) => ({ section: 'review', name, value }));
}

/** A target's totals: its usage columns, and how many principals reached it as `count`. */
function targetTotal(t: TargetReview): Row {
  const { principals, ...total } = t;
  return { section: 'target_total', ...total, count: principals.length };
}

/** The access row of one principal: its usage columns are the report's own field names. */
function access(t: TargetReview, p: PrincipalReview): Row {
  const { rules, ...rest } = p;
  return { section: 'access', target: t.target, ...rest, rules: rules.join(' ') };
}

function policyRows(report: ReviewReport): Row[] {
  return policyVersions(report).map(({ version, inForceAtSince }) => ({
    section: 'policy',
    name: inForceAtSince ? 'in_force_at_since' : 'loaded',
    time: version.time,
    value: version.config_hash,
    rules: version.rules.join(' '),
    detail: version.source,
    operators: operatorsInWords(version.operators),
  }));
}
