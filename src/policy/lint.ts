// `ciport policy lint`: rules that are valid but risky. Pure: it reads the config object only.
//
// Codes (stable):
//   invalid-matcher         error    a `when:` matcher does not compile (bad regex, bad shape)
//   invalid-claim-path      error    a `when:` key is not a valid claim path (src/config/claim-path.ts)
//   no-project-pin          warning  an allowing rule pins no project/repository or namespace/owner id
//   subgroup-glob           warning  a `**` glob on a path claim reaches every subgroup below it
//   unprotected-production  error    a production target is granted without requiring a protected
//                                    ref or environment (warning for generic `oidc` issuers)
//   long-leeway             warning  an issuer's clock leeway is over 120 s
//   long-token-lifetime     warning  an issuer's max_token_lifetime is over 7 days
//   long-ttl                warning  a rule's max_ttl or sessions.default_ttl is over 12 h
//   undefined-target        warning  a rule allows a target this config does not define
//   deny-all                warning  a deny rule with an empty `when` denies every token of its issuer
//   allows-fork             warning  an allowing rule accepts `fork: true`
//   allows-untrusted-event  warning  an allowing rule accepts `trusted_event: false`
//   approval-bypass         warning  a rule allows without `approval:` a target another rule of the
//                                    same issuer guards with it (docs/approvals.md, "Which rule asks")
import { formatDuration } from '../config/duration.js';
import { CiportError } from '../errors/index.js';
import { compileClaimPath, whenKeyPath } from './claim-path.js';
import type { PolicyRuleInput } from './engine.js';
import { globCrossesSeparators } from './glob.js';
import { canonical, compileMatcher, type MatcherNode, parseMatcher } from './matchers.js';

export interface Finding {
  level: 'error' | 'warning';
  code: string;
  rule?: string;
  /** Where in the config: `rules[1].when`, `issuers[0].leeway`. */
  path: string;
  message: string;
}

/** The parts of a `GatewayConfig` lint reads; the schema's output satisfies it. */
export interface LintInput {
  readonly issuers?: readonly {
    readonly name: string;
    readonly kind?: string;
    readonly leeway?: number;
    readonly max_token_lifetime?: number | undefined;
  }[];
  readonly targets?: readonly { readonly name: string; readonly tags?: readonly string[] }[];
  readonly rules?: readonly PolicyRuleInput[];
  readonly sessions?: { readonly default_ttl?: number } | undefined;
}

export const MAX_LEEWAY_MS = 120_000;
export const MAX_TTL_MS = 12 * 3_600_000;
/** Beyond a week a "job token" is a standing credential (GitLab's longest job timeout is a month). */
export const MAX_TOKEN_LIFETIME_MS = 7 * 24 * 3_600_000;

/** Claims that pin a project or its owner, per issuer kind. A pin is an exact value or one_of. */
export const PIN_CLAIMS: Readonly<Record<string, readonly string[]>> = {
  gitlab: ['project_id', 'namespace_id', 'job_project_id'],
  github: ['repository_id', 'repository_owner_id'],
  oidc: ['sub', 'azp', 'client_id', 'cid', 'appid'],
};

/** Claims holding paths (`group/sub/project`, `owner/repo`, `…/workflow.yml@ref`). */
export const PATH_CLAIMS: ReadonlySet<string> = new Set([
  'sub',
  'project_path',
  'namespace_path',
  'job_project_path',
  'job_namespace_path',
  'ci_config_ref_uri',
  'repository',
  'repository_owner',
  'job_workflow_ref',
  'workflow_ref',
]);

const PRODUCTION_TAGS = new Set(['production', 'prod']);

/** Exact value(s) only: `all` pins if any part does, `any` if every part does. */
function isPin(node: MatcherNode): boolean {
  switch (node.kind) {
    case 'exact':
    case 'one_of':
      return true;
    case 'all':
      return node.matchers.some(isPin);
    case 'any':
      return node.matchers.every(isPin);
    default:
      return false;
  }
}

