// The policy engine: rules compiled once, then a pure, deterministic decision per request.
//
//   1. Deny rules of the token's issuer, in config order: the first whose `when` all hold denies.
//   2. Allowing rules of the issuer whose `when` all hold "match". Safe default: a token with
//      `fork: true` or `trusted_event: false` matches no allowing rule unless that rule names
//      `fork` / `trusted_event` in its `when:`.
//   3. Requested targets are all-or-nothing: each must be allowed by some matching rule. With no
//      request, the union of the matching rules' targets is granted.
//   4. TTL per target = min(requested ttl, or the default when none was requested; the largest
//      `max_ttl` among the matching rules that allow the target, where an absent max_ttl is no cap).
import type { MatcherInput } from '../config/schema.js';
import { UsageError } from '../errors/index.js';
import type { ApprovalRule } from './approval.js';
import { type ClaimPath, compileClaimPath, resolveClaim, whenKeyPath } from './claim-path.js';
import {
  allowReason,
  deniedByRuleReason,
  failureMessage,
  formatValue,
  noMatchReason,
  noRulesReason,
  targetsReason,
} from './explain.js';
import { canonical, compileMatcher, type Matcher } from './matchers.js';

/** A rule as the engine needs it; `RuleConfig` (the schema's output) satisfies it. */
export interface PolicyRuleInput {
  readonly name: string;
  readonly issuer: string;
  readonly deny?: boolean | undefined;
  readonly when?: Readonly<Record<string, MatcherInput>> | undefined;
  readonly allow?: readonly string[] | undefined;
  /** Milliseconds. */
  readonly max_ttl?: number | undefined;
  readonly limits?:
    | { readonly connections?: number | undefined; readonly bytes?: number | undefined }
    | undefined;
  /** Sessions this rule grants wait for approval (docs/approvals.md); timeout in ms. */
  readonly approval?: ApprovalRule | undefined;
}

/** The parts of a `GatewayConfig` the engine reads. */
export interface PolicyInput {
  readonly issuers?: readonly { readonly name: string }[] | undefined;
  readonly targets?: readonly { readonly name: string }[] | undefined;
  readonly rules: readonly PolicyRuleInput[];
}

export interface DecisionRequest {
  /** The verified token's issuer, by its configured name. */
  issuer: string;
  /** Raw claims plus the derived `fork` and `trusted_event` booleans. */
  facts: Readonly<Record<string, unknown>>;
  /** Requested targets; empty or absent means everything the matching rules allow. */
  targets?: readonly string[] | undefined;
  /** Requested lifetime in ms, if any. */
  ttlMs?: number | undefined;
  /** `sessions.default_ttl` in ms, used when no ttl is requested. */
  defaultTtlMs: number;
}

export interface GrantedTarget {
  target: string;
  /** The rule that grants it: the one with the largest max_ttl (ties: config order). */
  rule: string;
  ttlMs: number;
  /** Set by `withApprovals` for explain output only: the granting rule's `approval:`. */
  approval?: ApprovalRule;
}

/** The first condition of a rule that a token fails. */
export interface Failure {
  rule: string;
  claim: string;
  /** The matcher's `describe()`. */
  expected: string;
  /** The claim's value as JSON text (shortened), or `(missing)`. */
  actual: string;
  /** `ref_protected: expected true, got "false"` */
  message: string;
}

export interface Decision {
  decision: 'allow' | 'deny';
  /** allow: the first rule in `rules`; deny: the deny rule that fired, else null. */
  rule: string | null;
  /** allow: the matching allowing rules that grant at least one granted target (config order). */
  rules: string[];
  targets: GrantedTarget[];
  /** The smallest TTL across granted targets; null on deny. */
  ttlMs: number | null;
  reason: string;
  /** For a denial by no match: each candidate allowing rule's first failing condition. */
  failures: Failure[];
  /** The failure of the candidate rule with the most conditions satisfied (ties: config order). */
  nearest: Failure | null;
  /** Denied by a deny rule: the claims it names, with this token's values. */
  holding?: { claim: string; actual: string }[];
  /** Denied because no matching rule allows these requested targets. */
  deniedTargets?: string[];
}

/** What a compiled rule exposes to callers (sessions read limits from here). */
export interface RuleSummary {
  readonly name: string;
  readonly issuer: string;
  readonly deny: boolean;
  readonly allow: readonly string[];
  readonly maxTtlMs: number | null;
  readonly limits: PolicyRuleInput['limits'] | null;
  readonly approval: ApprovalRule | null;
}

