// Hostile and broken clients on the gateway port get errors and are disconnected, while a
// well-behaved session keeps working throughout.
import { randomBytes } from 'node:crypto';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.js';
import {
  api,
  Capture,
  connectClient,
  type Harness,
  openSession,
  roundTrip,
  sha256,
  startHarness,
  tunnel,
} from './helpers.js';

let h: Harness;
let good: ClientHttp2Session;
let goodSession: { id: string; secret: string };
/** A tunnel held open for the whole file: it also keeps the good connection from idling out. */
let held: ClientHttp2Stream;

beforeAll(async () => {
  h = await startHarness({
    server: { request_timeout: '1s', handshake_timeout: '1s', idle_timeout: '1s', max_header_bytes: 8192 },
  });
  good = await h.client();
  goodSession = await openSession(good, await h.token(), { targets: ['echo'] });
  held = await tunnel(good, goodSession, 'echo');
});
afterAll(async () => {
  await h?.stop();
});

/** The well-behaved session still opens tunnels and moves bytes intact. */
async function goodStillWorks(): Promise<void> {
  const ping = randomBytes(1000);
  held.write(ping);
  const echoed = await readExactly(held, ping.length);
  expect(echoed.equals(ping)).toBe(true);
  const stream: ClientHttp2Stream = await tunnel(good, goodSession, 'echo');
  const data = randomBytes(64_000);
  expect(sha256(await roundTrip(stream, data))).toBe(sha256(data));
  const hb = await api(good, 'POST', `/v1/sessions/${goodSession.id}/heartbeat`, {
    bearer: goodSession.secret,
  });
  expect(hb.status).toBe(200);
}

function readExactly(stream: ClientHttp2Stream, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= n) {
        stream.off('data', onData);
        stream.pause();
        resolve(Buffer.concat(chunks));
      }
    };
    stream.on('data', onData);
    stream.resume();
  });
}

function port(): number {
  return h.gateway.port;
}

/** Everything the server sends until it closes the connection, and how long that took. */
function untilClosed(socket: Socket | TLSSocket): Promise<{ data: Buffer; ms: number }> {
  const started = Date.now();
  const chunks: Buffer[] = [];
  return new Promise((resolve) => {
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {});
    socket.once('close', () => resolve({ data: Buffer.concat(chunks), ms: Date.now() - started }));
  });
}

function tls(alpn: string[]): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: port(),
      ca: h.gateway.caPem,
      ALPNProtocols: alpn,
      servername: 'localhost',
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('garbage', () => {
  it('drops a connection that sends garbage instead of a TLS handshake', async () => {
    const socket = netConnect(port(), '127.0.0.1');
    const done = untilClosed(socket);
    socket.write(randomBytes(4096));
    const { ms } = await done;
    expect(ms).toBeLessThan(5_000);
    await goodStillWorks();
  });

  it('drops a TLS client that never completes the handshake', async () => {
    const socket = netConnect(port(), '127.0.0.1');
    const done = untilClosed(socket);
    // A ClientHello's first bytes, then silence.
    socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    const { ms } = await done;
    expect(ms).toBeLessThan(5_000);
    await goodStillWorks();
  });

  it('answers GOAWAY to garbage after negotiating h2', async () => {
    const socket = await tls(['h2']);
    const done = untilClosed(socket);
    socket.write(randomBytes(2048));
    const { data } = await done;
    // The server's SETTINGS and GOAWAY frames (type 0x7) arrive before it closes.
    expect(data.length).toBeGreaterThan(0);
    expect(findFrameType(data, 0x7)).toBe(true);
    await goodStillWorks();
  });

  it('answers 400 to garbage over HTTP/1.1', async () => {
    const socket = await tls(['http/1.1']);
    const done = untilClosed(socket);
    socket.write('\u0000\u0001 this is not HTTP \r\n\r\n');
    const { data } = await done;
    expect(data.toString('latin1')).toMatch(/^HTTP\/1\.1 400/);
    await goodStillWorks();
  });

  it('refuses HTTP/1.1 CONNECT with 405 and a code', async () => {
    const socket = await tls(['http/1.1']);
    const done = untilClosed(socket);
    socket.write('CONNECT echo:443 HTTP/1.1\r\nHost: echo:443\r\n\r\n');
    const text = (await done).data.toString('latin1');
    expect(text).toMatch(/^HTTP\/1\.1 405/);
    expect(text).toContain('ciport-error: CIPORT_E_METHOD_NOT_ALLOWED');
  });
});

