import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import fc from 'fast-check';
import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { type QueryEvent, QueryObserver, relayPg } from '../../../src/exits/postgres/relay.js';

type Msg =
  | { t: 'Q'; text: string }
  | { t: 'P'; name: string; text: string }
  | { t: 'B' }
  | { t: 'd'; size: number };

function encode(m: Msg): Buffer {
  switch (m.t) {
    case 'Q':
      return serialize.query(m.text);
    case 'P':
      return serialize.parse({ name: m.name, text: m.text, types: [23, 25] });
    case 'B':
      return Buffer.concat([serialize.bind({ values: ['1', null] }), serialize.execute(), serialize.sync()]);
    case 'd':
      return serialize.copyData(Buffer.alloc(m.size, 0x51)); // full of 'Q' bytes, to confuse a sloppy parser
  }
}

/** Largest prefix of whole characters within `max` UTF-8 bytes. */
function cut(text: string, max: number): { text: string; truncated: boolean } {
  const norm = Buffer.from(text).toString();
  if (Buffer.byteLength(norm) <= max) return { text: norm, truncated: false };
  let out = '';
  for (const ch of norm) {
    if (Buffer.byteLength(out + ch) > max) break;
    out += ch;
  }
  return { text: out, truncated: true };
}

function model(msgs: Msg[], max: number): QueryEvent[] {
  const named = new Map<string, string>();
  const out: QueryEvent[] = [];
  for (const m of msgs) {
    if (m.t === 'Q') out.push({ type: 'query', ...cut(m.text, max), protocol: 'simple' });
    if (m.t === 'P') {
      if (m.name !== '' && named.get(m.name) === m.text) continue;
      if (m.name !== '') named.set(m.name, m.text);
      out.push({ type: 'query', ...cut(m.text, max), protocol: 'extended' });
    }
  }
  return out;
}

function observe(chunks: Buffer[], max: number): { events: QueryEvent[]; maxRetained: number } {
  const events: QueryEvent[] = [];
  const o = new QueryObserver({ onQuery: (e) => events.push(e), maxQueryLength: max });
  let maxRetained = 0;
  for (const c of chunks) {
    o.push(c);
    maxRetained = Math.max(maxRetained, o.retained);
  }
  return { events, maxRetained };
}

const text = fc.string({ unit: 'binary', maxLength: 60 }).filter((s) => !s.includes('\0'));
const msg: fc.Arbitrary<Msg> = fc.oneof(
  fc.record({ t: fc.constant('Q' as const), text }),
  fc.record({
    t: fc.constant('P' as const),
    name: fc.constantFrom('', 's1', 's2'),
    text: fc.oneof(text, fc.constant('select 1')),
  }),
  fc.record({ t: fc.constant('B' as const) }),
  fc.record({ t: fc.constant('d' as const), size: fc.integer({ min: 0, max: 3000 }) }),
);