export interface Policy {
  decide(request: DecisionRequest): Decision;
  /** The rule of that name, or undefined. */
  rule(name: string): RuleSummary | undefined;
}

interface Condition {
  /** The `when:` key as written (a claim name or a path such as `realm_access.roles`). */
  readonly claim: string;
  readonly path: ClaimPath;
  readonly matcher: Matcher;
}

interface CompiledRule extends RuleSummary {
  readonly conditions: readonly Condition[];
  readonly namesFork: boolean;
  readonly namesTrustedEvent: boolean;
}

interface Evaluation {
  readonly rule: CompiledRule;
  readonly satisfied: number;
  readonly failed: boolean;
  /** Built on first read: most decisions are allows that never show other rules' failures. */
  readonly failure: Failure | null;
}

/** Compile every rule's matchers once. Throws ConfigError naming `rules[i].when.<claim>`. */
export function compilePolicy(config: PolicyInput): Policy {
  const rules: CompiledRule[] = config.rules.map((r, i) => {
    const when = r.when ?? {};
    const conditions = Object.entries(when).map(([claim, input]) => {
      const where = whenKeyPath(`rules[${i}]`, claim);
      return { claim, path: compileClaimPath(claim, where), matcher: compileMatcher(input, where) };
    });
    const names = (claim: string) => conditions.some((c) => c.path.canonical === claim);
    return {
      name: r.name,
      issuer: r.issuer,
      deny: r.deny ?? false,
      allow: [...(r.allow ?? [])],
      maxTtlMs: r.max_ttl ?? null,
      limits: r.limits ?? null,
      approval: r.approval
        ? { groups: [...r.approval.groups], count: r.approval.count, timeout: r.approval.timeout }
        : null,
      conditions,
      namesFork: names('fork'),
      namesTrustedEvent: names('trusted_event'),
    };
  });
  const byName = new Map(rules.map((r) => [r.name, r]));
  const knownIssuers = config.issuers ? new Set(config.issuers.map((i) => i.name)) : undefined;

  return {
    rule: (name) => {
      const r = byName.get(name);
      return (
        r && {
          name: r.name,
          issuer: r.issuer,
          deny: r.deny,
          allow: r.allow,
          maxTtlMs: r.maxTtlMs,
          limits: r.limits,
          approval: r.approval,
        }
      );
    },
    decide: (request) => decide(rules, knownIssuers, request),
  };
}

function claimOf(facts: Readonly<Record<string, unknown>>, claim: string): unknown {
  return Object.hasOwn(facts, claim) ? facts[claim] : undefined;
}

function failure(rule: string, claim: string, expected: string, value: unknown): Failure {
  const actual = formatValue(value);
  return { rule, claim, expected, actual, message: failureMessage(claim, expected, actual) };
}

function evaluate(rule: CompiledRule, facts: Readonly<Record<string, unknown>>): Evaluation {
  let first: (() => Failure) | null = null;
  if (!rule.deny) {
    // Safe default, checked first: it is the most useful thing to tell a fork's pipeline.
    const fork = claimOf(facts, 'fork');
    const trusted = claimOf(facts, 'trusted_event');
    if (!rule.namesFork && canonical(fork) === 'true') {
      first = () => failure(rule.name, 'fork', 'false (safe default: the rule does not name "fork")', fork);
    } else if (!rule.namesTrustedEvent && canonical(trusted) === 'false') {
      first = () =>
        failure(
          rule.name,
          'trusted_event',
          'true (safe default: the rule does not name "trusted_event")',
          trusted,
        );
    }
  }
  let satisfied = 0;
  for (const { claim, path, matcher } of rule.conditions) {
    const value = resolveClaim(facts, path);
    if (matcher.test(value)) satisfied++;
    else first ??= () => failure(rule.name, claim, matcher.describe(), value);
  }
  const build = first;
  let built: Failure | null | undefined;
  return {
    rule,
    satisfied,
    failed: build !== null,
    get failure() {
      if (built === undefined) built = build ? build() : null;
      return built;
    },
  };
}

/**
 * Whether a rule matches, stopping at the first failing condition and allocating nothing: the
 * hot path. `evaluate` does the full, explaining pass only when a denial needs it.
 */
function matches(rule: CompiledRule, facts: Readonly<Record<string, unknown>>): boolean {
  if (!rule.deny) {
    if (!rule.namesFork && canonical(claimOf(facts, 'fork')) === 'true') return false;
    if (!rule.namesTrustedEvent && canonical(claimOf(facts, 'trusted_event')) === 'false') return false;
  }
  for (const { path, matcher } of rule.conditions) if (!matcher.test(resolveClaim(facts, path))) return false;
  return true;
}

