// Approvals (docs/approvals.md), the pure part: what a session needs before it may be used, and
// whether the approvals given so far meet it.
//
//   requirements = one per distinct rule with `approval:` among the rules that grant the
//                  session's targets (a target is granted by one rule: policy/engine.ts)
//   deadline     = requested_at + the shortest of their timeouts
//   met          = every requirement has `count` distinct approvers (by operator ref) who belong
//                  to one of its groups; one approver counts for every requirement they belong to
//
// A denial by anyone entitled to decide ends the request whatever the count.
import type { Decision } from './engine.js';

/** A rule's `approval:` as the policy holds it (timeout in ms). */
export interface ApprovalRule {
  readonly groups: readonly string[];
  readonly count: number;
  readonly timeout: number;
}

/** What one granting rule requires of a session. */
export interface ApprovalRequirement {
  rule: string;
  groups: string[];
  count: number;
}

/** The requirements of a session and its deadline, fixed when it is requested. */
export interface ApprovalTerms {
  requirements: ApprovalRequirement[];
  /** Epoch ms: unapproved by then, the session ends with `approval_timeout`. */
  deadline: number;
}

/** One operator's decision on a pending session, as stored (one per operator and session). */
export interface ApprovalVote {
  /** operatorRef(): `token:<name>` or `oidc:<issuer>#<subject>`. */
  by: string;
  decision: 'approve' | 'deny';
  /** Epoch ms. */
  at: number;
  /** Their reason, escaped, or null. */
  note: string | null;
  /** The operator's groups that the session's requirements name, when they decided. */
  groups: string[];
}

/** How far a session's approvals are. */
export interface ApprovalTally {
  met: boolean;
  requirements: Array<ApprovalRequirement & { approvers: string[] }>;
  /** Every distinct approver, in the order they approved. */
  approvers: string[];
}

/**
 * The approval terms for an allowing decision, or null when no granting rule asks for approval.
 * `approvalOf` gives a rule's `approval:` (undefined: the rule needs none, or is gone).
 */
export function approvalTermsFor(
  decision: Pick<Decision, 'targets'>,
  approvalOf: (rule: string) => ApprovalRule | null | undefined,
  now: number,
): ApprovalTerms | null {
  const requirements: ApprovalRequirement[] = [];
  let timeout = Number.POSITIVE_INFINITY;
  for (const rule of new Set(decision.targets.map((t) => t.rule))) {
    const approval = approvalOf(rule);
    if (!approval) continue;
    requirements.push({ rule, groups: [...approval.groups], count: approval.count });
    timeout = Math.min(timeout, approval.timeout);
  }
  return requirements.length === 0 ? null : { requirements, deadline: now + timeout };
}

/** The groups of `operatorGroups` that some requirement names (empty: they may not decide). */
export function groupsThatCount(
  operatorGroups: readonly string[] | undefined,
  requirements: readonly ApprovalRequirement[],
): string[] {
  const named = new Set(requirements.flatMap((r) => r.groups));
  return [...new Set(operatorGroups ?? [])].filter((g) => named.has(g)).sort();
}

/** Count the approvals in `votes` (in decision order) against `requirements`. */
export function tallyApprovals(
  requirements: readonly ApprovalRequirement[],
  votes: readonly ApprovalVote[],
): ApprovalTally {
  const approvals = votes.filter((v) => v.decision === 'approve');
  const approvers = [...new Set(approvals.map((v) => v.by))];
  const counted = requirements.map((r) => ({
    ...r,
    approvers: [
      ...new Set(approvals.filter((v) => v.groups.some((g) => r.groups.includes(g))).map((v) => v.by)),
    ],
  }));
  return {
    met: counted.length > 0 && counted.every((r) => r.approvers.length >= r.count),
    requirements: counted,
    approvers,
  };
}