describe('QueryObserver', () => {
  it('reports the same events however the byte stream is chunked (property)', () => {
    fc.assert(
      fc.property(
        fc.array(msg, { maxLength: 25 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 40 }),
        (msgs, sizes, max) => {
          const bytes = Buffer.concat(msgs.map(encode));
          const chunks: Buffer[] = [];
          for (let i = 0, k = 0; i < bytes.length; k++) {
            const n = sizes[k % sizes.length] as number;
            chunks.push(bytes.subarray(i, i + n));
            i += n;
          }
          const whole = observe([bytes], max);
          const split = observe(chunks, max);
          const expected = model(msgs, max);
          expect(whole.events).toEqual(expected);
          expect(split.events).toEqual(expected);
          // Never more than the bounded prefix of one Q/P body.
          expect(split.maxRetained).toBeLessThanOrEqual(256 + max + 2);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('skips huge COPY data without buffering it', () => {
    const events: QueryEvent[] = [];
    const o = new QueryObserver({ onQuery: (e) => events.push(e), maxQueryLength: 100 });
    const head = Buffer.alloc(5);
    head.write('d');
    head.writeInt32BE(4 + 50 * 1024 * 1024, 1);
    o.push(head);
    const chunk = Buffer.alloc(64 * 1024, 0x50);
    for (let i = 0; i < 800; i++) {
      o.push(chunk);
      expect(o.retained).toBe(0);
    }
    o.push(serialize.query('select after_copy'));
    expect(events).toEqual([
      { type: 'query', text: 'select after_copy', truncated: false, protocol: 'simple' },
    ]);
  });

  it('keeps only the bounded prefix of a huge query', () => {
    const events: QueryEvent[] = [];
    const o = new QueryObserver({ onQuery: (e) => events.push(e), maxQueryLength: 10 });
    const q = serialize.query(`insert into t values ${'(1),'.repeat(1_000_000)}(1)`);
    for (let i = 0; i < q.length; i += 65536) {
      o.push(q.subarray(i, i + 65536));
      expect(o.retained).toBeLessThanOrEqual(11);
    }
    expect(events).toEqual([{ type: 'query', text: 'insert int', truncated: true, protocol: 'simple' }]);
  });

  it('re-reports a named statement re-prepared with different text', () => {
    const events: QueryEvent[] = [];
    const o = new QueryObserver({ onQuery: (e) => events.push(e) });
    for (const t of ['select 1', 'select 1', 'select 2', 'select 1'])
      o.push(serialize.parse({ name: 'st', text: t }));
    expect(events.map((e) => e.text)).toEqual(['select 1', 'select 2', 'select 1']);
  });

  it('survives a throwing callback', () => {
    const o = new QueryObserver({
      onQuery: () => {
        throw new Error('audit sink down');
      },
    });
    expect(() => o.push(serialize.query('select 1'))).not.toThrow();
  });
});

async function socketPair(): Promise<{ a: Socket; b: Socket; close: () => void }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const a = connect((server.address() as { port: number }).port, '127.0.0.1');
  const [b] = (await once(server, 'connection')) as [Socket];
  await once(a, 'connect');
  return { a, b, close: () => server.close() };
}

describe('relayPg', () => {
  it('relays both ways with counts and events, and ends when the app closes', async () => {
    const app = await socketPair(); // app.a = the application, app.b = our side
    const up = await socketPair(); // up.a = our side, up.b = the server
    const events: QueryEvent[] = [];
    const relay = relayPg(app.b, up.a, { onQuery: (e) => events.push(e) });
    const atServer: Buffer[] = [];
    up.b.on('data', (d: Buffer) => atServer.push(d));
    const big = Buffer.alloc(4 * 1024 * 1024, 1);
    app.a.write(serialize.query('select 1'));
    app.a.write(serialize.copyData(big));
    up.b.write(Buffer.from('Z\0\0\0\x05I'));
    const reply = (await once(app.a, 'data')) as [Buffer];
    expect(reply[0].toString('latin1')).toBe('Z\0\0\0\x05I');
    app.a.end();
    await once(up.b, 'end');
    up.b.end();
    const result = await relay;
    expect(Buffer.concat(atServer).length).toBe(serialize.query('select 1').length + big.length + 5);
    expect(result.bytesFromApp).toBe(Buffer.concat(atServer).length);
    expect(result.bytesFromUpstream).toBe(6);
    expect(result.error).toBeUndefined();
    expect(events).toEqual([{ type: 'query', text: 'select 1', truncated: false, protocol: 'simple' }]);
    app.close();
    up.close();
  });

  it('calls onTeardown when the app side is destroyed mid-statement, saying whether it sent Terminate', async () => {
    for (const terminate of [false, true]) {
      const app = await socketPair();
      const up = await socketPair();
      const seen: { appTerminated: boolean }[] = [];
      const relay = relayPg(app.b, up.a, { queryEvents: false, onTeardown: (_e, info) => seen.push(info) });
      app.a.write(serialize.query('select pg_sleep(60)'));
      if (terminate) app.a.write(serialize.end());
      await new Promise((r) => setTimeout(r, 50));
      app.b.destroy(); // our side of the app connection goes away (a reset tunnel stream)
      await relay;
      expect(seen).toEqual([{ appTerminated: terminate }]);
      app.close();
      up.close();
    }
  });

  it('a clean goodbye (Terminate, then both ends close) never looks like an abandoned statement', async () => {
    const app = await socketPair();
    const up = await socketPair();
    // Sockets without half-open close one direction early, which pipeline may report as a
    // premature close: the hook may run, but must say the app terminated.
    const seen: boolean[] = [];
    const relay = relayPg(app.b, up.a, {
      queryEvents: false,
      onTeardown: (_e, info) => seen.push(info.appTerminated),
    });
    up.b.resume();
    app.a.resume();
    app.a.end(serialize.end());
    await once(up.b, 'end');
    up.b.end();
    const result = await relay;
    expect(result.error).toBeUndefined();
    expect(seen.every((t) => t)).toBe(true);
    app.close();
    up.close();
  });

  it('tears down the other side when one side fails', async () => {
    const app = await socketPair();
    const up = await socketPair();
    const relay = relayPg(app.b, up.a, { queryEvents: false });
    up.b.resetAndDestroy();
    const result = await relay;
    expect(result.error).toBeDefined();
    await once(app.a, 'close');
    app.close();
    up.close();
  });
});
