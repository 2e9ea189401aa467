// The reply tracker (replies.ts) on protocol vectors: which command each server packet answers,
// for every reply shape a port relays, in both framings (with and without CLIENT_DEPRECATE_EOF),
// pipelined, split at every byte, and what makes it lose track. The shapes are MariaDB 10.11's
// (checked by hand against the server here: cursors, COM_SET_OPTION's EOF, COM_STATISTICS's
// string, multi-results); the real-server cases are in observe-live.test.ts.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PacketScanner } from '../../../src/exits/mysql/observe.js';
import { MAX_PAYLOAD } from '../../../src/exits/mysql/packets.js';
import { type ReplyShape, ReplyTracker, statusOf } from '../../../src/exits/mysql/replies.js';
import {
  binaryRow,
  CURSOR,
  columnCount,
  columnDef,
  eof,
  err,
  MORE,
  ok,
  okEnd,
  prepared,
  reply,
  resultSet,
  textRow,
} from './vectors.js';

/** Runs server bytes through a scanner into a tracker; records answered items and losses. */
function track(deprecateEof: boolean) {
  const t = new ReplyTracker<string>(deprecateEof);
  const answered: string[] = [];
  const heads: number[] = [];
  const lost: string[] = [];
  const scanner = new PacketScanner(
    (_seq, continuation) => (continuation ? 0 : 21),
    (seq, head, length, continuation) => {
      const step = t.packet(seq, head, length, continuation);
      if (step && 'answered' in step) {
        answered.push(step.answered);
        heads.push(step.head[0] as number);
      }
      if (step && 'lost' in step) lost.push(step.lost);
    },
  );
  return { t, answered, heads, lost, push: (b: Buffer) => scanner.push(b) };
}

const both = [true, false] as const;

