// The access review (DESIGN, "Audit"; docs/review.md): who reached which target in a period, how
// often and how much, the denials, approvals, policy versions, agent changes and sign-offs,
// built from the audit log alone. This module is pure: `ReviewBuilder` is fed the chain's rows in
// seq order and knows nothing of stores, HTTP or files, so the CLI (offline) and the gateway's
// admin API (online) produce the same report, byte for byte, from the same log.
import { createHash } from 'node:crypto';
import { canonicalJson, type JsonObject, type JsonValue } from '../audit/canonical.js';
import type { ChainRow } from '../audit/chain.js';
import type { ReviewPeriod } from './period.js';

/** Bumped when a field changes meaning; added fields keep it. */
export const REVIEW_FORMAT_VERSION = 1;

/** Distinct values kept per denial group (the rest are only counted, up to DISTINCT_CAP). */
const SAMPLE = 10;
const DISTINCT_CAP = 1000;

/** How much a target was used, in total or by one principal, in the period. */
export interface UsageReview {
  /** Sessions opened in the period that were granted the target. */
  sessions: number;
  /** Connections to the target opened in the period. */
  connections: number;
  /** Bytes of the connections closed in the period, app to target and back. */
  bytes_to_target: number;
  bytes_from_target: number;
  /** ISO 8601: the first and last session or connection event of the period. */
  first_use: string;
  last_use: string;
}

/** Who, as the review groups access: one row per target and principal. */
export interface PrincipalReview extends UsageReview {
  issuer: string | null;
  /** Project path (GitLab `project_path`, GitHub `repository`). */
  project: string | null;
  ref: string | null;
  environment: string | null;
  /** The rules that granted the access. */
  rules: string[];
}

export interface TargetReview extends UsageReview {
  target: string;
  principals: PrincipalReview[];
}

export interface DenialReview {
  /** `CODE` or `CODE (rule NAME)`: what the group has in common. */
  reason: string;
  error_code: string;
  rule: string | null;
  /** `session.denied` events plus the `count` of `session.denied_summary` events. */
  count: number;
  first_at: string;
  last_at: string;
  /** Up to 10 projects denied (sorted), and how many distinct ones (counted up to 1000). */
  projects: string[];
  distinct_projects: number;
}

/**
 * An approval given (`approval.granted`, one per approver), refused (`approval.denied`) or never
 * completed (`approval.timed_out`, `by` null) in the period (docs/approvals.md).
 */
export interface ApprovalReview {
  time: string;
  type: string;
  session: string | null;
  /** Who approved or denied (operator ref, `token:<name>` or `oidc:<issuer>#<subject>`). */
  by: JsonValue;
  /** The approver's `--reason`. */
  reason: string | null;
  /** What was asked for, by whom, under which rule. */
  targets: string[];
  project: string | null;
  ref: string | null;
  rule: string | null;
  /** The approvers counted so far (granted), before the denial (denied), not enough (timed_out). */
  approved_by: string[];
}

/** An admin token a configuration allowed (`config.loaded`'s `operators`; docs/operators.md). */
export interface OperatorReview {
  name: string;
  roles: string[];
  /** Approval groups, when the event lists them. */
  groups?: string[];
}

export interface PolicyVersion {
  /** ISO 8601: when this configuration was loaded. */
  time: string;
  config_hash: string;
  previous_hash: string | null;
  source: string;
  rules: string[];
  /** Who could use the admin API; null when the event predates the list (not recorded). */
  operators: OperatorReview[] | null;
}

export interface AgentReview {
  time: string;
  change: 'enrolled' | 'revoked' | 'targets_changed';
  agent: string;
  agent_id: string | null;
  /** `token_created` or `registered`, for `enrolled`. */
  stage: string | null;
  /** The binding (after the change, for `targets_changed`). */
  targets: string[] | null;
}

export interface AttestationReview {
  time: string;
  reviewer: JsonValue;
  since: string;
  until: string;
  review_hash: string;
  comment: string | null;
}

/**
 * The audit chain as checked while the report was built: from genesis to the newest event.
 * `events` and `head` describe the chain up to the end of the period only, so a report of a past
 * period is the same document (and hash) whenever it is rebuilt from an intact log.
 */
