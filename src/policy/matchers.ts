// Claim matchers: a `when:` value of a rule, compiled once into a predicate over one claim.
//
// Typed equality. CI platforms disagree on claim types: GitLab sends booleans and ids as strings
// (`"true"`, `"61577203"`) and `runner_id` as a number; GitHub sends `run_id` as a string and
// some ids as numbers. Scalars are therefore compared by their *canonical text*:
//   string  -> itself
//   boolean -> "true" / "false"
//   number  -> its shortest JavaScript decimal form (`String(n)`); NaN and ±Infinity have none
// so config `true` matches claim `true` and `"true"`, config `"61577203"` matches `61577203`
// and `"61577203"`, config `123` matches `"123"`. Strings are never parsed for equality:
// `"0123"`, `"123.0"` and `" 123"` do not equal `123`, and `"TRUE"` equals `true` only with
// `ignore_case`. Objects, `null` and missing claims have no canonical text and match no scalar.
//
// Array-valued claims (`groups`, `aud`): a leaf matcher (exact, one_of, glob, regex,
// comparison) holds if ANY element matches. Combinators (`not`, `all`, `any`) and `present`
// apply to the claim as a whole, so `not(M)(x) === !M(x)` always, `{not: "admin"}` means "no
// element is admin", and `{all: [A, B]}` means "some element matches A and some matches B".
//
// Missing claims (and `null`): every leaf matcher fails, `{present: false}` holds, and so does
// `not` of anything that fails.

import type { MatcherInput, Scalar } from '../config/schema.js';
import { ConfigError } from '../errors/index.js';
import { globToRegExp } from './glob.js';

/** A matcher after shape validation: what lint inspects and `compileMatcher` compiles. */
export type MatcherNode =
  | { kind: 'exact'; value: Scalar; ignoreCase: boolean }
  | { kind: 'one_of'; values: Scalar[]; ignoreCase: boolean }
  | { kind: 'glob'; pattern: string; ignoreCase: boolean }
  | { kind: 'regex'; source: string; ignoreCase: boolean }
  | { kind: 'present'; present: boolean }
  | { kind: 'not'; matcher: MatcherNode }
  | { kind: 'all'; matchers: MatcherNode[] }
  | { kind: 'any'; matchers: MatcherNode[] }
  | { kind: 'compare'; gt?: number; gte?: number; lt?: number; lte?: number };

export interface Matcher {
  readonly node: MatcherNode;
  /** Does the claim value (string, number, boolean, array, object or undefined) satisfy it? */
  test(value: unknown): boolean;
  /** Short human text for explanations: `one of [main, release]`, `glob "staging/*"`. */
  describe(): string;
}

/** Canonical text of a scalar claim or config value; undefined for anything else. */
export function canonical(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return undefined;
}

/** A claim string that "is a number" for comparisons: decimal, optional sign/fraction/exponent. */
const NUMERIC = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

/** The numeric value of a claim for `gt`/`gte`/`lt`/`lte`; undefined when it is not a number. */
export function numeric(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value === 'string' && NUMERIC.test(value)) {
    const n = Number(value);
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

function invalid(path: string, message: string): ConfigError {
  return new ConfigError('CIPORT_E_CONFIG_INVALID', `${path}: ${message}`, { details: { path } });
}

const isScalar = (v: unknown): v is Scalar =>
  typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));

const COMPARE_KEYS = ['gt', 'gte', 'lt', 'lte'] as const;

