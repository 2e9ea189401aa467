// The local listener against hand-made clients: the auth plugins it accepts, the switch it
// asks for, and hostile or broken input. Each case also checks that nothing was opened towards
// the exit before the application proved the one-time password.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CACHING_SHA2, cachingSha2Token, NATIVE, nativeToken } from '../../../src/exits/mysql/auth.js';
import { LOCAL_CAPABILITIES } from '../../../src/exits/mysql/frontend.js';
import { encodeHandshakeResponse, encodeSslRequest } from '../../../src/exits/mysql/handshake.js';
import { Cap } from '../../../src/exits/mysql/packets.js';
import { admin, MARIADB_ADDRESS, type PortHarness, startPort, suffix } from './harness.js';
import { errOf, RawClient } from './raw.js';

const S = suffix();
const USER = `ciport_fe_${S}`;
const PW = `pw-${S}-${S}`;
let h: PortHarness;
let slow: PortHarness;

beforeAll(async () => {
  const root = await admin();
  await root.query(`CREATE USER '${USER}'@'%' IDENTIFIED BY '${PW}'`);
  await root.end();
  h = await startPort({ upstream: { address: MARIADB_ADDRESS, user: USER, password: PW } });
  slow = await startPort({
    upstream: { address: MARIADB_ADDRESS, user: USER, password: PW },
    timeoutMs: 300,
  });
});

afterAll(async () => {
  await h?.close();
  await slow?.close();
  const root = await admin();
  await root.query(`DROP USER IF EXISTS '${USER}'@'%'`);
  await root.end();
});

const CLIENT_CAPS = (LOCAL_CAPABILITIES | Cap.IGNORE_SIGPIPE) >>> 0;

function response(plugin: string, token: Buffer, user = 'app', caps = CLIENT_CAPS) {
  return encodeHandshakeResponse({
    capabilities: caps,
    maxPacketSize: 16 * 1024 * 1024,
    collation: 45,
    user,
    authResponse: token,
    database: undefined,
    authPlugin: plugin,
    attributes: { _client_name: 'raw-test' },
  });
}

async function expectNoTunnelAfter<T>(port: PortHarness, f: () => Promise<T>): Promise<T> {
  const before = port.tunnels;
  const out = await f();
  expect(port.tunnels).toBe(before);
  return out;
}

describe('authentication plugins on the local hop', () => {
  it('offers mysql_native_password, without SSL, COMPRESS or QUERY_ATTRIBUTES, and a ciport version', async () => {
    const c = await RawClient.open(h.port);
    const hello = await c.hello();
    c.close();
    expect(hello.authPlugin).toBe(NATIVE);
    expect(hello.serverVersion).toContain('ciport');
    expect(hello.nonce.length).toBe(20);
    expect(hello.capabilities & Cap.SSL).toBe(0);
    expect(hello.capabilities & Cap.COMPRESS).toBe(0);
    expect(hello.capabilities & Cap.QUERY_ATTRIBUTES).toBe(0);
    expect(hello.capabilities & Cap.DEPRECATE_EOF).not.toBe(0);
  });

  it('accepts a caching_sha2_password fast-path proof: AuthMoreData 0x03, then the upstream OK', async () => {
    const c = await RawClient.open(h.port);
    const hello = await c.hello();
    c.send(response(CACHING_SHA2, cachingSha2Token(h.otp, hello.nonce)), 1);
    const more = await c.read();
    expect(more).toEqual({ seq: 2, payload: Buffer.from([0x01, 0x03]) });
    const ok = await c.read();
    expect(ok.seq).toBe(3);
    expect(ok.payload[0]).toBe(0x00);
    c.close();
  });

  it('switches another plugin (client_ed25519) to mysql_native_password and accepts the answer', async () => {
    const c = await RawClient.open(h.port);
    const hello = await c.hello();
    c.send(response('client_ed25519', Buffer.alloc(64, 1)), 1);
    const sw = await c.read();
    expect(sw.seq).toBe(2);
    expect(sw.payload[0]).toBe(0xfe);
    expect(sw.payload.toString('latin1', 1, 1 + NATIVE.length)).toBe(NATIVE);
    const nonce = sw.payload.subarray(2 + NATIVE.length, 2 + NATIVE.length + 20);
    expect(nonce.equals(hello.nonce)).toBe(true);
    c.send(nativeToken(h.otp, nonce), 3);
    const ok = await c.read();
    expect(ok.seq).toBe(4);
    expect(ok.payload[0]).toBe(0x00);
    c.close();
  });

  it('a wrong caching_sha2 proof gets ERR 1045 CIPORT_E_MYSQL_AUTH and no tunnel', async () => {
    await expectNoTunnelAfter(h, async () => {
      const c = await RawClient.open(h.port);
      const hello = await c.hello();
      c.send(response(CACHING_SHA2, cachingSha2Token('wrong', hello.nonce)), 1);
      const err = await c.read();
      expect(err.seq).toBe(2);
      expect(errOf(err)).toMatchObject({ errno: 1045, sqlState: '28000' });
      expect(errOf(err).message).toMatch(/^CIPORT_E_MYSQL_AUTH: Access denied/);
      await c.closed();
    });
  });

  it('an empty password is refused, not switched', async () => {
    await expectNoTunnelAfter(h, async () => {
      const c = await RawClient.open(h.port);
      await c.hello();
      c.send(response(NATIVE, Buffer.alloc(0)), 1);
      const err = errOf(await c.read());
      expect(err.errno).toBe(1045);
      expect(err.message).toContain('using password: NO');
    });
  });
});

