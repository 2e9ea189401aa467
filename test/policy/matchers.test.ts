import { describe, expect, it } from 'vitest';
import type { MatcherInput } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors/index.js';
import { canonical, compileMatcher, numeric, parseMatcher } from '../../src/policy/index.js';

const m = (input: MatcherInput) => compileMatcher(input, 'rules[0].when.claim');
const results = (input: MatcherInput, values: unknown[]) => values.map((v) => m(input).test(v));

describe('canonical text', () => {
  it('maps scalars to text and everything else to undefined', () => {
    expect(canonical('x')).toBe('x');
    expect(canonical(true)).toBe('true');
    expect(canonical(false)).toBe('false');
    expect(canonical(61577203)).toBe('61577203');
    expect(canonical(-0)).toBe('0');
    expect(canonical(1.5)).toBe('1.5');
    expect(canonical(Number.NaN)).toBeUndefined();
    expect(canonical(Number.POSITIVE_INFINITY)).toBeUndefined();
    expect(canonical(null)).toBeUndefined();
    expect(canonical(undefined)).toBeUndefined();
    expect(canonical({})).toBeUndefined();
    expect(canonical(['a'])).toBeUndefined();
  });

  it('reads numbers in claims strictly', () => {
    expect(numeric('42')).toBe(42);
    expect(numeric('-1.5')).toBe(-1.5);
    expect(numeric('1e3')).toBe(1000);
    expect(numeric(7)).toBe(7);
    expect(numeric('')).toBeUndefined();
    expect(numeric(' 42')).toBeUndefined();
    expect(numeric('0x10')).toBeUndefined();
    expect(numeric('Infinity')).toBeUndefined();
    expect(numeric(true)).toBeUndefined();
    expect(numeric(Number.NaN)).toBeUndefined();
  });
});

describe('exact (plain scalar and {exact})', () => {
  it('config true matches claim true and "true" only', () => {
    expect(
      results(true, [true, 'true', false, 'false', 'TRUE', 'True', 1, '1', 'yes', undefined, null]),
    ).toEqual([true, true, false, false, false, false, false, false, false, false, false]);
  });

  it('config false matches claim false and "false"', () => {
    expect(results(false, [false, 'false', true, 'true', 0, '', undefined])).toEqual([
      true,
      true,
      false,
      false,
      false,
      false,
      false,
    ]);
  });

  it('config "61577203" matches the id as number or string, nothing looser', () => {
    expect(
      results('61577203', [
        61577203,
        '61577203',
        '061577203',
        '61577203.0',
        ' 61577203',
        61577204,
        61577203.5,
      ]),
    ).toEqual([true, true, false, false, false, false, false]);
  });

  it('config 123 matches "123" and 123 only', () => {
    expect(results(123, ['123', 123, 123.0, '0123', '123.0', '1.23e2', 1230, true])).toEqual([
      true,
      true,
      true,
      false,
      false,
      false,
      false,
      false,
    ]);
  });

  it('strings are case-sensitive unless ignore_case', () => {
    expect(results('Main', ['Main', 'main', 'MAIN'])).toEqual([true, false, false]);
    expect(results({ exact: 'Main', ignore_case: true }, ['Main', 'main', 'MAIN', 'mainx'])).toEqual([
      true,
      true,
      true,
      false,
    ]);
    expect(results({ exact: true, ignore_case: true }, ['TRUE', 'True', true, 'false'])).toEqual([
      true,
      true,
      true,
      false,
    ]);
  });

  it('{exact} behaves like a plain scalar', () => {
    expect(results({ exact: 'main' }, ['main', ['x', 'main'], 'mai', undefined])).toEqual([
      true,
      true,
      false,
      false,
    ]);
  });

  it('never matches objects or null', () => {
    expect(results('[object Object]', [{}, null])).toEqual([false, false]);
  });

  it('describes itself as JSON', () => {
    expect(m(true).describe()).toBe('true');
    expect(m('61577203').describe()).toBe('"61577203"');
    expect(m(7).describe()).toBe('7');
    expect(m({ exact: 'Main', ignore_case: true }).describe()).toBe('"Main" (ignore case)');
  });
});

