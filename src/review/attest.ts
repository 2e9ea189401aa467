// `ciport review attest`: a reviewer's sign-off of one period's review, recorded in the audit log
// as `review.attested` with the report's hash. Refused when the chain does not verify: a sign-off
// must never cite, or chain onto, a log that was tampered with.
import { type AuditEvent, auditEvent, type ReviewAttestedData } from '../audit/events.js';
import { CiportError, UsageError } from '../errors/index.js';
import type { Operator } from '../identity/operator.js';
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
 * report's hash. Throws CIPORT_E_AUDIT_CHAIN_BROKEN (writing nothing) when the chain fails, and a
 * usage error for a period that has not ended yet (its report would still change).
 */
export async function attestReview(
  store: AuditStore,
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
