// What a job may learn of a decision (`policy.disclose`). Any token of a configured issuer can
// ask for a session or call /v1/whoami, so what those answers say about a denial is readable
// by anyone who can mint such a token (a fork's pipeline, any project of gitlab.com).
//
//   minimal    denied by policy; no rule, condition or value
//   condition  the failing condition's claim and the token's own value; no expected values,
//              no rule names (they describe the policy: "ledger-main-to-prod-db")
//   full       the decision as `ciport policy explain` shows it
//
// Allowed decisions are shown whole at every level: the job matched those rules. The operator
// keeps full detail in logs, audit events and `policy explain`, which never pass through here.
import { DISCLOSE_LEVELS } from '../config/schema.js';
import type { Decision, Failure } from './engine.js';
import { MISSING } from './explain.js';

export { DISCLOSE_LEVELS };
export type DiscloseLevel = (typeof DISCLOSE_LEVELS)[number];

/**
 * Claims whose expected value is generic (the safe defaults on forks and untrusted events):
 * "expected false" on `fork` describes ciport, not this deployment's policy.
 */
const GENERIC_CLAIMS = new Set(['fork', 'trusted_event']);

/** A failure as a job may see it at `condition` level. */
export interface DisclosedFailure {
  claim: string;
  actual: string;
  message: string;
}

function conditionOnly(f: Failure): DisclosedFailure {
  if (GENERIC_CLAIMS.has(f.claim)) return { claim: f.claim, actual: f.actual, message: f.message };
  const message =
    f.actual === MISSING
      ? `${f.claim}: claim missing`
      : `${f.claim}: not satisfied by this token's value ${f.actual}`;
  return { claim: f.claim, actual: f.actual, message };
}

const quoted = (names: readonly string[]) => names.map((n) => JSON.stringify(n)).join(', ');

/** The reason text a job may read. */
export function disclosedReason(decision: Decision, level: DiscloseLevel): string {
  if (level === 'full' || decision.decision === 'allow') return decision.reason;
  if (level === 'minimal') return 'denied by policy';
  if (decision.holding) {
    // A deny rule fired; the values it matched are the token's own.
    const values = decision.holding.map((h) => `${h.claim} = ${h.actual}`).join(', ');
    return values ? `denied by a deny rule (${values})` : 'denied by a deny rule';
  }
  const targets = decision.deniedTargets;
  const subject =
    targets && targets.length > 0
      ? `no rule allows target${targets.length === 1 ? '' : 's'} ${quoted(targets)} for this token`
      : decision.nearest
        ? 'no rule allows this token'
        : decision.reason; // no rules for the issuer, or no targets: nothing of the rules' values in it
  return decision.nearest
    ? `${subject}; condition not met: ${conditionOnly(decision.nearest).message}`
    : subject;
}

/** The decision as the session API and /v1/whoami return it, at `level`. */
export function disclosedDecision(decision: Decision, level: DiscloseLevel): Record<string, unknown> {
  const deny = decision.decision === 'deny';
  const hideRule = deny && level !== 'full';
  return {
    decision: decision.decision,
    rule: hideRule ? null : decision.rule,
    rules: hideRule ? [] : decision.rules,
    targets: decision.targets.map((t) => ({ name: t.target, rule: t.rule, ttl_ms: t.ttlMs })),
    ttl_ms: decision.ttlMs,
    reason: disclosedReason(decision, level),
    failures: level === 'full' ? decision.failures : [],
    nearest:
      level === 'full'
        ? decision.nearest
        : level === 'condition' && decision.nearest
          ? conditionOnly(decision.nearest)
          : null,
  };
}
