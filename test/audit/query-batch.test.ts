import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { QueryBatch, type QueryStatement } from '../../src/audit/query-batch.js';

describe('QueryBatch: a connection statements in one event per window', () => {
  let out: QueryStatement[][];
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.parse('2026-12-05T15:00:00.000Z') });
    out = [];
  });
  afterEach(() => vi.useRealTimers());

  const batch = (opts: { windowMs?: number; maxStatements?: number; maxBytes?: number } = {}) =>
    new QueryBatch({ emit: (s) => out.push(s), ...opts });

  it('hands over the statements of one window together, in order, each with its own time', () => {
    const b = batch({ windowMs: 20 });
    b.add('select 1', false, 'simple');
    vi.advanceTimersByTime(5);
    b.add('select 2', true, 'extended');
    expect(out).toEqual([]);
    expect(b.pending).toBe(2);
    vi.advanceTimersByTime(15);
    expect(out).toEqual([
      [
        { at: '2026-12-05T15:00:00.000Z', statement: 'select 1', protocol: 'simple' },
        { at: '2026-12-05T15:00:00.005Z', statement: 'select 2', truncated: true, protocol: 'extended' },
      ],
    ]);
    // The next statement opens a new window.
    b.add('select 3');
    vi.advanceTimersByTime(19);
    expect(out).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(out[1]).toEqual([{ at: '2026-12-05T15:00:00.020Z', statement: 'select 3' }]);
  });

  it("keeps a statement's send time, outcome and encoding when the exit gives them (mysql)", () => {
    const b = batch({ windowMs: 20 });
    const sent = Date.parse('2026-12-05T14:59:59.250Z');
    b.add('select sleep(1)', false, 'simple', { at: sent, outcome: 'ok' });
    b.add('73656c656374', false, 'simple', { at: sent + 1, outcome: 'unanswered', encoding: 'hex' });
    b.flush();
    expect(out).toEqual([
      [
        { at: '2026-12-05T14:59:59.250Z', statement: 'select sleep(1)', protocol: 'simple', outcome: 'ok' },
        {
          at: '2026-12-05T14:59:59.251Z',
          statement: '73656c656374',
          protocol: 'simple',
          outcome: 'unanswered',
          encoding: 'hex',
        },
      ],
    ]);
  });

  it('a full batch goes out at once: by count, and by text before it would pass the bound', () => {
    const b = batch({ maxStatements: 3, maxBytes: 10 });
    for (const s of ['a', 'b', 'c', 'd']) b.add(s);
    expect(out.map((x) => x.map((s) => s.statement))).toEqual([['a', 'b', 'c']]);
    b.add('1234567890'); // 'd' + this = 11 characters: past the bound, 'd' goes first, then it alone
    expect(out.map((x) => x.map((s) => s.statement))).toEqual([['a', 'b', 'c'], ['d'], ['1234567890']]);
    b.add('x'.repeat(50)); // longer than the bound alone: the pending one goes out, then it alone
    expect(out.map((x) => x.map((s) => s.statement.length))).toEqual([[1, 1, 1], [1], [10], [50]]);
    expect(b.pending).toBe(0);
  });

  it('close hands over what is pending, and any later statement at once; never an empty batch', () => {
    const b = batch();
    b.flush();
    b.close();
    expect(out).toEqual([]);
    const c = batch();
    c.add('select 1');
    c.close();
    expect(out).toEqual([[{ at: '2026-12-05T15:00:00.000Z', statement: 'select 1' }]]);
    c.add('late');
    expect(out[1]).toEqual([{ at: '2026-12-05T15:00:00.000Z', statement: 'late' }]);
    vi.advanceTimersByTime(1_000);
    expect(out).toHaveLength(2);
  });

  it('keeps every one of thousands of statements, in order', () => {
    const b = batch();
    for (let i = 0; i < 5_000; i++) {
      b.add(`select ${i}`);
      if (i % 97 === 0) vi.advanceTimersByTime(7);
    }
    b.close();
    const all = out.flat().map((s) => s.statement);
    expect(all).toEqual(Array.from({ length: 5_000 }, (_, i) => `select ${i}`));
    expect(out.length).toBeLessThan(5_000 / 10);
    for (const x of out) expect(x.length).toBeGreaterThan(0);
  });
});
