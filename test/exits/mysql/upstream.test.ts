// The exit's upstream handshake against a MySQL 8 stand-in (caching_sha2_password fast path,
// full authentication with RSA or over verified TLS) and against hostile servers.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import { afterAll, describe, expect, it } from 'vitest';
import { targetSchema } from '../../../src/config/targets/index.js';
import { mysqlUpstreamFromTarget } from '../../../src/exits/mysql/definition.js';
import { LOCAL_CAPABILITIES } from '../../../src/exits/mysql/frontend.js';
import { Cap, encodePacket } from '../../../src/exits/mysql/packets.js';
import { connectMysqlUpstream } from '../../../src/exits/mysql/upstream.js';
import { makePki } from '../http/helpers.js';
import { type PortHarness, startPort, waitFor } from './harness.js';
import { MYSQL8_CAPS, type Mysql8Fixture, startMysql8Fixture } from './mysql8-fixture.js';
import { errOf, loginResponse, RawClient } from './raw.js';

const PW = `s8-${randomBytes(10).toString('hex')}`;
const fixtures: Mysql8Fixture[] = [];
const harnesses: PortHarness[] = [];

async function fixture(opts: Partial<Parameters<typeof startMysql8Fixture>[0]> = {}) {
  const f = await startMysql8Fixture({ user: 'app8', password: PW, cached: true, ...opts });
  fixtures.push(f);
  return f;
}

afterAll(async () => {
  await Promise.all([...harnesses.map((h) => h.close()), ...fixtures.map((f) => f.close())]);
});

const addr = (f: Mysql8Fixture) => `127.0.0.1:${f.port}`;

describe('caching_sha2_password upstream', () => {
  it('fast path, through the port with mysql2 (ping and quit reach the server)', async () => {
    const f = await fixture();
    const h = await startPort({ upstream: { address: addr(f), user: 'app8', password: PW } });
    harnesses.push(h);
    const c = await mysql.createConnection({
      host: '127.0.0.1',
      port: h.port,
      user: h.user,
      password: h.otp,
    });
    await c.ping();
    await c.end();
    await waitFor('COM_QUIT at the server', async () =>
      f.seen[0]?.commands.length === 2 ? true : undefined,
    );
    expect(h.connected[0]).toMatchObject({
      auth: 'caching_sha2_password',
      fullAuth: undefined,
      connectionId: 4242,
    });
    expect(f.seen[0]?.auth).toBe('fast');
    expect(f.seen[0]?.commands).toEqual([0x0e, 0x01]);
    // Capabilities forwarded upstream: the app's, never QUERY_ATTRIBUTES or COMPRESS.
    const caps = f.seen[0]?.capabilities ?? 0;
    expect(caps & Cap.SESSION_TRACK).not.toBe(0);
    expect(caps & Cap.DEPRECATE_EOF).toBe(0); // mysql2 does not ask for it
    expect(caps & Cap.QUERY_ATTRIBUTES).toBe(0);
    expect(caps & Cap.COMPRESS).toBe(0);
    expect(f.seen[0]?.attributes._client_name).toBe('Node-MySQL-2');
  });

  it('full authentication with the pinned RSA public key', async () => {
    const f = await fixture({ cached: false });
    const conn = await connectMysqlUpstream({
      address: addr(f),
      user: 'app8',
      password: PW,
      serverPublicKey: f.publicKey,
    });
    conn.socket.destroy();
    expect(conn.fullAuth).toBe('rsa');
    expect(f.seen[0]?.auth).toBe('rsa');
  });

  it('full authentication fetching the key only when allowPublicKeyRetrieval', async () => {
    const f = await fixture({ cached: false });
    await expect(
      connectMysqlUpstream({ address: addr(f), user: 'app8', password: PW }),
    ).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_UPSTREAM_AUTH',
      message: expect.stringContaining('needs TLS or the server public key'),
    });
    const conn = await connectMysqlUpstream({
      address: addr(f),
      user: 'app8',
      password: PW,
      allowPublicKeyRetrieval: true,
    });
    conn.socket.destroy();
    expect(f.seen.map((s) => s.auth)).toEqual(['refused', 'rsa']);
  });

  it('a wrong injected password: CIPORT_E_MYSQL_UPSTREAM_AUTH with the server errno, no password in it', async () => {
    const f = await fixture();
    const err = await connectMysqlUpstream({ address: addr(f), user: 'app8', password: 'nope-nope' }).catch(
      (e) => e,
    );
    expect(err).toMatchObject({ code: 'CIPORT_E_MYSQL_UPSTREAM_AUTH', errno: 1045 });
    expect(String(err.message)).not.toContain('nope-nope');
  });
});