describe('reply tracker', () => {
  it.each(both)('pipelined commands are answered in order, each by its own reply (DEPRECATE_EOF %s)', (d) => {
    const r = track(d);
    const shapes: [string, ReplyShape, Buffer[]][] = [
      ['select', 'result', resultSet(3, d)],
      ['ping', 'single', [ok()]],
      ['prepare', 'prepare', prepared(1, 2, 1, d)],
      ['bad', 'result', [err()]],
      ['insert', 'result', [ok()]],
      ['stats', 'single', [Buffer.from('Uptime: 672  Threads: 41')]],
      ['set_option', 'single', [eof()]],
      ['fields', 'fields', [columnDef('a'), columnDef('b'), d ? okEnd() : eof()]],
      [
        'execute',
        'result',
        [columnCount(1), columnDef(), ...(d ? [] : [eof()]), binaryRow(), d ? okEnd() : eof()],
      ],
    ];
    for (const [name, shape] of shapes) r.t.expect(name, shape, 0);
    const bytes = Buffer.concat(shapes.map(([, , payloads]) => reply(payloads)));
    for (let i = 0; i < bytes.length; i++) r.push(bytes.subarray(i, i + 1));
    expect(r.lost).toEqual([]);
    expect(r.answered).toEqual(shapes.map(([name]) => name));
    expect(r.heads).toEqual([0x01, 0x00, 0x00, 0xff, 0x00, 0x55, 0xfe, 0x03, 0x01]);
    expect(r.t.waiting).toBe(0);
  });

  it.each(both)(
    'multi-results: OK and result sets chained by SERVER_MORE_RESULTS_EXISTS (DEPRECATE_EOF %s)',
    (d) => {
      const r = track(d);
      r.t.expect('call', 'result', 0);
      r.t.expect('next', 'single', 0);
      // CALL p(): a result set, another, then the CALL's own OK; then COM_PING's OK.
      r.push(reply([...resultSet(1, d, MORE | 2), ...resultSet(2, d, MORE | 2), ok()]));
      expect(r.answered).toEqual(['call']);
      expect(r.t.waiting).toBe(1);
      r.push(reply([ok()]));
      expect(r.answered).toEqual(['call', 'next']);
      // SELECT 1; SELECT * FROM missing; SELECT 3: the ERR ends the reply (nothing runs after it).
      r.t.expect('multi', 'result', 0);
      r.t.expect('after', 'single', 0);
      r.push(reply([...resultSet(1, d, MORE | 2), err(1146)]));
      r.push(reply([ok()]));
      expect(r.answered).toEqual(['call', 'next', 'multi', 'after']);
      expect(r.lost).toEqual([]);
    },
  );

  it('an ERR instead of a row ends the reply; an OK with MORE_RESULTS does not', () => {
    const r = track(true);
    r.t.expect('a', 'result', 0);
    r.t.expect('b', 'result', 0);
    r.t.expect('c', 'single', 0);
    r.push(reply([columnCount(1), columnDef(), textRow('x'), err(1317, 'Query execution was interrupted')]));
    r.push(reply([ok(MORE | 2), ok()]));
    r.push(reply([ok()]));
    expect(r.answered).toEqual(['a', 'b', 'c']);
    expect(r.lost).toEqual([]);
  });

  it.each(both)(
    'prepares: parameter and column definitions, each group ended by an EOF unless DEPRECATE_EOF (%s)',
    (d) => {
      const r = track(d);
      for (const [columns, params] of [
        [0, 0],
        [1, 0],
        [0, 3],
        [2, 2],
      ] as const) {
        r.t.expect(`${columns}/${params}`, 'prepare', 0);
        r.t.expect('then', 'single', 0);
        r.push(reply(prepared(9, columns, params, d)));
        r.push(reply([ok()]));
      }
      r.t.expect('failed', 'prepare', 0);
      r.push(reply([err()]));
      expect(r.answered).toEqual(['0/0', 'then', '1/0', 'then', '0/3', 'then', '2/2', 'then', 'failed']);
      expect(r.lost).toEqual([]);
    },
  );

  it.each(both)(
    'an execute that opens a cursor ends after its metadata; fetches end with an EOF (DEPRECATE_EOF %s)',
    (d) => {
      const r = track(d);
      r.t.expect('execute', 'result', 0);
      r.t.expect('fetch', 'rows', 0);
      r.t.expect('fetch-last', 'rows', 0);
      // MariaDB: the metadata's EOF (an OK with DEPRECATE_EOF) carries SERVER_STATUS_CURSOR_EXISTS.
      r.push(reply([columnCount(1), columnDef(), d ? okEnd(CURSOR | 0x22) : eof(CURSOR | 0x22)]));
      r.push(reply([binaryRow(), d ? okEnd(CURSOR | 2) : eof(CURSOR | 2)]));
      r.push(reply([binaryRow(), binaryRow(), d ? okEnd(0x82) : eof(0x82)]));
      expect(r.answered).toEqual(['execute', 'fetch', 'fetch-last']);
      expect(r.lost).toEqual([]);
    },
  );

  it('a 16 MiB row (continuation packets) stays inside its reply, whatever its first byte', () => {
    const r = track(true);
    r.t.expect('big', 'result', 0);
    r.t.expect('next', 'single', 0);
    const big = Buffer.alloc(MAX_PAYLOAD + 10, 0x61);
    big[0] = 0xfe; // a text row whose first value is ≥ 16 MiB starts with 0xfe
    r.push(reply([columnCount(1), columnDef(), big, okEnd()]));
    r.push(reply([ok()]));
    expect(r.answered).toEqual(['big', 'next']);
    expect(r.lost).toEqual([]);
  });

  it('a reply starts at the sequence id after its command (a multi-packet command) and counts up', () => {
    const r = track(true);
    r.t.expect('long', 'single', 2);
    r.push(reply([ok()], 3));
    expect(r.answered).toEqual(['long']);
    r.t.expect('x', 'single', 0);
    r.push(reply([ok()], 2));
    expect(r.lost[0]).toMatch(/sequence id 2 where 1 was due/);
    // Lost for good: nothing more is placed.
    r.t.expect('y', 'single', 0);
    r.push(reply([ok()]));
    expect(r.answered).toEqual(['long']);
  });

  it('loses track on a packet out of place (a PREPARE_OK that is not one, an EOF where a result begins)', () => {
    for (const [shape, payloads] of [
      ['prepare', [columnDef()]],
      ['result', [eof()]],
      ['result', [columnCount(1), columnDef(), columnCount(2)]],
    ] as const) {
      const r = track(false);
      r.t.expect('x', shape, 0);
      r.push(reply([...payloads]));
      expect(r.lost.length, `${shape}`).toBe(1);
    }
  });

  it('a packet nobody asked for (a goodbye ERR on an idle connection) is no answer', () => {
    const r = track(true);
    r.push(reply([err(1927, 'Connection was killed')]));
    expect(r.answered).toEqual([]);
    expect(r.lost).toEqual([]);
    r.t.expect('after', 'single', 0);
    expect(r.t.drain()).toEqual(['after']);
  });

  it('reads the status flags of an EOF and of an OK with length-encoded counts', () => {
    expect(statusOf(eof(0x0a), 5)).toBe(0x0a);
    const okBig = Buffer.from([0x00, 0xfc, 0x10, 0x27, 0xfd, 1, 2, 3, 0x08, 0x00, 0, 0]);
    expect(statusOf(okBig, okBig.length)).toBe(0x08);
    expect(statusOf(Buffer.from([0x00, 0xfe]), 9)).toBeUndefined();
  });

  it('takes any byte stream without throwing', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom<ReplyShape>('single', 'fields', 'result', 'rows', 'prepare'), {
          maxLength: 8,
        }),
        fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 30 }),
        fc.boolean(),
        (shapes, chunks, d) => {
          const r = track(d);
          for (const s of shapes) r.t.expect(s, s, 0);
          for (const c of chunks) r.push(Buffer.from(c));
          expect(r.answered.length).toBeLessThanOrEqual(shapes.length);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
