// `ciport review attest`: a reviewer's sign-off of one period's review, recorded in the audit log
// as `review.attested` with the report's hash. Refused when the chain does not verify, or when it
// is shorter than what an audit sink already acknowledged: a sign-off must never cite, or chain
// onto, a log that was tampered with.
import { type AuditEvent, auditEvent, type ReviewAttestedData } from '../audit/events.js';
import { CiportError, UsageError } from '../errors/index.js';
import type { Operator } from '../identity/operator.js';
import type { AuditSinkStore } from '../store/sink-cursors.js';
import type { AuditStore } from '../store/types.js';
import { printable } from '../text/printable.js';
import { buildReview } from './collect.js';
import type { ReviewPeriod } from './period.js';
import type { ReviewReport } from './report.js';

export type Reviewer = ReviewAttestedData['reviewer'];

/**
 * Who signs off: the operator the request authenticated as. An admin token is `admin-token` /
 * its name (docs/operators.md); a signed-in person (SSO) their issuer, subject, email and name.
 */
export function reviewerOf(operator: Operator): Reviewer {
  if (operator.kind === 'token') return { issuer: 'admin-token', subject: operator.name };
  const { issuer, subject, email, name } = operator;
  return { issuer, subject, ...(email ? { email } : {}), ...(name ? { name } : {}) };
}

/** Longest `--comment`, in characters (after control characters are shown as escapes). */
export const REVIEW_COMMENT_MAX = 1000;

/** The comment as recorded: one line, control characters escaped, at most 1000 characters. */
export function reviewComment(text: string | undefined | null): string | undefined {
  if (text === undefined || text === null) return undefined;
  const shown = printable(text.trim());
  if (shown.length > REVIEW_COMMENT_MAX) {
    throw new UsageError(`the comment is longer than ${REVIEW_COMMENT_MAX} characters`);
  }
  return shown || undefined;
}

/** `--reviewer`: an e-mail address, checked for shape only (it is what the reviewer says). */
export function reviewerEmail(text: string): string {
  const email = text.trim();
  if (
    email.length > 254 ||
    !/^[^\s@<>"'`\\\p{Cc}]+@[^\s@<>"'`\\\p{Cc}]+\.[^\s@<>"'`\\\p{Cc}]+$/u.test(email)
  ) {
    throw new UsageError(`--reviewer: expected an e-mail address, got "${printable(email.slice(0, 254))}"`);
  }
  return email;
}

export interface Attestation {
  report: ReviewReport;
  event: AuditEvent;
}

/**
 * Rebuild the report of `period`, verify the whole chain, and append `review.attested` citing the
 * report's hash. Throws CIPORT_E_AUDIT_CHAIN_BROKEN (writing nothing) when the chain fails or lost
 * events a sink acknowledged, and a usage error for a period that has not ended yet (its report
 * would still change).
 */
export async function attestReview(
  store: AuditStore & Pick<AuditSinkStore, 'auditSinkCursors'>,
  period: ReviewPeriod,
  reviewer: Reviewer,
  options: {
    comment?: string | undefined;
    now?: number;
    /** The review hash the reviewer saw (the console): refused when the report's differs. */
    expectedHash?: string | undefined;
  } = {},
): Promise<Attestation> {
  const now = options.now ?? Date.now();
  if (period.until > now) {
    throw new UsageError(
      `the period ends in the future (${new Date(period.until).toISOString()}): attest a period that has ended`,
    );
  }
  const report = await buildReview(store, period);
  const verification = report.verification;
  if (!verification.ok) {
    throw new CiportError(
      'CIPORT_E_AUDIT_CHAIN_BROKEN',
      `the audit chain fails verification at seq ${verification.seq}: ${verification.reason}; nothing was attested (run "ciport audit verify")`,
      { details: { seq: verification.seq, reason: verification.reason } },
    );
  }
  await checkSinkAnchors(store);
  if (options.expectedHash !== undefined && options.expectedHash !== report.review_hash) {
    throw new CiportError(
      'CIPORT_E_REVIEW_CHANGED',
      'the review of this period changed since it was shown (its hash differs); nothing was attested: reload it and attest what it shows',
    );
  }
  const event = await store.appendAudit(
    auditEvent('review.attested', {
      reviewer,
      since: report.period.since,
      until: report.period.until,
      review_hash: report.review_hash,
      ...(options.comment ? { comment: options.comment } : {}),
    }),
  );
  return { report, event };
}

/**
 * The audit sinks' cursors are anchors the chain cannot give itself (docs/audit.md, "Verifying"):
 * each says a receiver acknowledged the log up to that seq. A log that ends below one, or a sink
 * halted for that reason (docs/audit-sinks.md), lost events from its end.
 */
async function checkSinkAnchors(store: AuditStore & Pick<AuditSinkStore, 'auditSinkCursors'>): Promise<void> {
  // The cursors first: read before the head, a cursor is never above it unless events were removed.
  const cursors = await store.auditSinkCursors();
  const head = (await store.auditHead())?.seq ?? 0;
  const anchor = cursors.find((c) => c.halted || c.seq > head);
  if (!anchor) return;
  const sink = JSON.stringify(anchor.sink);
  throw new CiportError(
    'CIPORT_E_AUDIT_CHAIN_BROKEN',
    anchor.halted
      ? `audit sink ${sink} is halted: the log lost events the sink had acknowledged; nothing was attested (see "ciport audit sinks")`
      : `the audit log ends at seq ${head}, but audit sink ${sink} acknowledged events up to seq ${anchor.seq}: events were removed from the end of the log; nothing was attested`,
    { details: { sink: anchor.sink, cursor: anchor.seq, head, halted: anchor.halted } },
  );
}