describe('hostile and broken clients', () => {
  it('refuses an SSLRequest cleanly with CIPORT_E_MYSQL_PROTOCOL', async () => {
    await expectNoTunnelAfter(h, async () => {
      const c = await RawClient.open(h.port);
      await c.hello();
      c.send(encodeSslRequest((CLIENT_CAPS | Cap.SSL) >>> 0, 1 << 24, 45), 1);
      const err = errOf(await c.read());
      expect(err.message).toMatch(/^CIPORT_E_MYSQL_PROTOCOL: TLS was requested/);
      await c.closed();
    });
  });

  it('refuses an announced 16 MiB handshake response without reading it', async () => {
    await expectNoTunnelAfter(h, async () => {
      const c = await RawClient.open(h.port);
      await c.hello();
      c.socket.write(Buffer.from([0xff, 0xff, 0xff, 0x01]));
      c.socket.write(Buffer.alloc(1024, 0x41));
      const err = errOf(await c.read());
      expect(err.message).toMatch(/^CIPORT_E_MYSQL_PROTOCOL: invalid handshake: packet of 16777215 bytes/);
      await c.closed();
    });
  });

  it('refuses a truncated handshake response', async () => {
    await expectNoTunnelAfter(h, async () => {
      const c = await RawClient.open(h.port);
      await c.hello();
      // capabilities with PROTOCOL_41, then nothing: no user, no auth response
      c.send(response(NATIVE, Buffer.alloc(20)).subarray(0, 40), 1);
      const err = errOf(await c.read());
      expect(err.message).toMatch(/^CIPORT_E_MYSQL_PROTOCOL: malformed handshake response/);
    });
  });

  it('refuses a length-encoded auth response that claims more bytes than the packet has', async () => {
    await expectNoTunnelAfter(h, async () => {
      const c = await RawClient.open(h.port);
      await c.hello();
      const p = Buffer.concat([
        response(NATIVE, Buffer.alloc(0)).subarray(0, 32),
        Buffer.from('app\0'),
        Buffer.from([0xfd, 0xff, 0xff, 0x00]),
      ]);
      c.send(p, 1);
      expect(errOf(await c.read()).message).toMatch(/^CIPORT_E_MYSQL_PROTOCOL: malformed/);
    });
  });

  it('refuses a pre-4.1 client', async () => {
    await expectNoTunnelAfter(h, async () => {
      const c = await RawClient.open(h.port);
      await c.hello();
      c.send(response(NATIVE, Buffer.alloc(20), 'app', (CLIENT_CAPS & ~Cap.PROTOCOL_41) >>> 0), 1);
      expect(errOf(await c.read()).message).toMatch(/^CIPORT_E_MYSQL_PROTOCOL: malformed.*4\.1/);
    });
  });

  it('answers garbage with an ERR and closes', async () => {
    await expectNoTunnelAfter(h, async () => {
      const c = await RawClient.open(h.port);
      await c.hello();
      c.socket.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      expect(errOf(await c.read()).message).toMatch(/^CIPORT_E_MYSQL_PROTOCOL/);
      await c.closed();
    });
  });

  it('times out a client that stops in the middle of its handshake', async () => {
    await expectNoTunnelAfter(slow, async () => {
      const c = await RawClient.open(slow.port);
      await c.hello();
      c.socket.write(Buffer.from([50, 0, 0, 1, 0x0d]));
      const err = errOf(await c.read());
      expect(err.message).toMatch(
        /^CIPORT_E_MYSQL_PROTOCOL: the application did not complete the MySQL handshake/,
      );
      await c.closed();
    });
    expect(slow.clientErrors.at(-1)).toMatchObject({ code: 'CIPORT_E_MYSQL_PROTOCOL' });
  });

  it('survives a client that disconnects mid-handshake', async () => {
    await expectNoTunnelAfter(h, async () => {
      const c = await RawClient.open(h.port);
      await c.hello();
      c.socket.end(Buffer.from([10, 0]));
      await c.closed();
    });
    // The listener still serves the next connection.
    const c = await RawClient.open(h.port);
    expect((await c.hello()).authPlugin).toBe(NATIVE);
    c.close();
  });
});