/** Validate the shape of a matcher (the zod schema already did, for loaded configs). */
export function parseMatcher(input: MatcherInput | unknown, path = 'matcher'): MatcherNode {
  if (isScalar(input)) return { kind: 'exact', value: input, ignoreCase: false };
  if (Array.isArray(input)) return { kind: 'one_of', values: scalars(input, path), ignoreCase: false };
  if (typeof input !== 'object' || input === null) throw invalid(path, 'not a valid matcher');
  const o = input as Record<string, unknown>;
  const keys = Object.keys(o);
  const only = (...allowed: string[]) => {
    const extra = keys.filter((k) => !allowed.includes(k));
    if (extra.length > 0) throw invalid(path, `unexpected key(s) ${extra.join(', ')} in matcher`);
  };
  const ignoreCase = (): boolean => {
    if (o.ignore_case === undefined) return false;
    if (typeof o.ignore_case !== 'boolean') throw invalid(`${path}.ignore_case`, 'must be true or false');
    return o.ignore_case;
  };
  if ('exact' in o) {
    only('exact', 'ignore_case');
    if (!isScalar(o.exact)) throw invalid(`${path}.exact`, 'must be a string, number or boolean');
    return { kind: 'exact', value: o.exact, ignoreCase: ignoreCase() };
  }
  if ('one_of' in o) {
    only('one_of', 'ignore_case');
    return { kind: 'one_of', values: scalars(o.one_of, `${path}.one_of`), ignoreCase: ignoreCase() };
  }
  if ('glob' in o || 'regex' in o) {
    const kind = 'glob' in o ? 'glob' : 'regex';
    only(kind, 'ignore_case');
    const text = o[kind];
    if (typeof text !== 'string' || text === '')
      throw invalid(`${path}.${kind}`, 'must be a non-empty string');
    return kind === 'glob'
      ? { kind, pattern: text, ignoreCase: ignoreCase() }
      : { kind, source: text, ignoreCase: ignoreCase() };
  }
  if ('present' in o) {
    only('present');
    if (typeof o.present !== 'boolean') throw invalid(`${path}.present`, 'must be true or false');
    return { kind: 'present', present: o.present };
  }
  if ('not' in o) {
    only('not');
    return { kind: 'not', matcher: parseMatcher(o.not, `${path}.not`) };
  }
  if ('all' in o || 'any' in o) {
    const kind = 'all' in o ? 'all' : 'any';
    only(kind);
    const list = o[kind];
    if (!Array.isArray(list) || list.length === 0)
      throw invalid(`${path}.${kind}`, 'must be a non-empty list');
    return { kind, matchers: list.map((m, i) => parseMatcher(m, `${path}.${kind}[${i}]`)) };
  }
  if (keys.length > 0 && keys.every((k) => (COMPARE_KEYS as readonly string[]).includes(k))) {
    const node: MatcherNode = { kind: 'compare' };
    for (const k of COMPARE_KEYS) {
      const v = o[k];
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(`${path}.${k}`, 'must be a number');
      node[k] = v;
    }
    if (COMPARE_KEYS.every((k) => node[k] === undefined)) {
      throw invalid(path, 'a comparison needs gt, gte, lt or lte');
    }
    return node;
  }
  throw invalid(path, `unknown matcher {${keys.join(', ')}}`);
}

function scalars(list: unknown, path: string): Scalar[] {
  if (!Array.isArray(list) || list.length === 0) throw invalid(path, 'must be a non-empty list');
  return list.map((v, i) => {
    if (!isScalar(v)) throw invalid(`${path}[${i}]`, 'must be a string, number or boolean');
    return v;
  });
}

/** Compile a matcher. Throws ConfigError (CIPORT_E_CONFIG_INVALID) naming `path` when invalid. */
export function compileMatcher(input: MatcherInput | MatcherNode | unknown, path = 'matcher'): Matcher {
  return compileNode(isNode(input) ? input : parseMatcher(input, path), path);
}

function isNode(input: unknown): input is MatcherNode {
  return typeof input === 'object' && input !== null && !Array.isArray(input) && 'kind' in input;
}

