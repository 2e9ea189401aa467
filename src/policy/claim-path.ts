// A `when:` key resolved against a token's facts. Syntax in src/config/claim-path.ts.
//
// Each segment steps into an object's own property. Through an array, the step is taken in
// every element and the results collected into one array (nested arrays flattened one level),
// so `groups.name` over `groups: [{name: a}, {name: b}]` is `[a, b]` and a leaf matcher holds
// if any element matches (src/policy/matchers.ts). A step into anything else, or one that
// finds nothing in any element, is a missing claim.
import { formatClaimPath, parseClaimPath } from '../config/claim-path.js';
import { ConfigError } from '../errors/index.js';

export interface ClaimPath {
  /** The key as the rule wrote it, for messages. */
  readonly text: string;
  readonly segments: readonly string[];
  /** Canonical form: `fork` and `"fork"` are the same claim. */
  readonly canonical: string;
}

/** Parse a `when:` key. Throws ConfigError (CIPORT_E_CONFIG_INVALID) naming `where`. */
export function compileClaimPath(text: string, where: string): ClaimPath {
  const parsed = parseClaimPath(text);
  if ('error' in parsed) {
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `${where}: ${parsed.error}`, {
      details: { path: where },
    });
  }
  return { text, segments: parsed.segments, canonical: formatClaimPath(parsed.segments) };
}

/** `rules[0].when.ref` or `rules[0].when["realm_access.roles"]`. */
export function whenKeyPath(rulePath: string, key: string): string {
  return /^[A-Za-z0-9_-]+$/.test(key)
    ? `${rulePath}.when.${key}`
    : `${rulePath}.when[${JSON.stringify(key)}]`;
}

function step(value: unknown, segment: string): unknown {
  if (Array.isArray(value)) {
    const found: unknown[] = [];
    for (const element of value) {
      const v = step(element, segment);
      if (v === undefined) continue;
      if (Array.isArray(v)) found.push(...v);
      else found.push(v);
    }
    return found.length > 0 ? found : undefined;
  }
  if (typeof value === 'object' && value !== null && Object.hasOwn(value, segment)) {
    return (value as Record<string, unknown>)[segment];
  }
  return undefined;
}

/** The value at `path` in `facts`, or undefined when any step finds nothing. */
export function resolveClaim(facts: Readonly<Record<string, unknown>>, path: ClaimPath): unknown {
  const [first, ...rest] = path.segments;
  let value: unknown = Object.hasOwn(facts, first as string) ? facts[first as string] : undefined;
  for (const segment of rest) {
    if (value === undefined || value === null) return undefined;
    value = step(value, segment);
  }
  return value;
}