describe('server_public_key: the pinned key from the target config', () => {
  /** A mysql target as the loader makes it, its secrets resolved from `env`. */
  function mysqlTarget(port: number, extra: Record<string, unknown>, env: Record<string, string>) {
    const target = targetSchema.parse({
      name: 'db8',
      protocol: 'mysql',
      address: `127.0.0.1:${port}`,
      credentials: { user: 'app8', password: { env: 'PW' } },
      ...extra,
    });
    if (target.protocol !== 'mysql') throw new Error('not a mysql target');
    target.credentials?.password?.resolve({ PW, ...env });
    target.server_public_key?.resolve(env);
    return target;
  }

  it('full authentication without TLS through the port, encrypted to the pinned key only', async () => {
    const f = await fixture({ cached: false });
    const target = mysqlTarget(f.port, { server_public_key: { env: 'KEY' } }, { KEY: f.publicKey });
    const h = await startPort({ upstream: mysqlUpstreamFromTarget(target) });
    harnesses.push(h);
    const c = await mysql.createConnection({
      host: '127.0.0.1',
      port: h.port,
      user: h.user,
      password: h.otp,
    });
    await c.ping();
    await c.end();
    expect(h.connected[0]).toMatchObject({ auth: 'caching_sha2_password', fullAuth: 'rsa' });
    expect(f.seen[0]?.auth).toBe('rsa');
  });

  it('without it, full authentication is refused and the key is never asked for', async () => {
    const f = await fixture({ cached: false });
    const upstream = mysqlUpstreamFromTarget(mysqlTarget(f.port, {}, {}));
    expect(upstream.allowPublicKeyRetrieval).toBeUndefined();
    await expect(connectMysqlUpstream(upstream)).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_UPSTREAM_AUTH',
      message: expect.stringContaining('needs TLS or the server public key'),
    });
    expect(f.seen.map((s) => s.auth)).toEqual(['refused']);
  });

  it('a key that is not an RSA public key fails when the exit is built, naming the target', () => {
    const { publicKey: ecKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const ecPem = ecKey.export({ type: 'spki', format: 'pem' }).toString();
    for (const pem of ['not a key', ecPem]) {
      const target = mysqlTarget(1, { server_public_key: { env: 'KEY' } }, { KEY: pem });
      expect(() => mysqlUpstreamFromTarget(target)).toThrow(
        /^target db8: server_public_key \(env:KEY\) is not an RSA public key in PEM$/,
      );
    }
  });
});

describe('auth switches to other plugins', () => {
  it('sha256_password without TLS: RSA with the pinned key, or the fetched one when allowed, else refused', async () => {
    const f = await fixture({ switchTo: 'sha256_password' });
    const pinned = await connectMysqlUpstream({
      address: addr(f),
      user: 'app8',
      password: PW,
      serverPublicKey: f.publicKey,
    });
    pinned.socket.destroy();
    expect(pinned.auth).toBe('sha256_password');
    const fetched = await connectMysqlUpstream({
      address: addr(f),
      user: 'app8',
      password: PW,
      allowPublicKeyRetrieval: true,
    });
    fetched.socket.destroy();
    expect(fetched.fullAuth).toBe('rsa');
    await expect(
      connectMysqlUpstream({ address: addr(f), user: 'app8', password: PW }),
    ).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_UPSTREAM_AUTH',
      message: expect.stringContaining(
        'sha256_password full authentication needs TLS or the server public key',
      ),
    });
    expect(f.seen.map((s) => s.auth)).toEqual(['rsa', 'rsa', 'refused']);
  });

  it('mysql_clear_password only over TLS', async () => {
    const pki = makePki('ciport mysql clear CA');
    const f = await fixture({
      switchTo: 'mysql_clear_password',
      tls: { key: pki.keyPem, cert: pki.certPem },
    });
    const conn = await connectMysqlUpstream({
      address: addr(f),
      user: 'app8',
      password: PW,
      tls: { mode: 'verify-full', ca: pki.caPem },
    });
    conn.socket.destroy();
    expect(conn.auth).toBe('mysql_clear_password');
    const plain = await fixture({ switchTo: 'mysql_clear_password' });
    await expect(
      connectMysqlUpstream({ address: addr(plain), user: 'app8', password: PW }),
    ).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_UPSTREAM_AUTH',
      message: expect.stringContaining('cleartext but the connection is not TLS'),
    });
    expect(f.seen.map((s) => s.auth)).toEqual(['tls']);
    expect(plain.seen.map((s) => s.auth)).toEqual(['refused']);
  });

  it('an unsupported plugin is refused by name', async () => {
    const f = await fixture({ switchTo: 'dialog' });
    await expect(
      connectMysqlUpstream({ address: addr(f), user: 'app8', password: PW }),
    ).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_UPSTREAM_AUTH',
      message: expect.stringContaining('auth plugin "dialog", which ciport does not support'),
    });
  });
});

