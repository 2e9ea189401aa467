// Denials are audited without letting a caller grow the log without bound (issue 10, item 9).
// A token of a configured issuer that is denied over and over — rotating branch names, subjects,
// job ids — must not write one row per attempt, yet the fact and the number of denials must stay.
//
// - Denials are grouped by (issuer, rule, failing claim, project, code). The first of a group in
//   its window is written at once as `session.denied`, with the full principal. The others of
//   that window are counted; when the window closes one `session.denied_summary` records their
//   number, first/last time and a sample of the refs and subjects seen.
// - Per issuer, at most `maxPerIssuer` groups open per window. Past it (or past MAX_GROUPS in
//   memory) every denial of the issuer is counted in one overflow summary for the window.
// Rows per issuer and window: at most 2 × maxPerIssuer + 1. Counts are never dropped: the
// `session.denied` rows plus the summaries' `count` add up to every denial. Metrics are the
// caller's (ciport_sessions_denied_total counts each denial).
import { type AuditEventInput, auditEvent, type SessionDeniedData } from './events.js';

/** Groups kept in memory at most; beyond, denials fall into their issuer's overflow summary. */
const MAX_GROUPS = 10_000;
/** Distinct refs and subjects named in a summary, and counted at most. */
const SAMPLE = 10;
const DISTINCT_CAP = 1_000;

export interface DenialLogOptions {
  append: (event: AuditEventInput) => Promise<unknown>;
  windowMs: number;
  maxPerIssuer: number;
  /** Where a failed summary write is reported. */
  onError?: (err: unknown) => void;
  now?: () => number;
}

interface Group {
  issuer: string;
  project: string | null;
  projectId: string | null;
  rule: string | null;
  errorCode: string;
  claim: string | undefined;
  overflow: boolean;
  windowEnd: number;
  /** Denials counted, not written one by one. */
  count: number;
  firstAt: number;
  lastAt: number;
  refs: Set<string>;
  subjects: Set<string>;
}

export class DenialLog {
  readonly #options: DenialLogOptions;
  readonly #now: () => number;
  readonly #groups = new Map<string, Group>();
  /** Per issuer: groups opened in the current window. */
  readonly #issuers = new Map<string, { opened: number; windowEnd: number }>();
  readonly #timer: NodeJS.Timeout;
  readonly #writes = new Set<Promise<unknown>>();

  constructor(options: DenialLogOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#timer = setInterval(() => this.flush(false), Math.max(250, Math.floor(options.windowMs / 4)));
    this.#timer.unref();
  }

  /**
   * One denial. Resolves once its `session.denied` is committed when it is written one by one
   * (rejects when that write fails), at once when it was counted into a summary.
   */
  record(data: SessionDeniedData, claim?: string): Promise<void> {
    const now = this.#now();
    this.flush(false, now);
    const issuer = data.principal.issuer;
    const key = [
      issuer,
      data.rule ?? '',
      claim ?? '',
      data.principal.project_id ?? data.principal.project ?? '',
      data.error_code,
    ].join('\u0000');
    const group = this.#groups.get(key);
    if (group) {
      this.#count(group, data, now);
      return Promise.resolve();
    }
    const quota = this.#quota(issuer, now);
    if (quota.opened >= this.#options.maxPerIssuer || this.#groups.size >= MAX_GROUPS) {
      const overflowKey = `${issuer}\u0000*`;
      let overflow = this.#groups.get(overflowKey);
      if (!overflow) {
        overflow = this.#group(data, undefined, now, true);
        this.#groups.set(overflowKey, overflow);
      }
      this.#count(overflow, data, now);
      return Promise.resolve();
    }
    quota.opened += 1;
    this.#groups.set(key, this.#group(data, claim, now, false));
    return this.#options.append(auditEvent('session.denied', data)).then(() => {});
  }

  /** Write the summaries of windows that ended (all of them with `all`). */
  flush(all: boolean, now = this.#now()): void {
    for (const [key, group] of this.#groups) {
      if (!all && now < group.windowEnd) continue;
      this.#groups.delete(key);
      if (group.count > 0) this.#write(group);
    }
    for (const [issuer, quota] of this.#issuers)
      if (all || now >= quota.windowEnd) this.#issuers.delete(issuer);
  }

  /** Stop: write every pending summary and wait for the writes. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.flush(true);
    await Promise.allSettled([...this.#writes]);
  }

  #quota(issuer: string, now: number): { opened: number; windowEnd: number } {
    let quota = this.#issuers.get(issuer);
    if (!quota || now >= quota.windowEnd) {
      quota = { opened: 0, windowEnd: now + this.#options.windowMs };
      this.#issuers.set(issuer, quota);
    }
    return quota;
  }

  #group(data: SessionDeniedData, claim: string | undefined, now: number, overflow: boolean): Group {
    const p = data.principal;
    return {
      issuer: p.issuer,
      project: overflow ? null : p.project,
      projectId: overflow ? null : (p.project_id ?? null),
      rule: overflow ? null : data.rule,
      errorCode: overflow ? '*' : data.error_code,
      claim: overflow ? undefined : claim,
      overflow,
      windowEnd: now + this.#options.windowMs,
      count: 0,
      firstAt: now,
      lastAt: now,
      refs: new Set(),
      subjects: new Set(),
    };
  }

  #count(group: Group, data: SessionDeniedData, now: number): void {
    if (group.count === 0) group.firstAt = now;
    group.count += 1;
    group.lastAt = now;
    if (data.principal.ref !== null && group.refs.size < DISTINCT_CAP) group.refs.add(data.principal.ref);
    if (group.subjects.size < DISTINCT_CAP) group.subjects.add(data.principal.subject);
  }

  #write(group: Group): void {
    const write = this.#options
      .append(
        auditEvent('session.denied_summary', {
          issuer: group.issuer,
          project: group.project,
          project_id: group.projectId,
          rule: group.rule,
          error_code: group.errorCode,
          ...(group.claim ? { condition_claim: group.claim } : {}),
          count: group.count,
          first_at: new Date(group.firstAt).toISOString(),
          last_at: new Date(group.lastAt).toISOString(),
          window_ms: this.#options.windowMs,
          refs: [...group.refs].slice(0, SAMPLE),
          distinct_refs: group.refs.size,
          subjects: [...group.subjects].slice(0, SAMPLE),
          distinct_subjects: group.subjects.size,
          ...(group.overflow ? { overflow: true } : {}),
        }),
      )
      .catch((err) => this.#options.onError?.(err));
    this.#writes.add(write);
    void write.finally(() => this.#writes.delete(write));
  }
}
