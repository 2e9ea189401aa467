// The words of a decision: one-line reasons, failure messages, and a multi-line rendering for
// `ciport policy explain`. Only rule names, target names, matcher descriptions and the values of
// claims that rules name ever appear here; claims are not secret, tokens and credentials are
// never passed in.
import { formatDuration } from '../config/duration.js';
import type { ApprovalRule } from './approval.js';
import type { Decision, Failure, Policy } from './engine.js';

const MAX_VALUE_TEXT = 120;
/** `actual` of a failure whose claim is absent from the token. Not valid JSON, so unambiguous. */
export const MISSING = '(missing)';

/** A claim value as JSON text, shortened for one-line messages; `(missing)` when absent. */
export function formatValue(value: unknown): string {
  if (value === undefined) return MISSING;
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > MAX_VALUE_TEXT ? `${text.slice(0, MAX_VALUE_TEXT - 1)}…` : text;
}

/** `ref_protected: expected true, got "false"` / `environment: expected glob "staging/*", claim missing` */
export function failureMessage(claim: string, expected: string, actual: string): string {
  return actual === MISSING
    ? `${claim}: expected ${expected}, claim missing`
    : `${claim}: expected ${expected}, got ${actual}`;
}

const quoted = (names: readonly string[]) => names.map((n) => JSON.stringify(n)).join(', ');
const plural = (names: readonly string[], word: string) => `${word}${names.length === 1 ? '' : 's'}`;

export function deniedByRuleReason(
  rule: string,
  holding: readonly { claim: string; actual: string }[],
): string {
  const why =
    holding.length === 0 ? 'unconditional' : holding.map((h) => `${h.claim} = ${h.actual}`).join(', ');
  return `denied by rule ${JSON.stringify(rule)} (${why})`;
}

export function noRulesReason(issuer: string, known: boolean): string {
  return known
    ? `no rule allows tokens from issuer ${JSON.stringify(issuer)}`
    : `no rule allows tokens from issuer ${JSON.stringify(issuer)} (not a configured issuer)`;
}

export function noMatchReason(nearest: Failure | null): string {
  return nearest
    ? `no rule allows this token; nearest rule ${JSON.stringify(nearest.rule)}: ${nearest.message}`
    : 'no rule allows this token';
}

export function targetsReason(issuer: string, targets: readonly string[], nearest: Failure | null): string {
  const what = `${plural(targets, 'target')} ${quoted(targets)}`;
  return nearest
    ? `no rule allows ${what} for this token; nearest rule ${JSON.stringify(nearest.rule)}: ${nearest.message}`
    : `no rule for issuer ${JSON.stringify(issuer)} allows ${what}`;
}

export function allowReason(rules: readonly string[], granted: Decision['targets']): string {
  const what = granted.map((g) => `${g.target} for ${formatDuration(g.ttlMs)}`).join(', ');
  return `allowed by ${plural(rules, 'rule')} ${quoted(rules)}: ${what}`;
}

/**
 * The decision with each granted target's approval terms (docs/approvals.md), so that an explain
 * says a session would wait for approvers rather than open at once.
 */
export function withApprovals(decision: Decision, policy: Pick<Policy, 'rule'>): Decision {
  return {
    ...decision,
    targets: decision.targets.map((g) => {
      const approval = policy.rule(g.rule)?.approval;
      return approval ? { ...g, approval } : g;
    }),
  };
}

/** `needs approval: 1 of dba within 15m` */
function approvalText(a: ApprovalRule): string {
  return `needs approval: ${a.count} of ${a.groups.join(', ')} within ${formatDuration(a.timeout)}`;
}

/** Human rendering of a decision, for `ciport policy explain` without `--json`. */
export function formatDecision(decision: Decision): string {
  const lines = [`${decision.decision}: ${decision.reason}`];
  for (const g of decision.targets) {
    const approval = g.approval ? `  ${approvalText(g.approval)}` : '';
    lines.push(`  ${g.target}  rule ${JSON.stringify(g.rule)}  ttl ${formatDuration(g.ttlMs)}${approval}`);
  }
  if (decision.failures.length > 0) {
    lines.push('rules that did not match (first failing condition):');
    for (const f of decision.failures) {
      const mark = f.rule === decision.nearest?.rule ? '  (nearest)' : '';
      lines.push(`  ${JSON.stringify(f.rule)}: ${f.message}${mark}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