export type ReviewVerification =
  | { ok: true; events: number; head: { seq: number; hash: string } | null }
  | { ok: false; seq: number; reason: string };

export interface ReviewReport {
  version: number;
  period: {
    since: string;
    until: string;
    /** Events of the period and their seq range (null when there are none). */
    events: number;
    first_seq: number | null;
    last_seq: number | null;
  };
  targets: TargetReview[];
  denials: DenialReview[];
  approvals: ApprovalReview[];
  policy: { in_force_at_since: PolicyVersion | null; changes: PolicyVersion[] };
  agents: AgentReview[];
  attestations: AttestationReview[];
  verification: ReviewVerification;
  /** SHA-256 (hex) of the canonical JSON of every other member: what an attestation cites. */
  review_hash: string;
}

/** `review_hash` of a report: SHA-256 of the canonical JSON of the report without it. */
export function reviewHash(report: Omit<ReviewReport, 'review_hash'> | ReviewReport): string {
  const { review_hash: _ignored, ...rest } = report as ReviewReport;
  return createHash('sha256').update(canonicalJson(rest), 'utf8').digest('hex');
}

interface Usage {
  sessions: number;
  connections: number;
  bytesTo: number;
  bytesFrom: number;
  first: number;
  last: number;
}

interface PrincipalUsage extends Usage {
  issuer: string | null;
  project: string | null;
  ref: string | null;
  environment: string | null;
  rules: Set<string>;
}

interface DenialGroup {
  errorCode: string;
  rule: string | null;
  count: number;
  first: number;
  last: number;
  projects: Set<string>;
}

/** Feed every row of the chain, in seq order, then `finish`. Memory grows with distinct principals. */
export class ReviewBuilder {
  readonly #period: ReviewPeriod;
  readonly #targets = new Map<string, { total: Usage; principals: Map<string, PrincipalUsage> }>();
  readonly #denials = new Map<string, DenialGroup>();
  readonly #approvals: ApprovalReview[] = [];
  readonly #changes: PolicyVersion[] = [];
  readonly #agents: AgentReview[] = [];
  readonly #attestations: AttestationReview[] = [];
  #inForce: PolicyVersion | null = null;
  #events = 0;
  #firstSeq: number | null = null;
  #lastSeq: number | null = null;
  #head: { seq: number; hash: string } | null = null;
  #headCount = 0;

  constructor(period: ReviewPeriod) {
    this.#period = period;
  }