/** Holds only for `true` / `"true"`. */
function requiresTrue(node: MatcherNode): boolean {
  const isTrue = (v: unknown) => canonical(v)?.toLowerCase() === 'true';
  switch (node.kind) {
    case 'exact':
      return isTrue(node.value);
    case 'one_of':
      return node.values.every(isTrue);
    case 'all':
      return node.matchers.some(requiresTrue);
    case 'any':
      return node.matchers.every(requiresTrue);
    default:
      return false;
  }
}

/** `**` globs that widen the match (those under `not` narrow it). */
function crossingGlobs(node: MatcherNode): string[] {
  if (node.kind === 'glob') return globCrossesSeparators(node.pattern) ? [node.pattern] : [];
  if (node.kind === 'all' || node.kind === 'any') return node.matchers.flatMap(crossingGlobs);
  return [];
}

export function lintPolicy(config: LintInput): Finding[] {
  const findings: Finding[] = [];
  const add = (level: Finding['level'], code: string, path: string, message: string, rule?: string) =>
    findings.push(rule === undefined ? { level, code, path, message } : { level, code, rule, path, message });

  const issuers = config.issuers ?? [];
  issuers.forEach((issuer, i) => {
    if (issuer.leeway !== undefined && issuer.leeway > MAX_LEEWAY_MS) {
      add(
        'warning',
        'long-leeway',
        `issuers[${i}].leeway`,
        `issuer "${issuer.name}" accepts tokens ${formatDuration(issuer.leeway)} past expiry (over ${formatDuration(MAX_LEEWAY_MS)})`,
      );
    }
    if (issuer.max_token_lifetime !== undefined && issuer.max_token_lifetime > MAX_TOKEN_LIFETIME_MS) {
      add(
        'warning',
        'long-token-lifetime',
        `issuers[${i}].max_token_lifetime`,
        `issuer "${issuer.name}" accepts tokens valid for up to ${formatDuration(issuer.max_token_lifetime)} (over ${formatDuration(MAX_TOKEN_LIFETIME_MS)})`,
      );
    }
  });
  const defaultTtl = config.sessions?.default_ttl;
  if (defaultTtl !== undefined && defaultTtl > MAX_TTL_MS) {
    add(
      'warning',
      'long-ttl',
      'sessions.default_ttl',
      `sessions last ${formatDuration(defaultTtl)} by default (over ${formatDuration(MAX_TTL_MS)})`,
    );
  }

  const kinds = new Map(issuers.map((i) => [i.name, i.kind]));
  const targets = new Map((config.targets ?? []).map((t) => [t.name, t.tags ?? []]));
  const isProduction = (name: string) =>
    /prod/i.test(name) || (targets.get(name) ?? []).some((t) => PRODUCTION_TAGS.has(t.toLowerCase()));

  (config.rules ?? []).forEach((rule, i) => {
    const at = `rules[${i}]`;
    const r = rule.name;
    const q = JSON.stringify(r);
    const kind = kinds.get(rule.issuer);
    const when = rule.when ?? {};
    // Keyed by canonical claim path: `fork` and `"fork"` are one claim.
    const nodes = new Map<string, MatcherNode>();
    const wherePath = new Map<string, string>();
    for (const [key, input] of Object.entries(when)) {
      const where = whenKeyPath(at, key);
      let claim: string;
      try {
        claim = compileClaimPath(key, where).canonical;
      } catch (err) {
        if (!(err instanceof CiportError)) throw err;
        add('error', 'invalid-claim-path', where, err.message, r);
        continue;
      }
      try {
        compileMatcher(input, where);
        nodes.set(claim, parseMatcher(input));
        wherePath.set(claim, where);
      } catch (err) {
        if (!(err instanceof CiportError)) throw err;
        add('error', 'invalid-matcher', String(err.details?.path ?? where), err.message, r);
      }
    }

    if (rule.deny) {
      if (Object.keys(when).length === 0) {
        add(
          'warning',
          'deny-all',
          `${at}.when`,
          `deny rule ${q} has no conditions: it denies every token of issuer "${rule.issuer}"`,
          r,
        );
      }
      return;
    }

    const pins = kind !== undefined && PIN_CLAIMS[kind] ? PIN_CLAIMS[kind] : Object.values(PIN_CLAIMS).flat();
    if (!pins.some((claim) => nodes.has(claim) && isPin(nodes.get(claim) as MatcherNode))) {
      add(
        'warning',
        'no-project-pin',
        `${at}.when`,
        `rule ${q} pins no project or owner id: add an exact value or one_of for ${pins.join(' or ')}`,
        r,
      );
    }
    for (const [claim, node] of nodes) {
      if (!PATH_CLAIMS.has(claim)) continue;
      for (const pattern of crossingGlobs(node)) {
        add(
          'warning',
          'subgroup-glob',
          wherePath.get(claim) as string,
          `rule ${q}: glob ${JSON.stringify(pattern)} on ${claim} crosses "/" and ":", reaching every subgroup and project below it`,
          r,
        );
      }
    }
    const fork = nodes.get('fork');
    if (fork && compileMatcher(fork).test(true)) {
      add(
        'warning',
        'allows-fork',
        wherePath.get('fork') as string,
        `rule ${q} allows tokens from forks (fork: true)`,
        r,
      );
    }
    const trusted = nodes.get('trusted_event');
    if (trusted && compileMatcher(trusted).test(false)) {
      add(
        'warning',
        'allows-untrusted-event',
        wherePath.get('trusted_event') as string,
        `rule ${q} allows tokens from untrusted events (trusted_event: false)`,
        r,
      );
    }

    const production = (rule.allow ?? []).filter(isProduction);
    const holds = (claim: string, test: (n: MatcherNode) => boolean) => {
      const node = nodes.get(claim);
      return node !== undefined && test(node);
    };
    const protectedRef =
      holds('ref_protected', requiresTrue) ||
      holds('environment_protected', requiresTrue) ||
      (kind === 'github' && holds('environment', isPin));
    if (production.length > 0 && !protectedRef) {
      const what = production.map((t) => JSON.stringify(t)).join(', ');
      const need =
        kind === 'github'
          ? 'ref_protected: true, environment_protected: true or a pinned environment'
          : 'ref_protected: true or environment_protected: true';
      add(
        kind === 'oidc' ? 'warning' : 'error',
        'unprotected-production',
        `${at}.when`,
        `rule ${q} grants production target${production.length === 1 ? '' : 's'} ${what} without requiring ${need}`,
        r,
      );
    }

    if (rule.max_ttl !== undefined && rule.max_ttl > MAX_TTL_MS) {
      add(
        'warning',
        'long-ttl',
        `${at}.max_ttl`,
        `rule ${q} allows sessions of ${formatDuration(rule.max_ttl)} (over ${formatDuration(MAX_TTL_MS)})`,
        r,
      );
    }
    (rule.allow ?? []).forEach((target, j) => {
      const guard = rule.approval
        ? undefined
        : (config.rules ?? []).find(
            (o) => o.issuer === rule.issuer && !o.deny && o.approval && (o.allow ?? []).includes(target),
          );
      if (guard) {
        add(
          'warning',
          'approval-bypass',
          `${at}.allow[${j}]`,
          `rule ${q} allows target "${target}" without approval, which rule "${guard.name}" guards with approval: a token matching both may be granted it without approval`,
          r,
        );
      }
      if (!targets.has(target)) {
        add(
          'warning',
          'undefined-target',
          `${at}.allow[${j}]`,
          `rule ${q} allows target "${target}", which is not defined here; an agent must serve it`,
          r,
        );
      }
    });
  });
  return findings;
}

/** One finding as a line: `error rules[1].when unprotected-production: …`. */
export function formatFinding(f: Finding): string {
  return `${f.level} ${f.path} ${f.code}: ${f.message}`;
}