/** The failure of the evaluation with the most satisfied conditions; ties go to config order. */
function nearestOf(evaluations: readonly Evaluation[]): Failure | null {
  let best: Evaluation | undefined;
  for (const e of evaluations) if (e.failed && (!best || e.satisfied > best.satisfied)) best = e;
  return best?.failure ?? null;
}

function checkTtl(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
    throw new UsageError(`${name} must be a positive number of milliseconds`);
  }
}

function deny(
  reason: string,
  rule: string | null,
  failures: Failure[] = [],
  nearest: Failure | null = null,
  extra: Pick<Decision, 'holding' | 'deniedTargets'> = {},
): Decision {
  return {
    decision: 'deny',
    rule,
    rules: rule ? [rule] : [],
    targets: [],
    ttlMs: null,
    reason,
    failures,
    nearest,
    ...extra,
  };
}

function decide(
  all: readonly CompiledRule[],
  knownIssuers: ReadonlySet<string> | undefined,
  request: DecisionRequest,
): Decision {
  checkTtl('defaultTtlMs', request.defaultTtlMs);
  checkTtl('ttlMs', request.ttlMs);
  const { issuer, facts } = request;
  const rules = all.filter((r) => r.issuer === issuer);

  for (const r of rules) {
    if (!r.deny) continue;
    if (matches(r, facts)) {
      const holding = r.conditions.map((c) => ({
        claim: c.claim,
        actual: formatValue(resolveClaim(facts, c.path)),
      }));
      return deny(deniedByRuleReason(r.name, holding), r.name, [], null, { holding });
    }
  }

  const allowing = rules.filter((r) => !r.deny);
  if (allowing.length === 0) return deny(noRulesReason(issuer, knownIssuers?.has(issuer) ?? true), null);

  const matching = allowing.filter((r) => matches(r, facts));
  // Explanations are for denials only; an allow never pays for them.
  let explained: Evaluation[] | undefined;
  const explain = (): Evaluation[] => {
    explained ??= allowing.map((r) => evaluate(r, facts));
    return explained;
  };
  const requested = [...new Set(request.targets ?? [])];
  const failures = (es: readonly Evaluation[]) => es.flatMap((e) => (e.failure ? [e.failure] : []));
  const allowsAny = (r: CompiledRule, targets: readonly string[]) => targets.some((t) => r.allow.includes(t));

  if (matching.length === 0) {
    const relevant = requested.length > 0 ? explain().filter((e) => allowsAny(e.rule, requested)) : explain();
    if (relevant.length === 0) {
      return deny(targetsReason(issuer, requested, null), null, failures(explain()), null, {
        deniedTargets: requested,
      });
    }
    const nearest = nearestOf(relevant);
    return deny(noMatchReason(nearest), null, failures(explain()), nearest);
  }

  const wanted = requested.length > 0 ? requested : [...new Set(matching.flatMap((r) => r.allow))];
  if (wanted.length === 0) return deny('the matching rules allow no targets', null);
  const missing = wanted.filter((t) => !matching.some((r) => r.allow.includes(t)));
  if (missing.length > 0) {
    const candidates = explain().filter((e) => e.failed && allowsAny(e.rule, missing));
    const nearest = nearestOf(candidates);
    return deny(targetsReason(issuer, missing, nearest), null, failures(candidates), nearest, {
      deniedTargets: missing,
    });
  }

  const base = request.ttlMs ?? request.defaultTtlMs;
  const granted: GrantedTarget[] = wanted.map((target) => {
    let best: CompiledRule | undefined;
    for (const r of matching) {
      if (!r.allow.includes(target)) continue;
      if (!best || cap(r) > cap(best)) best = r;
    }
    const by = best as CompiledRule;
    return { target, rule: by.name, ttlMs: Math.min(base, cap(by)) };
  });
  const contributing = matching
    .filter((r) => granted.some((g) => r.allow.includes(g.target)))
    .map((r) => r.name);
  return {
    decision: 'allow',
    rule: contributing[0] ?? null,
    rules: contributing,
    targets: granted,
    ttlMs: Math.min(...granted.map((g) => g.ttlMs)),
    reason: allowReason(contributing, granted),
    failures: [],
    nearest: null,
  };
}

const cap = (r: CompiledRule): number => r.maxTtlMs ?? Number.POSITIVE_INFINITY;