  /** One stored row. Rows after the period are ignored; rows before only for the policy in force. */
  add(row: ChainRow): void {
    if (row.time >= this.#period.until) return;
    this.#headCount++;
    this.#head = { seq: row.seq, hash: row.hash };
    const inPeriod = row.time >= this.#period.since;
    if (!inPeriod && row.type !== 'config.loaded') return;
    const data = parseData(row.data);
    if (!data) return; // unreadable data: verification reports the row
    if (!inPeriod) {
      this.#inForce = policyVersion(row.time, data);
      return;
    }
    this.#events++;
    this.#firstSeq ??= row.seq;
    this.#lastSeq = row.seq;
    this.#event(row.type, row.time, data);
  }

  #event(type: string, time: number, d: JsonObject): void {
    switch (type) {
      case 'session.opened':
        for (const target of strings(d.targets)) this.#use(target, d, time, { sessions: 1 });
        return;
      case 'connection.opened':
        if (typeof d.target === 'string') this.#use(d.target, d, time, { connections: 1 });
        return;
      case 'connection.closed':
        if (typeof d.target === 'string') {
          this.#use(d.target, d, time, {
            bytesTo: count(d.bytes_to_target),
            bytesFrom: count(d.bytes_from_target),
          });
        }
        return;
      case 'session.denied':
        this.#deny(d, time, time, 1, str(objectOf(d.principal).project));
        return;
      case 'session.denied_summary':
        this.#deny(d, isoMs(d.first_at) ?? time, isoMs(d.last_at) ?? time, count(d.count), str(d.project));
        return;
      case 'config.loaded':
        this.#changes.push(policyVersion(time, d));
        return;
      case 'agent.enrolled':
      case 'agent.revoked':
      case 'agent.targets_changed':
        this.#agents.push(agentChange(type, time, d));
        return;
      case 'review.attested':
        this.#attestations.push({
          time: iso(time),
          reviewer: d.reviewer ?? null,
          since: str(d.since) ?? '',
          until: str(d.until) ?? '',
          review_hash: str(d.review_hash) ?? '',
          comment: str(d.comment),
        });
        return;
      default:
        if (isApprovalEvent(type)) this.#approvals.push(approval(type, time, d));
    }
  }

  /** Account one session or connection event to its target and principal. */
  #use(target: string, d: JsonObject, time: number, add: Partial<Omit<Usage, 'first' | 'last'>>): void {
    let entry = this.#targets.get(target);
    if (!entry) {
      entry = { total: usage(time), principals: new Map() };
      this.#targets.set(target, entry);
    }
    const p = objectOf(d.principal);
    const who = {
      issuer: str(p.issuer),
      project: str(p.project),
      ref: str(p.ref),
      environment: str(p.environment),
    };
    const key = JSON.stringify([who.issuer, who.project, who.ref, who.environment]);
    let principal = entry.principals.get(key);
    if (!principal) {
      principal = { ...who, ...usage(time), rules: new Set() };
      entry.principals.set(key, principal);
    }
    const rule = str(d.rule);
    if (rule !== null) principal.rules.add(rule);
    for (const u of [entry.total, principal]) {
      u.sessions += add.sessions ?? 0;
      u.connections += add.connections ?? 0;
      u.bytesTo += add.bytesTo ?? 0;
      u.bytesFrom += add.bytesFrom ?? 0;
      u.first = Math.min(u.first, time);
      u.last = Math.max(u.last, time);
    }
  }

  #deny(d: JsonObject, first: number, last: number, n: number, project: string | null): void {
    const errorCode = str(d.error_code) ?? 'unknown';
    const rule = str(d.rule);
    const key = JSON.stringify([errorCode, rule]);
    let group = this.#denials.get(key);
    if (!group) {
      group = { errorCode, rule, count: 0, first, last, projects: new Set() };
      this.#denials.set(key, group);
    }
    group.count += n;
    group.first = Math.min(group.first, first);
    group.last = Math.max(group.last, last);
    if (project !== null && group.projects.size < DISTINCT_CAP) group.projects.add(project);
  }

  /** The report, given how the chain verified. */
  finish(verified: { ok: true } | { ok: false; seq: number; reason: string }): ReviewReport {
    const verification: ReviewVerification = verified.ok
      ? { ok: true, events: this.#headCount, head: this.#head }
      : { ok: false, seq: verified.seq, reason: verified.reason };
    const body: Omit<ReviewReport, 'review_hash'> = {
      version: REVIEW_FORMAT_VERSION,
      period: {
        since: iso(this.#period.since),
        until: iso(this.#period.until),
        events: this.#events,
        first_seq: this.#firstSeq,
        last_seq: this.#lastSeq,
      },
      targets: [...this.#targets]
        .sort(([a], [b]) => compare(a, b))
        .map(([target, { total, principals }]) => ({
          target,
          ...usageJson(total),
          principals: [...principals.values()].sort(byPrincipal).map((p) => ({
            issuer: p.issuer,
            project: p.project,
            ref: p.ref,
            environment: p.environment,
            ...usageJson(p),
            rules: [...p.rules].sort(compare),
          })),
        })),
      denials: [...this.#denials.values()]
        .map((g) => ({
          reason: g.rule === null ? g.errorCode : `${g.errorCode} (rule ${g.rule})`,
          error_code: g.errorCode,
          rule: g.rule,
          count: g.count,
          first_at: iso(g.first),
          last_at: iso(g.last),
          projects: [...g.projects].sort(compare).slice(0, SAMPLE),
          distinct_projects: g.projects.size,
        }))
        .sort((a, b) => b.count - a.count || compare(a.reason, b.reason)),
      approvals: this.#approvals,
      policy: { in_force_at_since: this.#inForce, changes: this.#changes },
      agents: this.#agents,
      attestations: this.#attestations,
      verification,
    };
    return { ...body, review_hash: reviewHash(body) };
  }
}

/**
 * The configuration versions of a report in time order, the one in force at `since` first: what
 * the HTML and CSV renderings list.
 */
export function policyVersions(
  report: Pick<ReviewReport, 'policy'>,
): Array<{ version: PolicyVersion; inForceAtSince: boolean }> {
  const { in_force_at_since: before, changes } = report.policy;
  return [
    ...(before ? [{ version: before, inForceAtSince: true }] : []),
    ...changes.map((version) => ({ version, inForceAtSince: false })),
  ];
}

/** The decisions on approvals (docs/approvals.md); `approval.requested` is not one. */
export function isApprovalEvent(type: string): boolean {
  return type === 'approval.granted' || type === 'approval.denied' || type === 'approval.timed_out';
}

function approval(type: string, time: number, d: JsonObject): ApprovalReview {
  const p = objectOf(d.principal);
  return {
    time: iso(time),
    type,
    session: str(d.session),
    by: d.by ?? null,
    reason: str(d.note),
    targets: strings(d.targets),
    project: str(p.project),
    ref: str(p.ref),
    rule: str(d.rule),
    // granted: this approval counted with the ones before it is in `approvals` (a number) only;
    // denied and timed_out name the approvers before them.
    approved_by: strings(d.approved_by),
  };
}

function policyVersion(time: number, d: JsonObject): PolicyVersion {
  return {
    time: iso(time),
    config_hash: str(d.config_hash) ?? '',
    previous_hash: str(d.previous_hash),
    source: str(d.source) ?? '',
    rules: strings(d.rules),
    operators: Array.isArray(d.operators) ? d.operators.map(operator) : null,
  };
}

function operator(value: JsonValue): OperatorReview {
  const o = objectOf(value);
  return {
    name: str(o.name) ?? '',
    roles: strings(o.roles),
    ...(Array.isArray(o.groups) ? { groups: strings(o.groups) } : {}),
  };
}

function agentChange(type: string, time: number, d: JsonObject): AgentReview {
  const change =
    type === 'agent.enrolled' ? 'enrolled' : type === 'agent.revoked' ? 'revoked' : 'targets_changed';
  return {
    time: iso(time),
    change,
    agent: str(d.agent) ?? '',
    agent_id: str(d.agent_id),
    stage: str(d.stage),
    targets: Array.isArray(d.targets) ? strings(d.targets) : null,
  };
}

function usage(time: number): Usage {
  return { sessions: 0, connections: 0, bytesTo: 0, bytesFrom: 0, first: time, last: time };
}

function usageJson(u: Usage): UsageReview {
  return {
    sessions: u.sessions,
    connections: u.connections,
    bytes_to_target: u.bytesTo,
    bytes_from_target: u.bytesFrom,
    first_use: iso(u.first),
    last_use: iso(u.last),
  };
}

function byPrincipal(a: PrincipalUsage, b: PrincipalUsage): number {
  return (
    compare(a.issuer, b.issuer) ||
    compare(a.project, b.project) ||
    compare(a.ref, b.ref) ||
    compare(a.environment, b.environment)
  );
}

/** Code-unit order, nulls first: the same on every machine (no locale). */
function compare(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return a < b ? -1 : 1;
}

function parseData(data: ChainRow['data']): JsonObject | undefined {
  let value: JsonValue;
  if (typeof data === 'string') {
    try {
      value = JSON.parse(data) as JsonValue;
    } catch {
      return undefined;
    }
  } else value = data;
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : undefined;
}

function objectOf(value: JsonValue | undefined): JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
}

function str(value: JsonValue | undefined): string | null {
  return typeof value === 'string' ? value : null;
}

function strings(value: JsonValue | undefined): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

/** A non-negative integer count from an event, 0 for anything else. */
function count(value: JsonValue | undefined): number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0 ? value : 0;
}

function isoMs(value: JsonValue | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
