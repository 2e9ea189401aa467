import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { MatcherInput, Scalar } from '../../src/config/schema.js';
import { compileMatcher } from '../../src/policy/index.js';

const glob = (pattern: string, ignoreCase = false) =>
  compileMatcher({ glob: pattern, ignore_case: ignoreCase });

/** Any text, including astral code points and the separators. */
const text = fc.string({
  unit: fc.oneof(
    fc.constantFrom('/', ':', '*', '?', '.', '\\'),
    fc.string({ unit: 'grapheme', maxLength: 1 }),
    fc.constant('😀'),
  ),
  maxLength: 20,
});
/** Text with no wildcard characters: a glob of it is a literal. */
const literal = text.map((s) => s.replace(/[*?]/g, '')).filter((s) => s !== '');
/** Globs must be non-empty (the schema says so). */
const pattern = text.filter((s) => s !== '');
const withSeparator = fc.tuple(text, fc.constantFrom('/', ':'), text).map(([a, sep, b]) => `${a}${sep}${b}`);

/** Reference glob semantics, by recursion over code points. */
function reference(pattern: string[], value: string[]): boolean {
  if (pattern.length === 0) return value.length === 0;
  const [p, ...rest] = pattern;
  if (p === '*' && rest[0] === '*') {
    let i = 0;
    while (rest[i] === '*') i++;
    const after = rest.slice(i);
    for (let k = 0; k <= value.length; k++) if (reference(after, value.slice(k))) return true;
    return false;
  }
  if (p === '*') {
    for (let k = 0; k <= value.length; k++) {
      if (k > 0 && (value[k - 1] === '/' || value[k - 1] === ':')) break;
      if (reference(rest, value.slice(k))) return true;
    }
    return false;
  }
  const [v, ...tail] = value;
  if (v === undefined) return false;
  if (p === '?') return v !== '/' && v !== ':' && reference(rest, tail);
  return p === v && reference(rest, tail);
}

describe('glob properties', () => {
  it('a literal glob matches exactly its own text', () => {
    fc.assert(
      fc.property(literal, text, text, (s, prefix, suffix) => {
        const m = glob(s);
        expect(m.test(s)).toBe(true);
        if (prefix !== '' || suffix !== '') expect(m.test(`${prefix}${s}${suffix}`)).toBe(false);
      }),
      { numRuns: 500 },
    );
  });

  it('* never matches text containing / or :', () => {
    fc.assert(
      fc.property(withSeparator, (s) => {
        expect(glob('*').test(s)).toBe(false);
      }),
    );
    fc.assert(
      fc.property(
        fc.option(
          literal.filter((s) => !/[/:]/.test(s)),
          { nil: '' },
        ),
        withSeparator,
        (lit, rest) => {
          expect(glob(`${lit}*`).test(`${lit}${rest}`)).toBe(false);
          expect(glob(`*${lit}`).test(`${rest}${lit}`)).toBe(false);
        },
      ),
    );
  });

  it('* matches any text without / or :', () => {
    fc.assert(
      fc.property(
        text.filter((s) => !/[/:]/.test(s)),
        (s) => {
          expect(glob('*').test(s)).toBe(true);
        },
      ),
    );
  });

  it('** matches anything, in any position', () => {
    fc.assert(
      fc.property(text, fc.option(literal, { nil: '' }), fc.option(literal, { nil: '' }), (s, p, q) => {
        expect(glob('**').test(s)).toBe(true);
        expect(glob(`${p}**${q}`).test(`${p}${s}${q}`)).toBe(true);
      }),
    );
  });

  it('agrees with a reference implementation', () => {
    fc.assert(
      fc.property(pattern, text, (p, value) => {
        expect(glob(p).test(value)).toBe(reference(Array.from(p), Array.from(value)));
      }),
      { numRuns: 1000 },
    );
  });
});

const scalar: fc.Arbitrary<Scalar> = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.constantFrom('true', 'false', 'main', '123', '', 'a/b'),
  fc.integer({ min: -1000, max: 1000 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
);
const leafMatcher: fc.Arbitrary<MatcherInput> = fc.oneof(
  scalar,
  scalar.map((value) => ({ exact: value })),
  fc.record({ exact: scalar, ignore_case: fc.boolean() }),
  fc.array(scalar, { minLength: 1, maxLength: 4 }),
  fc.record({ one_of: fc.array(scalar, { minLength: 1, maxLength: 4 }), ignore_case: fc.boolean() }),
  fc.record({ glob: pattern, ignore_case: fc.boolean() }),
);
const claim = fc.oneof(scalar, fc.constant(undefined), fc.constant(null), fc.array(scalar, { maxLength: 3 }));

describe('not properties', () => {
  it('not(M)(x) === !M(x)', () => {
    fc.assert(
      fc.property(leafMatcher, claim, (input, value) => {
        const m = compileMatcher(input);
        const n = compileMatcher({ not: input });
        expect(n.test(value)).toBe(!m.test(value));
        expect(compileMatcher({ not: { not: input } }).test(value)).toBe(m.test(value));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('typed equality properties', () => {
  it('numbers and their decimal text are interchangeable, both ways', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true })), (n) => {
        expect(compileMatcher(n).test(String(n))).toBe(true);
        expect(compileMatcher(String(n)).test(n)).toBe(true);
        expect(compileMatcher(n).test(`0${String(n)}`)).toBe(false);
      }),
    );
  });

  it('booleans and "true"/"false" are interchangeable, and never equal each other', () => {
    fc.assert(
      fc.property(fc.boolean(), (b) => {
        expect(compileMatcher(b).test(String(b))).toBe(true);
        expect(compileMatcher(String(b)).test(b)).toBe(true);
        expect(compileMatcher(b).test(!b)).toBe(false);
        expect(compileMatcher(b).test(String(!b))).toBe(false);
      }),
    );
  });

  it('ignore_case equates ASCII case variants and nothing else', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 12 }), fc.string({ maxLength: 12 }), (a, b) => {
        const m = compileMatcher({ exact: a, ignore_case: true });
        expect(m.test(a.toUpperCase())).toBe(true);
        expect(m.test(a.toLowerCase())).toBe(true);
        expect(m.test(b)).toBe(a.toLowerCase() === b.toLowerCase());
      }),
    );
  });
});