describe('one_of (YAML list and {one_of})', () => {
  it('matches any alternative with typed equality', () => {
    expect(
      results(['main', 'release', 7, true], ['main', 'release', '7', 7, 'true', 'dev', 'Main', undefined]),
    ).toEqual([true, true, true, true, true, false, false, false]);
    expect(results({ one_of: ['main', 'release'] }, ['main', 'release', 'feature'])).toEqual([
      true,
      true,
      false,
    ]);
  });

  it('ignore_case', () => {
    expect(
      results({ one_of: ['Octo-Org', 'acme'], ignore_case: true }, ['octo-org', 'ACME', 'other']),
    ).toEqual([true, true, false]);
  });

  it('describes the alternatives', () => {
    expect(m({ one_of: ['main', 'release'] }).describe()).toBe('one of [main, release]');
    expect(m(['a b', '', 'x,y', 3, true]).describe()).toBe('one of ["a b", "", "x,y", 3, true]');
    expect(m({ one_of: ['A'], ignore_case: true }).describe()).toBe('one of [A] (ignore case)');
  });
});

describe('glob', () => {
  it('is anchored and * stops at / and :', () => {
    expect(
      results({ glob: 'staging/*' }, [
        'staging/eu',
        'staging/',
        'staging/eu/1',
        'staging/eu:x',
        'prod/staging/eu',
        'staging',
      ]),
    ).toEqual([true, true, false, false, false, false]);
  });

  it('** crosses / and :', () => {
    expect(
      results({ glob: 'acme/**' }, ['acme/a', 'acme/a/b/c', 'acme/a:b', 'acme/', 'acme', 'other/acme/x']),
    ).toEqual([true, true, true, true, false, false]);
    expect(results({ glob: '**' }, ['', 'a/b:c', 'line\nbreak'])).toEqual([true, true, true]);
  });

  it('? is one character other than / and :', () => {
    expect(results({ glob: 'v?' }, ['v1', 'v', 'v12', 'v/', 'v:', 'v😀'])).toEqual([
      true,
      false,
      false,
      false,
      false,
      true,
    ]);
  });

  it('treats regex metacharacters literally', () => {
    expect(results({ glob: 'a.b+(c)[d]{e}|f^$\\' }, ['a.b+(c)[d]{e}|f^$\\', 'aXb+(c)[d]{e}|f^$\\'])).toEqual([
      true,
      false,
    ]);
    expect(
      results({ glob: 'refs/heads/release-1.*' }, ['refs/heads/release-1.2', 'refs/heads/release-102']),
    ).toEqual([true, false]);
  });

  it('matches number and boolean claims by canonical text', () => {
    expect(results({ glob: '6157*' }, [61577203, '61577203', 71577203])).toEqual([true, true, false]);
  });

  it('ignore_case', () => {
    expect(results({ glob: 'Octo-Org/*', ignore_case: true }, ['octo-org/repo', 'OCTO-ORG/Repo'])).toEqual([
      true,
      true,
    ]);
    expect(results({ glob: 'Octo-Org/*' }, ['octo-org/repo'])).toEqual([false]);
  });

  it('describes the pattern', () => {
    expect(m({ glob: 'staging/*' }).describe()).toBe('glob "staging/*"');
    expect(m({ glob: 'a/*', ignore_case: true }).describe()).toBe('glob "a/*" (ignore case)');
  });
});