describe('TLS upstream', () => {
  const pki = makePki('ciport mysql test CA');
  const other = makePki('another CA');

  it('verify-full with the CA: full authentication sends the password inside TLS only', async () => {
    const f = await fixture({ cached: false, tls: { key: pki.keyPem, cert: pki.certPem } });
    const conn = await connectMysqlUpstream({
      address: addr(f),
      user: 'app8',
      password: PW,
      tls: { mode: 'verify-full', ca: pki.caPem, servername: 'localhost' },
    });
    conn.socket.destroy();
    expect(conn).toMatchObject({ tls: true, fullAuth: 'tls' });
    expect(f.seen[0]?.auth).toBe('tls');
  });

  it('refuses a certificate from another CA, and a server without TLS, with CIPORT_E_TLS', async () => {
    const f = await fixture({ tls: { key: pki.keyPem, cert: pki.certPem } });
    await expect(
      connectMysqlUpstream({
        address: addr(f),
        user: 'app8',
        password: PW,
        tls: { mode: 'verify-full', ca: other.caPem },
      }),
    ).rejects.toMatchObject({ code: 'CIPORT_E_TLS' });
    const plain = await fixture();
    await expect(
      connectMysqlUpstream({
        address: addr(plain),
        user: 'app8',
        password: PW,
        tls: { mode: 'verify-full', ca: pki.caPem },
      }),
    ).rejects.toMatchObject({ code: 'CIPORT_E_TLS', message: expect.stringContaining('does not offer TLS') });
    expect(f.seen).toEqual([]);
  });
});

describe('hostile or incompatible upstreams', () => {
  it('a server without SESSION_TRACK cannot serve an app that negotiated it (mysql2)', async () => {
    const f = await fixture({ capabilities: (MYSQL8_CAPS & ~Cap.SESSION_TRACK) >>> 0 });
    const h = await startPort({ upstream: { address: addr(f), user: 'app8', password: PW } });
    harnesses.push(h);
    const err = await mysql
      .createConnection({ host: '127.0.0.1', port: h.port, user: h.user, password: h.otp })
      .then(
        () => undefined,
        (e: { message: string; errno: number }) => e,
      );
    expect(err).toMatchObject({
      errno: 1043,
      message: expect.stringMatching(/^CIPORT_E_MYSQL_UPSTREAM_REFUSED: .*CLIENT_SESSION_TRACK/),
    });
    expect(f.seen).toEqual([]);
    expect(h.clientErrors[0]).toMatchObject({ code: 'CIPORT_E_MYSQL_UPSTREAM_REFUSED' });
  });

  it('a server without DEPRECATE_EOF cannot serve an app that negotiated it (MySQL 8 clients do)', async () => {
    const f = await fixture({ capabilities: (MYSQL8_CAPS & ~Cap.DEPRECATE_EOF) >>> 0 });
    const h = await startPort({ upstream: { address: addr(f), user: 'app8', password: PW } });
    harnesses.push(h);
    const c = await RawClient.open(h.port);
    const hello = await c.hello();
    c.send(loginResponse(h.otp, hello.nonce, (LOCAL_CAPABILITIES | Cap.DEPRECATE_EOF) >>> 0), 1);
    const err = errOf(await c.read());
    c.close();
    expect(err.message).toMatch(/^CIPORT_E_MYSQL_UPSTREAM_REFUSED: .*lacks .*CLIENT_DEPRECATE_EOF/);
  });

  it('an oversized handshake packet is refused without being read', async () => {
    const f = await fixture({
      rawHandshake: Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0x00]), Buffer.alloc(100)]),
    });
    await expect(
      connectMysqlUpstream({ address: addr(f), user: 'app8', password: PW }),
    ).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_PROTOCOL',
      message: expect.stringContaining('oversized'),
    });
  });

  it('a malformed handshake and a non-4.1 server are protocol errors', async () => {
    const garbage = await fixture({ rawHandshake: encodePacket(Buffer.from([10, 0x41, 0x42]), 0) });
    await expect(
      connectMysqlUpstream({ address: addr(garbage), user: 'app8', password: PW }),
    ).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_PROTOCOL',
      message: expect.stringContaining('malformed handshake'),
    });
    const v9 = await fixture({ rawHandshake: encodePacket(Buffer.from([9, 0x35, 0]), 0) });
    await expect(
      connectMysqlUpstream({ address: addr(v9), user: 'app8', password: PW }),
    ).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_PROTOCOL',
    });
  });

  it('a server that says nothing runs into the deadline', async () => {
    const silent = await fixture({ rawHandshake: Buffer.alloc(0) });
    await expect(
      connectMysqlUpstream({ address: addr(silent), user: 'app8', password: PW, timeoutMs: 300 }),
    ).rejects.toMatchObject({ code: 'CIPORT_E_UPSTREAM_UNREACHABLE' });
  });
});
