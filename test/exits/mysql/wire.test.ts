// The wire pieces on their own: packet framing (16 MiB continuation), the connect-request
// frame, the statement observer fed in arbitrary chunks, and the auth proofs against mysql2's
// independent implementation.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CiportError } from '../../../src/errors/index.js';
import {
  cachingSha2Token,
  ed25519Token,
  makeNonce,
  nativeToken,
  verifyToken,
} from '../../../src/exits/mysql/auth.js';
import {
  decodeConnectFrame,
  encodeConnectFrame,
  type MysqlConnectRequest,
  readConnectFrame,
} from '../../../src/exits/mysql/connect-wire.js';
import { parseHandshakeResponse, parseServerHandshake } from '../../../src/exits/mysql/handshake.js';
import { type MysqlQueryEvent, MysqlQueryObserver } from '../../../src/exits/mysql/observe.js';
import {
  encodePacket,
  MAX_PAYLOAD,
  PacketReader,
  TruncatedPayload,
} from '../../../src/exits/mysql/packets.js';
import { UpstreamAuth } from '../../../src/exits/mysql/upstream-auth.js';

const require = createRequire(import.meta.url);
const mysql2Dir = dirname(require.resolve('mysql2'));
const auth41 = require(join(mysql2Dir, 'lib/auth_41.js')) as {
  calculateToken: (password: string, s1: Buffer, s2: Buffer) => Buffer;
};
const sha2 = require(join(mysql2Dir, 'lib/auth_plugins/caching_sha2_password.js')) as {
  calculateToken: (password: string, scramble: Buffer) => Buffer;
};

const fail = (why: string, detail: string) => new CiportError('CIPORT_E_MYSQL_PROTOCOL', `${why}: ${detail}`);

describe('packets', () => {
  it('splits a 16 MiB payload into continuation packets and reads it back whole', async () => {
    const payload = Buffer.alloc(MAX_PAYLOAD + 10, 0x61);
    const wire = encodePacket(payload, 5);
    expect(wire.length).toBe(payload.length + 8);
    expect(wire.readUIntLE(0, 3)).toBe(MAX_PAYLOAD);
    expect(wire[3]).toBe(5);
    expect(wire.readUIntLE(4 + MAX_PAYLOAD, 3)).toBe(10);
    expect(wire[4 + MAX_PAYLOAD + 3]).toBe(6);
    // exactly 16 MiB - 1 needs an empty packet after it
    expect(encodePacket(Buffer.alloc(MAX_PAYLOAD), 0).length).toBe(MAX_PAYLOAD + 8);
    const s = new PassThrough();
    const reader = new PacketReader(s, fail);
    s.end(wire);
    const p = await reader.read(MAX_PAYLOAD + 10, 5000);
    expect(p.seq).toBe(5);
    expect(p.payload.equals(payload)).toBe(true);
  });

  it('refuses a logical packet beyond the bound before reading its payload', async () => {
    const s = new PassThrough();
    const reader = new PacketReader(s, fail);
    s.write(Buffer.from([0x00, 0x10, 0x00, 0x00])); // 4096 bytes announced, none sent
    await expect(reader.read(1024, 5000)).rejects.toMatchObject({
      message: 'too-large: packet of 4096 bytes or more',
    });
  });
});