describe('regex', () => {
  it('is anchored at both ends', () => {
    expect(
      results({ regex: 'release-\\d+' }, ['release-1', 'release-12', 'xrelease-1', 'release-1x', 'release-']),
    ).toEqual([true, true, false, false, false]);
  });

  it('alternation stays inside the anchors', () => {
    expect(results({ regex: 'main|release' }, ['main', 'release', 'mainx', 'xrelease'])).toEqual([
      true,
      true,
      false,
      false,
    ]);
  });

  it('a pattern that would escape the anchors once wrapped is rejected', () => {
    expect(() => m({ regex: 'main)|(.*' })).toThrow(ConfigError);
  });

  it('ignore_case', () => {
    expect(results({ regex: 'main', ignore_case: true }, ['MAIN', 'Main', 'mainx'])).toEqual([
      true,
      true,
      false,
    ]);
  });

  it('matches numbers by canonical text', () => {
    expect(results({ regex: '\\d{3}' }, [123, '123', 1234])).toEqual([true, true, false]);
  });

  it('an invalid regex is a config error naming the path', () => {
    let caught: unknown;
    try {
      compileMatcher({ regex: '(unclosed' }, 'rules[3].when.ref');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).code).toBe('CIPORT_E_CONFIG_INVALID');
    expect((caught as ConfigError).message).toBe(
      'rules[3].when.ref.regex: invalid regex "(unclosed": Unterminated group',
    );
  });

  it('describes the pattern', () => {
    expect(m({ regex: 'v\\d+' }).describe()).toBe('regex "v\\\\d+"');
  });
});

describe('present', () => {
  it('present: true needs a non-null value; present: false holds for missing and null', () => {
    const values = [undefined, null, '', 'x', false, 0, [], {}];
    expect(results({ present: true }, values)).toEqual([false, false, true, true, true, true, true, true]);
    expect(results({ present: false }, values)).toEqual([
      true,
      true,
      false,
      false,
      false,
      false,
      false,
      false,
    ]);
    expect(m({ present: true }).describe()).toBe('present');
    expect(m({ present: false }).describe()).toBe('absent');
  });
});

describe('not', () => {
  it('negates, including on missing claims', () => {
    const notMr = { not: { one_of: ['merge_request_event', 'external_pull_request_event'] } };
    expect(results(notMr, ['push', 'merge_request_event', 'external_pull_request_event', undefined])).toEqual(
      [true, false, false, true],
    );
    expect(results({ not: { present: true } }, [undefined, 'x'])).toEqual([true, false]);
  });

  it('on arrays means no element matches', () => {
    expect(results({ not: 'admin' }, [['dev', 'admin'], ['dev'], []])).toEqual([false, true, true]);
  });

  it('describes', () => {
    expect(m({ not: { one_of: ['a', 'b'] } }).describe()).toBe('not (one of [a, b])');
    expect(m({ not: 'x' }).describe()).toBe('not "x"');
  });
});

describe('all / any', () => {
  it('all requires every part', () => {
    const both = { all: [{ glob: 'release/*' }, { not: 'release/old' }] };
    expect(results(both, ['release/1', 'release/old', 'main', undefined])).toEqual([
      true,
      false,
      false,
      false,
    ]);
  });

  it('any requires one part', () => {
    const either = { any: ['main', { glob: 'release/*' }] };
    expect(results(either, ['main', 'release/2', 'dev', undefined])).toEqual([true, true, false, false]);
  });

  it('apply to an array claim as a whole', () => {
    // some element is team/* and some element is ops: satisfied by different elements
    expect(m({ all: [{ glob: 'team/*' }, 'ops'] }).test(['team/a', 'ops'])).toBe(true);
    expect(m({ all: [{ glob: 'team/*' }, 'ops'] }).test(['team/a'])).toBe(false);
  });

  it('describe', () => {
    expect(m({ all: ['a', { glob: 'b/*' }] }).describe()).toBe('all of ("a"; glob "b/*")');
    expect(m({ any: [{ gt: 1 }, { present: false }] }).describe()).toBe('any of (> 1; absent)');
  });
});