describe('oversized headers', () => {
  it('refuses an HTTP/2 request whose headers exceed the limit', async () => {
    const c = await connectClient(h.gateway.url, h.gateway.caPem);
    try {
      const outcome = await new Promise<string>((resolve) => {
        const stream = c.request({ ':method': 'GET', ':path': '/healthz', 'x-big': 'a'.repeat(64_000) });
        stream.on('response', (hs) => resolve(`status ${hs[':status']} ${hs['ciport-error']}`));
        stream.on('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code}`));
        stream.on('close', () => resolve(`closed ${stream.rstCode}`));
        stream.end();
      });
      expect(outcome).toBe('status 431 CIPORT_E_HEADERS_TOO_LARGE');
    } finally {
      c.destroy();
    }
    await goodStillWorks();
  });

  it('refuses HTTP/1.1 headers over the limit with 431', async () => {
    const socket = await tls(['http/1.1']);
    const done = untilClosed(socket);
    socket.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(32_000)}\r\n\r\n`);
    expect((await done).data.toString('latin1')).toMatch(/^HTTP\/1\.1 431/);
    await goodStillWorks();
  });

  it('refuses too many header fields', async () => {
    const c = await connectClient(h.gateway.url, h.gateway.caPem);
    try {
      const headers: Record<string, string> = { ':method': 'GET', ':path': '/healthz' };
      for (let i = 0; i < 200; i++) headers[`x-h${i}`] = 'v';
      const outcome = await new Promise<string>((resolve) => {
        const stream = c.request(headers);
        stream.on('response', (hs) => resolve(`status ${hs[':status']}`));
        stream.on('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code}`));
        stream.on('close', () => resolve(`closed ${stream.rstCode}`));
        stream.end();
      });
      expect(outcome).not.toBe('status 200');
    } finally {
      c.destroy();
    }
    await goodStillWorks();
  });
});

describe('slow clients', () => {
  it('cuts an HTTP/1.1 client that trickles its headers (slowloris)', async () => {
    const socket = await tls(['http/1.1']);
    const done = untilClosed(socket);
    socket.write('POST /v1/sessions HTTP/1.1\r\nHost: x\r\n');
    const trickle = setInterval(() => socket.writable && socket.write('X-A: b\r\n'), 200);
    try {
      const { data, ms } = await done;
      expect(ms).toBeLessThan(5_000);
      expect(data.toString('latin1')).toMatch(/^HTTP\/1\.1 408/);
    } finally {
      clearInterval(trickle);
    }
    await goodStillWorks();
  });

  it('answers 408 to an HTTP/2 request whose body trickles in', async () => {
    const c = await connectClient(h.gateway.url, h.gateway.caPem);
    try {
      const stream = c.request({
        ':method': 'POST',
        ':path': '/v1/sessions',
        authorization: `Bearer ${await h.token()}`,
        'content-type': 'application/json',
        'content-length': '1000',
      });
      stream.write('{');
      const trickle = setInterval(() => !stream.closed && stream.write(' '), 100);
      const status = await new Promise<number>((resolve) => {
        stream.on('response', (hs) => resolve(Number(hs[':status'])));
        stream.on('error', () => resolve(-1));
      });
      clearInterval(trickle);
      expect(status).toBe(408);
    } finally {
      c.destroy();
    }
    await goodStillWorks();
  });

  it('closes an HTTP/2 connection that stays idle', async () => {
    const c = await connectClient(h.gateway.url, h.gateway.caPem);
    const started = Date.now();
    await new Promise<void>((resolve) => c.once('close', () => resolve()));
    expect(Date.now() - started).toBeLessThan(5_000);
    await goodStillWorks();
  });

  it('does not close an HTTP/2 connection whose tunnel is merely quiet', async () => {
    const c = await connectClient(h.gateway.url, h.gateway.caPem);
    try {
      const s = await openSession(c, await h.token(), { targets: ['echo'] });
      const stream = await tunnel(c, s, 'echo');
      await new Promise((r) => setTimeout(r, 2_500)); // beyond idle_timeout
      expect(c.closed).toBe(false);
      expect((await roundTrip(stream, Buffer.from('quiet'))).toString()).toBe('quiet');
    } finally {
      c.destroy();
    }
  });
});

/** Is there an HTTP/2 frame of `type` in a server's byte stream (after its SETTINGS)? */
function findFrameType(data: Buffer, type: number): boolean {
  let off = 0;
  while (off + 9 <= data.length) {
    const len = data.readUIntBE(off, 3);
    if (data[off + 3] === type) return true;
    off += 9 + len;
  }
  return false;
}

describe('a client that goes away mid-request', () => {
  it('is not logged as a gateway failure, and the gateway keeps serving', async () => {
    const lines = new Capture();
    const own = await startHarness({}, { logger: createLogger({ destination: lines, level: 'info' }) });
    try {
      // An HTTP/1.1 session request that promises 1000 bytes, sends 10, then drops the connection.
      const sock: TLSSocket = tlsConnect({
        host: '127.0.0.1',
        port: Number(new URL(own.gateway.url).port),
        ca: own.gateway.caPem,
        servername: 'localhost',
        ALPNProtocols: ['http/1.1'],
      });
      await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject));
      sock.write('POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n');
      sock.write('Content-Length: 1000\r\n\r\n{"targets"');
      await new Promise((r) => setTimeout(r, 200));
      sock.destroy();
      await new Promise((r) => setTimeout(r, 300));
      const c = await own.client();
      const s = await openSession(c, await own.token(), { targets: ['echo'] });
      expect(s.id).toMatch(/^ses_/);
      const errors = lines.text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { level: number; msg: string })
        .filter((l) => l.level >= 50);
      expect(errors).toEqual([]);
    } finally {
      await own.stop();
    }
  });
});