describe('connect request frame', () => {
  const request: MysqlConnectRequest = {
    kind: 'connect',
    user: 'app',
    database: 'shop',
    collation: 224,
    capabilities: 0x81a28f,
    maxPacketSize: 1 << 24,
    attributes: { _client_name: 'libmariadb', __proto__x: 'kept as data' },
  };

  it('round-trips', () => {
    expect(decodeConnectFrame(encodeConnectFrame(request))).toEqual(request);
  });

  it.each([
    ['magic', (b: Buffer) => b.write('XXXX', 0)],
    ['version', (b: Buffer) => b.writeUInt8(2, 4)],
    ['length', (b: Buffer) => b.writeUInt32BE(b.readUInt32BE(5) + 1, 5)],
  ])('refuses a bad %s', (_what, spoil) => {
    const frame = encodeConnectFrame(request);
    spoil(frame);
    expect(() => decodeConnectFrame(frame)).toThrow(/CIMY|version|length/);
  });

  it.each([
    { ...request, collation: 0 },
    { ...request, capabilities: -1 },
    { ...request, user: 'a\0b' },
    { ...request, database: '' },
    { ...request, attributes: { x: 1 } },
    { ...request, kind: 'cancel' },
  ])('refuses invalid content %#', (bad) => {
    const body = Buffer.from(JSON.stringify(bad));
    const head = Buffer.alloc(9);
    head.write('CIMY', 0);
    head.writeUInt8(1, 4);
    head.writeUInt32BE(body.length, 5);
    expect(() => decodeConnectFrame(Buffer.concat([head, body]))).toThrow(/mysql stream header/);
  });

  it('reads from a stream with a bound and a deadline, leaving the rest', async () => {
    const s = new PassThrough();
    s.write(Buffer.concat([encodeConnectFrame(request), Buffer.from('rest')]));
    expect(await readConnectFrame(s)).toEqual(request);
    expect(s.read()?.toString()).toBe('rest');
    const big = new PassThrough();
    const head = Buffer.alloc(9);
    head.write('CIMY', 0);
    head.writeUInt8(1, 4);
    head.writeUInt32BE(1 << 30, 5);
    big.write(head);
    await expect(readConnectFrame(big)).rejects.toMatchObject({ code: 'CIPORT_E_MYSQL_PROTOCOL' });
    await expect(readConnectFrame(new PassThrough(), 50)).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_PROTOCOL',
      message: expect.stringContaining('not received'),
    });
  });
});

// Statements reported as answered, pipelined prepares, character sets: observe.test.ts.
describe('statement observer: the application side', () => {
  const cmd = (code: number, body: Buffer | string, seq = 0) =>
    encodePacket(Buffer.concat([Buffer.from([code]), Buffer.from(body)]), seq);

  it('never takes a continuation packet for a command, even when its sequence id wraps to 0', () => {
    const events: MysqlQueryEvent[] = [];
    const o = new MysqlQueryObserver({ onQuery: (e) => events.push(e), maxQueryLength: 16 });
    const first = Buffer.alloc(4 + MAX_PAYLOAD, 0x20);
    first.writeUIntLE(MAX_PAYLOAD, 0, 3);
    first[3] = 0;
    first[4] = 0x03;
    first.write('SELECT', 5);
    // The continuation starts with 0x11 (COM_CHANGE_USER) and has sequence id 0.
    const second = encodePacket(Buffer.from([0x11, 0x41, 0x42]), 0);
    o.app.push(first);
    o.app.push(second);
    o.app.push(cmd(0x03, 'SELECT 3'));
    expect(o.violation).toBeUndefined();
    expect(events.map((e) => [e.text.trim(), e.truncated])).toEqual([
      ['SELECT', true],
      ['SELECT 3', false],
    ]);
  });

  it('flags COM_CHANGE_USER and remembers COM_QUIT, also without events', () => {
    const o = new MysqlQueryObserver();
    o.app.push(cmd(0x11, 'root\0'));
    expect(o.violation).toMatch(/COM_CHANGE_USER/);
    const q = new MysqlQueryObserver();
    q.app.push(cmd(0x01, ''));
    expect(q.lastCommand).toBe(0x01);
    expect(q.violation).toBeUndefined();
  });

  it('refuses a packet out of sequence and anything after COM_QUIT, from where it begins, with no event', () => {
    for (const [first, bad] of [
      [cmd(0x03, 'SELECT 1'), encodePacket(Buffer.from('\x03DROP TABLE t'), 5)],
      [cmd(0x01, ''), cmd(0x03, 'DROP TABLE t')],
    ] as const) {
      const events: MysqlQueryEvent[] = [];
      const o = new MysqlQueryObserver({ onQuery: (e) => events.push(e) });
      const after = cmd(0x03, 'DROP DATABASE x');
      o.app.push(Buffer.concat([first, bad, after]));
      expect(o.violation).toMatch(/out of sequence|after COM_QUIT/);
      // The earlier command goes on (it is reported); the refused packet and all after it do not.
      expect(o.violationAt).toBe(first.length);
      expect(events.map((e) => e.text).filter((t) => t.includes('DROP'))).toEqual([]);
    }
  });

  it('LOAD DATA file contents (sequence ids ≥ 2) are not commands: refused, never reported', () => {
    const events: MysqlQueryEvent[] = [];
    const o = new MysqlQueryObserver({ onQuery: (e) => events.push(e) });
    o.app.push(cmd(0x03, "LOAD DATA LOCAL INFILE 'x' INTO TABLE t"));
    o.app.push(encodePacket(Buffer.from('\x03DROP TABLE t\n'), 2));
    o.app.push(encodePacket(Buffer.alloc(0), 3));
    expect(events.map((e) => e.text)).toEqual(["LOAD DATA LOCAL INFILE 'x' INTO TABLE t"]);
    expect(o.violation).toMatch(/out of sequence/);
  });
});

