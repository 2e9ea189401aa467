import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  decodeStartupFrame,
  encodeStartupFrame,
  MAX_STARTUP_FRAME_PAYLOAD,
  readStartupFrame,
} from '../../../src/exits/postgres/startup-wire.js';
import { upstreamStartupParams } from '../../../src/exits/postgres/upstream.js';

const frame = (json: string, version = 1) => {
  const payload = Buffer.from(json);
  const head = Buffer.alloc(9);
  head.write('CIPG');
  head[4] = version;
  head.writeUInt32BE(payload.length, 5);
  return Buffer.concat([head, payload]);
};

describe('startup frame', () => {
  it('round-trips startup parameters and cancel keys', () => {
    const s = {
      kind: 'startup' as const,
      params: { user: 'app', database: 'db', application_name: 'é ü', options: '-c x=1' },
    };
    const f = encodeStartupFrame(s);
    expect(f.subarray(0, 4).toString()).toBe('CIPG');
    expect(f[4]).toBe(1);
    expect(f.readUInt32BE(5)).toBe(f.length - 9);
    expect(decodeStartupFrame(f)).toEqual(s);
    const c = { kind: 'cancel' as const, processId: 4242, secretKey: -123456789 };
    expect(decodeStartupFrame(encodeStartupFrame(c))).toEqual(c);
  });

  it('is JSON after a 9-byte header (the documented format)', () => {
    expect(decodeStartupFrame(frame('{"kind":"startup","params":{"user":"u"}}'))).toEqual({
      kind: 'startup',
      params: { user: 'u' },
    });
  });

  it('rejects bad magic, version, length, JSON and shapes', () => {
    const bad = (f: Buffer) => expect(() => decodeStartupFrame(f)).toThrow(/CIPORT|stream header/);
    bad(Buffer.from('XXXX'));
    bad(frame('{"kind":"startup","params":{}}', 2));
    bad(Buffer.concat([frame('{"kind":"startup","params":{}}'), Buffer.from('x')]));
    bad(frame('not json'));
    bad(frame('{"kind":"other"}'));
    bad(frame('{"kind":"startup","params":{"user":1}}'));
    bad(frame('{"kind":"startup","params":{"user":"a\\u0000b"}}'));
    bad(frame('{"kind":"startup","params":[]}'));
    bad(frame('{"kind":"cancel","processId":1.5,"secretKey":1}'));
    bad(frame('{"kind":"cancel","processId":1,"secretKey":4294967296}'));
    expect(() => decodeStartupFrame(frame('{"kind":"x"}'))).toThrow(
      expect.objectContaining({ code: 'CIPORT_E_PG_PROTOCOL' }),
    );
  });

  it('keeps a __proto__ parameter as data', () => {
    const d = decodeStartupFrame(frame('{"kind":"startup","params":{"__proto__":"x","user":"u"}}'));
    expect(d.kind === 'startup' && Object.getPrototypeOf(d.params)).toBe(null);
    expect(d.kind === 'startup' && Object.entries(d.params)).toEqual([
      ['__proto__', 'x'],
      ['user', 'u'],
    ]);
  });

  it('is bounded, both ways', () => {
    expect(() =>
      encodeStartupFrame({ kind: 'startup', params: { options: 'x'.repeat(MAX_STARTUP_FRAME_PAYLOAD) } }),
    ).toThrow(/exceed/);
    const huge = Buffer.alloc(9);
    huge.write('CIPG');
    huge[4] = 1;
    huge.writeUInt32BE(1 << 30, 5);
    expect(() => decodeStartupFrame(huge)).toThrow(/exceed/);
  });

  it('is read off the front of a stream, leaving what follows in the stream', async () => {
    const s = new PassThrough();
    const f = encodeStartupFrame({ kind: 'startup', params: { user: 'u' } });
    // Arrives in pieces, with the first protocol bytes right behind it.
    s.write(f.subarray(0, 3));
    setTimeout(() => s.write(Buffer.concat([f.subarray(3), Buffer.from('Qnext')])), 10);
    expect(await readStartupFrame(s, 1000)).toEqual({ kind: 'startup', params: { user: 'u' } });
    // Left paused for the relay's pipe() to resume.
    expect(s.isPaused()).toBe(true);
    const rest = await new Promise<Buffer>((resolve) => s.once('data', resolve).resume());
    expect(rest.toString()).toBe('Qnext');
  });

  it('does not wait forever for a frame, nor read a huge one', async () => {
    const s = new PassThrough();
    await expect(readStartupFrame(s, 100)).rejects.toMatchObject({ code: 'CIPORT_E_PG_PROTOCOL' });
    const t = new PassThrough();
    const huge = Buffer.alloc(9);
    huge.write('CIPG');
    huge[4] = 1;
    huge.writeUInt32BE(1 << 30, 5);
    t.write(huge);
    await expect(readStartupFrame(t, 1000)).rejects.toThrow(/exceed/);
  });
});

describe('upstream startup parameters', () => {
  it('take identity from the target and drop replication and protocol extensions', () => {
    const app = {
      user: 'evil',
      database: 'postgres',
      replication: 'database',
      '_pq_.compression': 'on',
      application_name: 'psql',
      options: '-c search_path=x',
      client_encoding: 'LATIN1',
    };
    expect(upstreamStartupParams(app, { user: 'app', database: 'appdb' })).toEqual({
      user: 'app',
      database: 'appdb',
      application_name: 'psql',
      options: '-c search_path=x',
      client_encoding: 'LATIN1',
    });
    // No database on the target: the application's choice.
    expect(upstreamStartupParams(app, { user: 'app' }).database).toBe('postgres');
  });
});