function compileNode(node: MatcherNode, path: string): Matcher {
  const make = (test: (v: unknown) => boolean, text: string): Matcher => ({
    node,
    test,
    describe: () => text,
  });
  // Leaf predicates see one scalar; arrays hold when any element does.
  const leaf = (one: (v: unknown) => boolean, text: string): Matcher =>
    make((v) => (Array.isArray(v) ? v.some(one) : one(v)), text);
  const fold = (ic: boolean) => (s: string) => (ic ? s.toLowerCase() : s);
  const ic = (ignore: boolean) => (ignore ? ' (ignore case)' : '');

  switch (node.kind) {
    case 'exact': {
      const f = fold(node.ignoreCase);
      const want = f(canonical(node.value) as string);
      return leaf(
        (v) => {
          const c = canonical(v);
          return c !== undefined && f(c) === want;
        },
        `${JSON.stringify(node.value)}${ic(node.ignoreCase)}`,
      );
    }
    case 'one_of': {
      const f = fold(node.ignoreCase);
      const set = new Set(node.values.map((v) => f(canonical(v) as string)));
      return leaf(
        (v) => {
          const c = canonical(v);
          return c !== undefined && set.has(f(c));
        },
        `one of [${node.values.map(bare).join(', ')}]${ic(node.ignoreCase)}`,
      );
    }
    case 'glob': {
      const re = globToRegExp(node.pattern, node.ignoreCase);
      return leaf(
        (v) => {
          const c = canonical(v);
          return c !== undefined && re.test(c);
        },
        `glob ${JSON.stringify(node.pattern)}${ic(node.ignoreCase)}`,
      );
    }
    case 'regex': {
      const re = compileRegex(node.source, node.ignoreCase, `${path}.regex`);
      return leaf(
        (v) => {
          const c = canonical(v);
          return c !== undefined && re.test(c);
        },
        `regex ${JSON.stringify(node.source)}${ic(node.ignoreCase)}`,
      );
    }
    case 'present':
      return make(
        (v) => (v !== undefined && v !== null) === node.present,
        node.present ? 'present' : 'absent',
      );
    case 'not': {
      const inner = compileNode(node.matcher, `${path}.not`);
      return make((v) => !inner.test(v), `not ${paren(inner)}`);
    }
    case 'all':
    case 'any': {
      const parts = node.matchers.map((m, i) => compileNode(m, `${path}.${node.kind}[${i}]`));
      const text = `${node.kind} of (${parts.map((p) => p.describe()).join('; ')})`;
      return node.kind === 'all'
        ? make((v) => parts.every((p) => p.test(v)), text)
        : make((v) => parts.some((p) => p.test(v)), text);
    }
    case 'compare': {
      const { gt, gte, lt, lte } = node;
      const text = [
        gt !== undefined ? `> ${gt}` : '',
        gte !== undefined ? `>= ${gte}` : '',
        lt !== undefined ? `< ${lt}` : '',
        lte !== undefined ? `<= ${lte}` : '',
      ]
        .filter(Boolean)
        .join(' and ');
      return leaf((v) => {
        const n = numeric(v);
        return (
          n !== undefined &&
          (gt === undefined || n > gt) &&
          (gte === undefined || n >= gte) &&
          (lt === undefined || n < lt) &&
          (lte === undefined || n <= lte)
        );
      }, text);
    }
  }
}

/**
 * `^(?:R)$` in Unicode mode. R is first compiled on its own: a pattern that only compiles once
 * wrapped (`a)|(b`) would escape the anchors, and one that does not compile is a config error.
 */
function compileRegex(source: string, ignoreCase: boolean, path: string): RegExp {
  const flags = ignoreCase ? 'iu' : 'u';
  try {
    new RegExp(source, flags);
    return new RegExp(`^(?:${source})$`, flags);
  } catch (err) {
    // V8: "Invalid regular expression: /(a/u: Unterminated group" -> "Unterminated group"
    const why =
      err instanceof Error ? err.message.replace(/^Invalid regular expression: .*: /s, '') : String(err);
    throw invalid(path, `invalid regex ${JSON.stringify(source)}: ${why}`);
  }
}

/** List elements in `describe()`: bare when unambiguous, JSON otherwise. */
function bare(v: Scalar): string {
  const text = String(v);
  return typeof v === 'string' && (text === '' || /[\s,[\]"]/.test(text)) ? JSON.stringify(text) : text;
}

function paren(m: Matcher): string {
  const text = m.describe();
  return m.node.kind === 'exact' || m.node.kind === 'present' ? text : `(${text})`;
}