describe('comparisons', () => {
  it('compare numbers and numeric strings; anything else fails', () => {
    expect(
      results({ gte: 10, lt: 20 }, [10, '10', 19.5, '19.9', 20, 9, '20', 'abc', '', true, undefined, null]),
    ).toEqual([true, true, true, true, false, false, false, false, false, false, false, false]);
    expect(results({ gt: 0 }, [1, '1e2', 0, '-1', '0x1'])).toEqual([true, true, false, false, false]);
    expect(results({ lte: 5 }, [5, '5.0', 6])).toEqual([true, true, false]);
  });

  it('on arrays any element may satisfy', () => {
    expect(results({ gt: 100 }, [[1, 200], [1, 2], []])).toEqual([true, false, false]);
  });

  it('describes', () => {
    expect(m({ gte: 10, lt: 20 }).describe()).toBe('>= 10 and < 20');
    expect(m({ gt: 1, lte: 3 }).describe()).toBe('> 1 and <= 3');
  });
});

describe('array-valued claims', () => {
  it('leaf matchers hold if any element matches', () => {
    const groups = ['acme/dev', 'acme/ops'];
    expect(m('acme/ops').test(groups)).toBe(true);
    expect(m(['x', 'acme/dev']).test(groups)).toBe(true);
    expect(m({ glob: 'acme/*' }).test(groups)).toBe(true);
    expect(m({ regex: 'acme/o.s' }).test(groups)).toBe(true);
    expect(m('acme').test(groups)).toBe(false);
    expect(m('x').test([])).toBe(false);
    expect(m(true).test(['true'])).toBe(true);
  });

  it('nested arrays and objects inside do not match', () => {
    expect(m('a').test([['a']])).toBe(false);
    expect(m('a').test([{ a: 'a' }])).toBe(false);
  });
});

describe('missing claims', () => {
  it('every leaf form fails on a missing claim', () => {
    const leaves: MatcherInput[] = [
      'x',
      true,
      0,
      ['a'],
      { exact: 'x' },
      { one_of: ['a'] },
      { glob: '**' },
      { regex: '.*' },
      { gte: 0 },
      { present: true },
      { all: [{ glob: '**' }] },
      { any: [{ regex: '.*' }] },
    ];
    for (const input of leaves) expect(m(input).test(undefined), JSON.stringify(input)).toBe(false);
    expect(m({ present: false }).test(undefined)).toBe(true);
    expect(m({ not: 'x' }).test(undefined)).toBe(true);
  });
});

describe('shape validation', () => {
  it('rejects malformed matchers with the path', () => {
    expect(() => parseMatcher({ glob: 'a', regex: 'b' }, 'p')).toThrow(
      'p: unexpected key(s) regex in matcher',
    );
    expect(() => parseMatcher({ foo: 1 }, 'p')).toThrow('p: unknown matcher {foo}');
    expect(() => parseMatcher({}, 'p')).toThrow('p: unknown matcher {}');
    expect(() => parseMatcher([], 'p')).toThrow('p: must be a non-empty list');
    expect(() => parseMatcher({ all: [{ gt: 'x' }] }, 'p')).toThrow('p.all[0].gt: must be a number');
    expect(() => parseMatcher({ not: { regex: '[' } }, 'p')).not.toThrow();
    expect(() => compileMatcher({ not: { regex: '[' } }, 'p')).toThrow('p.not.regex: invalid regex "["');
    expect(() => parseMatcher(null, 'p')).toThrow('p: not a valid matcher');
    expect(() => parseMatcher({ exact: 'x', ignore_case: 'yes' }, 'p')).toThrow(
      'p.ignore_case: must be true or false',
    );
  });

  it('parses into nodes', () => {
    expect(parseMatcher('x')).toEqual({ kind: 'exact', value: 'x', ignoreCase: false });
    expect(parseMatcher(['a', 1])).toEqual({ kind: 'one_of', values: ['a', 1], ignoreCase: false });
    expect(parseMatcher({ gte: 1, lt: 2 })).toEqual({ kind: 'compare', gte: 1, lt: 2 });
    expect(parseMatcher({ not: { glob: 'a/*', ignore_case: true } })).toEqual({
      kind: 'not',
      matcher: { kind: 'glob', pattern: 'a/*', ignoreCase: true },
    });
  });
});