describe('auth proofs', () => {
  it('match mysql2 for mysql_native_password and caching_sha2_password, and verify only the right one', () => {
    for (let i = 0; i < 20; i++) {
      const nonce = makeNonce();
      expect(nonce.includes(0)).toBe(false);
      const pw = `pw-${i}-ü`;
      expect(
        nativeToken(pw, nonce).equals(auth41.calculateToken(pw, nonce.subarray(0, 8), nonce.subarray(8))),
      ).toBe(true);
      expect(cachingSha2Token(pw, nonce).equals(sha2.calculateToken(pw, nonce))).toBe(true);
      expect(verifyToken('mysql_native_password', pw, nonce, nativeToken(pw, nonce))).toBe(true);
      expect(verifyToken('mysql_native_password', pw, nonce, nativeToken(`${pw}x`, nonce))).toBe(false);
      expect(verifyToken('caching_sha2_password', pw, nonce, nativeToken(pw, nonce))).toBe(false);
      expect(verifyToken('client_ed25519', pw, nonce, nativeToken(pw, nonce))).toBe(false);
    }
    expect(nativeToken('', makeNonce()).length).toBe(0);
    expect(verifyToken('mysql_native_password', '', makeNonce(), Buffer.alloc(0))).toBe(false);
  });
});

describe('parsers on arbitrary bytes', () => {
  const onlyTruncated = (parse: (b: Buffer) => unknown) => (bytes: Uint8Array) => {
    try {
      parse(Buffer.from(bytes));
    } catch (err) {
      expect(err).toBeInstanceOf(TruncatedPayload);
    }
  };

  it('handshake responses: parsed or TruncatedPayload, nothing else', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), onlyTruncated(parseHandshakeResponse)), {
      numRuns: 2000,
    });
    // Valid prefix (PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH_LENENC | CONNECT_ATTRS) + noise.
    const head = Buffer.alloc(32);
    head.writeUInt32LE(0x00308200 | 0x200, 0);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (tail) =>
        onlyTruncated(parseHandshakeResponse)(Buffer.concat([head, Buffer.from(tail)])),
      ),
      { numRuns: 2000 },
    );
  });

  it('server handshakes: parsed or TruncatedPayload, nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (tail) =>
        onlyTruncated(parseServerHandshake)(Buffer.concat([Buffer.from([10]), Buffer.from(tail)])),
      ),
      { numRuns: 2000 },
    );
  });

  it('the observer takes any byte stream in both directions without throwing', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 40 }), (chunks) => {
        const o = new MysqlQueryObserver({ onQuery: () => {}, maxQueryLength: 32 });
        for (const c of chunks) {
          o.app.push(Buffer.from(c));
          o.server.push(Buffer.from(c));
        }
      }),
      { numRuns: 1000 },
    );
  });
});

describe('upstream auth state machine', () => {
  const base = { where: 'db:3306', user: 'u', password: 'secret-pw', tls: false };
  const nonce = makeNonce();
  const sw = (plugin: string, data: Buffer) =>
    Buffer.concat([Buffer.from([0xfe]), Buffer.from(`${plugin}\0`), data]);

  it('never encrypts with a key the server sends unasked (a man in the middle could)', () => {
    const a = new UpstreamAuth({ ...base, serverPublicKey: undefined }, 'caching_sha2_password', nonce);
    a.first();
    expect(() => a.step(Buffer.from('\x01-----BEGIN PUBLIC KEY-----\n…'))).toThrow(/unexpected packet 0x1/);
    const b = new UpstreamAuth(base, 'caching_sha2_password', nonce);
    b.first();
    expect(() => b.step(Buffer.from([0x01, 0x04]))).toThrow(/needs TLS or the server public key/);
  });

  it('asks for the key only when allowed, and refuses a key it cannot use', () => {
    const a = new UpstreamAuth({ ...base, allowPublicKeyRetrieval: true }, 'caching_sha2_password', nonce);
    a.first();
    expect(a.step(Buffer.from([0x01, 0x04]))).toEqual(Buffer.from([0x02]));
    expect(() => a.step(Buffer.from('\x01not a pem'))).toThrow(
      expect.objectContaining({
        code: 'CIPORT_E_MYSQL_PROTOCOL',
        message: expect.stringContaining('unusable RSA'),
      }),
    );
  });

  it('follows at most two auth switches, and sends the cleartext password only inside TLS', () => {
    const a = new UpstreamAuth(base, 'mysql_native_password', nonce);
    a.first();
    a.step(sw('mysql_native_password', Buffer.concat([nonce, Buffer.from([0])])));
    a.step(sw('caching_sha2_password', Buffer.concat([nonce, Buffer.from([0])])));
    expect(() => a.step(sw('mysql_native_password', nonce))).toThrow(/repeated auth switch/);
    const tls = new UpstreamAuth({ ...base, tls: true }, 'mysql_native_password', nonce);
    expect(tls.step(sw('mysql_clear_password', Buffer.alloc(0)))).toEqual(Buffer.from('secret-pw\0'));
    const plain = new UpstreamAuth(base, 'mysql_native_password', nonce);
    expect(() => plain.step(sw('mysql_clear_password', Buffer.alloc(0)))).toThrow(/not TLS/);
  });

  it("keeps ed25519's 32-byte nonce whole, even when it ends with a zero byte", () => {
    const pw = 'p'.repeat(32);
    const n32 = Buffer.alloc(32, 7);
    n32[31] = 0;
    const a = new UpstreamAuth({ ...base, password: pw }, 'mysql_native_password', nonce);
    const sig = a.step(sw('client_ed25519', n32));
    expect(sig.length).toBe(64);
    expect(sig.equals(ed25519Token(pw, n32) as Buffer)).toBe(true);
    expect(sig.equals(ed25519Token(pw, n32.subarray(0, 31)) as Buffer)).toBe(false);
  });
});

describe("KILL rewriting (the listener's id → the upstream thread)", () => {
  const cmd = (text: string) => encodePacket(Buffer.concat([Buffer.from([0x03]), Buffer.from(text)]), 0);
  const ids = new Map([[2147483650, 42]]);
  const rewritten = (wire: Buffer, step = wire.length) => {
    const o = new MysqlQueryObserver({ killTarget: (id) => ids.get(id) });
    const out: Buffer[] = [];
    for (let i = 0; i < wire.length; i += step) {
      const chunk = Buffer.from(wire.subarray(i, i + step));
      o.app.push(chunk);
      for (const r of o.rewrites) r.bytes.copy(chunk, r.offset);
      o.rewrites.length = 0;
      out.push(chunk);
    }
    return Buffer.concat(out).subarray(5).toString('latin1');
  };

  it.each([
    ['KILL QUERY 2147483650', 'KILL QUERY 0000000042'],
    ['kill 2147483650;', 'kill 0000000042;'],
    ['  KILL CONNECTION 2147483650 ', '  KILL CONNECTION 0000000042 '],
    ['KILL QUERY 2147483651', 'KILL QUERY 2147483651'], // not this session's
    ['KILL QUERY ID 2147483650', 'KILL QUERY ID 2147483650'], // by query id: not a thread
    ["SELECT 'KILL QUERY 2147483650'", "SELECT 'KILL QUERY 2147483650'"],
  ])('%s → %s', (sent, upstream) => {
    expect(rewritten(cmd(sent))).toBe(upstream);
  });

  it('rewrites after other packets in the same chunk, and leaves a statement split over chunks alone', () => {
    const both = Buffer.concat([cmd('SELECT 1'), cmd('KILL QUERY 2147483650')]);
    expect(rewritten(both)).toContain('KILL QUERY 0000000042');
    expect(rewritten(cmd('KILL QUERY 2147483650'), 8)).toBe('KILL QUERY 2147483650');
  });
});
