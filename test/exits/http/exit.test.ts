// The HTTP exit against real sockets: curl, fetch and node:http clients talk to a TCP listener
// whose sockets go to the exit (stand-in for the tunnel hop), the exit talks to an HTTPS upstream
// on loopback with a CA made in-test that requires the injected credential.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import {
  type ClientHttp2Session,
  createServer as createH2Server,
  type Http2Server,
  connect as h2connect,
} from 'node:http2';
import https from 'node:https';
import { type AddressInfo, connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpExit, type HttpExit, type HttpRequestEvent } from '../../../src/exits/http/index.js';
import {
  curl,
  type ExitListener,
  makePki,
  type Pki,
  rawValues,
  secret,
  startExit,
  startUpstream,
  type Upstream,
  wsAccept,
} from './helpers.js';

const TOKEN = 'tok-Zq8-exit-secret-4d1f';
const BASIC_USER = 'ci-bot';
const BASIC_PASSWORD = 'pw-basic-secret-77aa';
const API_KEY = 'key-hdr-secret-9c3e';
const MiB = 1024 * 1024;
const EVENT_KEYS = new Set([
  'type',
  'target',
  'method',
  'path',
  'status',
  'bytes_in',
  'bytes_out',
  'duration_ms',
  'upgrade',
  'error',
  'aborted',
]);

let pki: Pki;
let otherPki: Pki;
let workDir: string;

beforeAll(() => {
  pki = makePki('upstream CA');
  otherPki = makePki('unrelated CA');
  workDir = mkdtempSync(join(tmpdir(), 'ciport-http-'));
});
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

function bearerTarget(up: Upstream) {
  return {
    address: `localhost:${up.port}`,
    tls: { ca: secret(pki.caPem, 'UPSTREAM_CA') },
    injection: { kind: 'bearer' as const, token: secret(TOKEN, 'API_TOKEN') },
  };
}

function expectCleanEvent(e: HttpRequestEvent): void {
  for (const key of Object.keys(e)) expect(EVENT_KEYS.has(key), `unexpected event field ${key}`).toBe(true);
  expect(e.type).toBe('http.request');
  expect(e.duration_ms).toBeGreaterThanOrEqual(0);
}

/** Write `data` on a raw connection and collect what comes back until `done` matches or it closes. */
function raw(port: number, data: string, done: RegExp = /$^/, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(got);
    }, timeoutMs);
    sock.on('data', (c) => {
      got += c.toString('latin1');
      if (done.test(got)) {
        clearTimeout(timer);
        sock.destroy();
        resolve(got);
      }
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    sock.on('error', reject);
    sock.write(data);
  });
}

/**
 * A minimal WebSocket client on a raw socket: handshake (with a client-sent Authorization that
 * must not reach the upstream), one masked text frame, its echo, then close.
 */
async function wsEcho(
  port: number,
  message: string,
): Promise<{ key: string; head: string; echoed: string; sentBytes: number; receivedBytes: number }> {
  const key = randomBytes(16).toString('base64');
  const sock = connect(port, '127.0.0.1');
  await once(sock, 'connect');
  sock.write(
    'GET /ws HTTP/1.1\r\nHost: whatever\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer evil\r\n\r\n`,
  );
  let buf = Buffer.alloc(0);
  const readUntil = async (pred: (b: Buffer) => boolean) => {
    while (!pred(buf)) {
      const [chunk] = (await once(sock, 'data')) as [Buffer];
      buf = Buffer.concat([buf, chunk]);
    }
  };
  await readUntil((b) => b.includes('\r\n\r\n'));
  const end = buf.indexOf('\r\n\r\n');
  const head = buf.subarray(0, end).toString('latin1');
  buf = buf.subarray(end + 4);
  const payload = Buffer.from(message);
  const mask = randomBytes(4);
  const frame = Buffer.concat([
    Buffer.from([0x81, 0x80 | payload.length]),
    mask,
    Buffer.from(payload.map((b, i) => b ^ (mask[i % 4] as number))),
  ]);
  sock.write(frame);
  await readUntil((b) => b.length >= 2 + payload.length);
  expect(buf[0]).toBe(0x81);
  expect(buf[1]).toBe(payload.length);
  const echoed = buf.subarray(2, 2 + payload.length).toString();
  sock.end();
  await once(sock, 'close');
  return { key, head, echoed, sentBytes: frame.length, receivedBytes: 2 + payload.length };
}

/** A TCP port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Wait until `read()` stops changing for `quietMs`. */
async function settle(read: () => number, quietMs = 700): Promise<number> {
  let last = -1;
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    await new Promise((r) => setTimeout(r, 50));
    const v = read();
    if (v !== last) {
      last = v;
      since = Date.now();
    }
  }
  return last;
}

describe('bearer injection to an HTTPS upstream', () => {
  let up: Upstream;
  let ex: ExitListener;

  beforeAll(async () => {
    up = await startUpstream(pki, { name: 'authorization', value: `Bearer ${TOKEN}` });
    ex = await startExit(bearerTarget(up));
  });
  afterAll(async () => {
    await ex.close();
    await up.close();
  });

  it('the upstream really refuses requests without the token (control)', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      https
        .get(
          { host: '127.0.0.1', port: up.port, path: '/hello', ca: pki.caPem, servername: 'localhost' },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        )
        .on('error', reject);
    });
    expect(status).toBe(401);
  });

  it('curl gets 200; the upstream sees the injected token and its own Host', async () => {
    const r = await curl([`${ex.url}/hello`]);
    expect(r.code).toBe(0);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ hello: 'world' });
    expect(r.headers).toMatch(/x-upstream: yes/i);
    const seen = up.seen.at(-1)!;
    expect(rawValues(seen.rawHeaders, 'authorization')).toEqual([`Bearer ${TOKEN}`]);
    expect(rawValues(seen.rawHeaders, 'host')).toEqual([`localhost:${up.port}`]);
    const e = ex.events.at(-1)!;
    expectCleanEvent(e);
    expect(e).toMatchObject({
      target: 'api',
      method: 'GET',
      path: '/hello',
      status: 200,
      bytes_in: 0,
      bytes_out: 17,
    });
    expect(e.error).toBeUndefined();
  });

  it('fetch gets 200, twice over one kept-alive app connection', async () => {
    const before = ex.events.length;
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${ex.url}/hello`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ hello: 'world' });
    }
    expect(ex.events.length).toBe(before + 2);
  });

  it('a client-sent Authorization never reaches the upstream', async () => {
    const from = up.seen.length;
    const r = await curl([`${ex.url}/hello`, '-H', 'Authorization: Bearer evil']);
    expect(r.status).toBe(200);
    const res = await fetch(`${ex.url}/hello`, {
      headers: { authorization: 'Basic ZXZpbDpldmls', 'proxy-authorization': 'Basic ZXZpbDpldmls' },
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const seen = up.seen.slice(from);
    expect(seen).toHaveLength(2);
    for (const s of seen) {
      expect(rawValues(s.rawHeaders, 'authorization')).toEqual([`Bearer ${TOKEN}`]);
      expect(rawValues(s.rawHeaders, 'proxy-authorization')).toEqual([]);
      expect(s.rawHeaders.join('\n')).not.toMatch(/evil|ZXZpbDpldmls/);
    }
  });

  it('removes hop-by-hop and Connection-listed headers, keeps end-to-end ones in order', async () => {
    await new Promise<void>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: ex.port,
          path: '/hello',
          setHost: false,
          headers: [
            'Host',
            'evil.example',
            'X-App',
            '1',
            'Connection',
            'keep-alive, X-Hop',
            'X-Hop',
            'hop-value',
            'Keep-Alive',
            'timeout=5',
            'TE',
            'trailers',
            'Cookie',
            'a=1',
            'Cookie',
            'b=2',
          ],
        },
        (res) => {
          expect(res.statusCode).toBe(200);
          res.resume();
          res.on('end', resolve);
        },
      );
      req.on('error', reject);
      req.end();
    });
    const s = up.seen.at(-1)!;
    expect(rawValues(s.rawHeaders, 'x-app')).toEqual(['1']);
    expect(rawValues(s.rawHeaders, 'cookie')).toEqual(['a=1', 'b=2']);
    expect(rawValues(s.rawHeaders, 'x-hop')).toEqual([]);
    expect(rawValues(s.rawHeaders, 'te')).toEqual([]);
    expect(rawValues(s.rawHeaders, 'keep-alive')).toEqual([]);
    expect(rawValues(s.rawHeaders, 'host')).toEqual([`localhost:${up.port}`]);
  });

  it('keeps the query string out of the event path by default', async () => {
    const r = await curl([`${ex.url}/hello?api_key=abc&x=1`]);
    expect(r.status).toBe(200);
    expect(up.seen.at(-1)!.url).toBe('/hello?api_key=abc&x=1');
    expect(ex.events.at(-1)!.path).toBe('/hello');
  });

  it('relays 204 and HEAD without inventing a body', async () => {
    const r = await curl([`${ex.url}/empty`, '-X', 'POST']);
    expect(r.status).toBe(204);
    expect(r.body).toBe('');
    const head = await fetch(`${ex.url}/hello`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('Expect: 100-continue is relayed: an upstream refusal arrives before the body is sent', async () => {
    const file = join(workDir, 'body-8m');
    const data = randomBytes(8 * MiB);
    writeFileSync(file, data);
    const rejected = await curl([
      `${ex.url}/reject`,
      '--data-binary',
      `@${file}`,
      '-H',
      'Expect: 100-continue',
    ]);
    expect(rejected.status).toBe(413);
    const rejectEvent = ex.events.at(-1)!;
    expect(rejectEvent).toMatchObject({ path: '/reject', status: 413 });
    expect(rejectEvent.bytes_in).toBeLessThan(MiB);

    const ok = await curl([`${ex.url}/upload`, '--data-binary', `@${file}`, '-H', 'Expect: 100-continue']);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toEqual({
      sha256: createHash('sha256').update(data).digest('hex'),
      bytes: 8 * MiB,
    });
    expect(ex.events.at(-1)).toMatchObject({ path: '/upload', status: 200, bytes_in: 8 * MiB });
  });

  it('streams a 50 MiB upload with backpressure (a stalled upstream stalls the sender)', async () => {
    const total = 50 * MiB;
    const req = http.request({
      host: '127.0.0.1',
      port: ex.port,
      method: 'POST',
      path: '/upload-slow',
      headers: { 'content-length': String(total), 'content-type': 'application/octet-stream' },
    });
    const response = once(req, 'response') as Promise<[http.IncomingMessage]>;
    const hash = createHash('sha256');
    let sent = 0;
    const writer = (async () => {
      while (sent < total) {
        const chunk = randomBytes(Math.min(64 * 1024, total - sent));
        hash.update(chunk);
        sent += chunk.length;
        if (!req.write(chunk)) await once(req, 'drain');
      }
      req.end();
    })();
    // The upstream stops reading after 1 MiB: the sender must stall with far less than the payload
    // in flight (socket buffers of two hops). An exit that buffered bodies would take it all.
    const stalledAt = await settle(() => sent);
    expect(up.uploadRead).toBeLessThan(2 * MiB);
    expect(stalledAt).toBeLessThan(total / 2);
    expect(stalledAt - up.uploadRead).toBeLessThan(24 * MiB);
    up.releaseUpload();
    await writer;
    const [res] = await response;
    let body = '';
    for await (const c of res) body += c;
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(body)).toEqual({ sha256: hash.digest('hex'), bytes: total });
    await new Promise((r) => setTimeout(r, 50));
    expect(ex.events.at(-1)).toMatchObject({
      method: 'POST',
      path: '/upload-slow',
      status: 200,
      bytes_in: total,
    });
  });

  it('streams a 50 MiB download with backpressure (a paused reader stalls the upstream)', async () => {
    const total = 50 * MiB;
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: ex.port, path: '/download?mib=50' }, resolve).on('error', reject);
    });
    res.pause();
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-length']).toBe(String(total));
    const writtenAtStall = await settle(() => up.downloadWritten);
    expect(writtenAtStall).toBeLessThan(total / 2);
    const hash = createHash('sha256');
    let received = 0;
    for await (const c of res as AsyncIterable<Buffer>) {
      hash.update(c);
      received += c.length;
    }
    expect(received).toBe(total);
    expect(hash.digest('hex')).toBe(up.downloadSha);
    await new Promise((r) => setTimeout(r, 50));
    expect(ex.events.at(-1)).toMatchObject({ path: '/download', status: 200, bytes_out: total });
  });

  it('an app leaving mid-download stops the upstream transfer and is reported as aborted', async () => {
    const eventP = ex.nextEvent();
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: ex.port, path: '/download?mib=50' }, resolve).on('error', reject);
    });
    res.once('data', () => res.destroy());
    const e = await eventP;
    expect(e).toMatchObject({ path: '/download', status: 200, aborted: true });
    expect(e.bytes_out).toBeLessThan(50 * MiB);
    const stopped = await settle(() => up.downloadWritten, 300);
    expect(stopped).toBeLessThan(50 * MiB);
    expect(up.downloadSha).toBeUndefined();
  });

  it('relays a WebSocket upgrade and pipes frames both ways', async () => {
    const eventP = ex.nextEvent();
    const ws = await wsEcho(ex.port, 'hello through ciport');
    expect(ws.head).toMatch(/^HTTP\/1\.1 101 /);
    expect(ws.head).toMatch(/\r\nUpgrade: websocket/i);
    expect(ws.head).toContain(`Sec-WebSocket-Accept: ${wsAccept(ws.key)}`);
    expect(ws.echoed).toBe('hello through ciport');

    const e = await eventP;
    expectCleanEvent(e);
    expect(e).toMatchObject({ method: 'GET', path: '/ws', status: 101, upgrade: true });
    expect(e.bytes_in).toBe(ws.sentBytes);
    expect(e.bytes_out).toBe(ws.receivedBytes);
    const seen = up.seenUpgrades.at(-1)!;
    expect(rawValues(seen.rawHeaders, 'authorization')).toEqual([`Bearer ${TOKEN}`]);
    expect(rawValues(seen.rawHeaders, 'upgrade')).toEqual(['websocket']);
  });

  it('an upgrade the upstream declines comes back as its response', async () => {
    const eventP = ex.nextEvent();
    const got = await raw(
      ex.port,
      'GET /ws-refuse HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    expect(got).toMatch(/^HTTP\/1\.1 403 /);
    expect(got).toContain('{"error":"refused"}');
    expect(await eventP).toMatchObject({ path: '/ws-refuse', status: 403, upgrade: true });
  });

  it('retries a GET once when a pooled upstream connection turns out closed; never a POST', async () => {
    const from = up.seen.length;
    const flaky = (method: string) =>
      up.seen.slice(from).filter((s) => s.url === '/flaky' && s.method === method);
    // /hello leaves a used socket in the pool; /flaky gets it next, and the upstream kills it.
    expect((await curl([`${ex.url}/hello`])).status).toBe(200);
    expect((await curl([`${ex.url}/flaky`])).status).toBe(200);
    expect(flaky('GET')).toHaveLength(2); // the killed attempt and the retry
    // A POST on a pooled socket that dies is not replayed: the app gets the 502.
    expect((await curl([`${ex.url}/hello`])).status).toBe(200);
    const post = await curl([`${ex.url}/flaky`, '-X', 'POST', '--data-binary', 'x']);
    expect(post.status).toBe(502);
    expect(post.body).toMatch(/closed the connection before responding/);
    expect(flaky('POST')).toHaveLength(1);
  });

  it('refuses absolute-form targets (the app used it as a proxy) and CONNECT', async () => {
    const from = up.seen.length;
    const got = await raw(
      ex.port,
      'GET http://evil.example/hello HTTP/1.1\r\nHost: evil.example\r\n\r\n',
      /\}$/,
    );
    expect(got).toMatch(/^HTTP\/1\.1 400 /);
    expect(got).toContain('"code":"CIPORT_E_USAGE"');
    const conn = await raw(ex.port, 'CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n');
    expect(conn).toMatch(/^HTTP\/1\.1 405 /);
    expect(up.seen.length).toBe(from);
  });

  it('refuses TRACE (an echoing upstream would hand the job the token), also as an upgrade', async () => {
    const from = up.seen.length;
    const upgradesFrom = up.seenUpgrades.length;
    const r = await curl(['-X', 'TRACE', `${ex.url}/hello`]);
    expect(r.status).toBe(405);
    expect(r.headers).toMatch(/ciport-error: CIPORT_E_METHOD_NOT_ALLOWED/i);
    expect(JSON.parse(r.body).error.code).toBe('CIPORT_E_METHOD_NOT_ALLOWED');
    expect(r.body).not.toContain(TOKEN);
    const event = ex.events.findLast((e) => e.method === 'TRACE');
    expect(event).toMatchObject({ status: 405, error: 'CIPORT_E_METHOD_NOT_ALLOWED' });
    const upgrade = await raw(
      ex.port,
      'TRACE /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
      /\}$/,
    );
    expect(upgrade).toMatch(/^HTTP\/1\.1 405 /);
    const track = await raw(ex.port, 'TRACK /hello HTTP/1.1\r\nHost: x\r\n\r\n', /\}$/);
    expect(track).toMatch(/^HTTP\/1\.1 400 /);
    expect(up.seen.length).toBe(from);
    expect(up.seenUpgrades.length).toBe(upgradesFrom);
  });
});

describe('HttpExit.serve', () => {
  it("reports each connection's requests to the hooks it was served with (one exit for all)", async () => {
    const up = await startUpstream(pki, { name: 'authorization', value: `Bearer ${TOKEN}` });
    const exit = createHttpExit({ name: 'api', ...bearerTarget(up) });
    const perConnection: HttpRequestEvent[][] = [];
    const server = createServer((sock) => {
      const mine: HttpRequestEvent[] = [];
      perConnection.push(mine);
      exit.serve(sock, { onRequest: (e) => mine.push(e) });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect((await curl([`${base}/hello`, `${base}/hello?a=1`])).status).toBe(200); // one connection, two requests
      expect((await curl([`${base}/empty`, '-X', 'POST'])).status).toBe(204); // another connection
      await new Promise((r) => setTimeout(r, 50));
      expect(perConnection.map((events) => events.map((e) => `${e.method} ${e.path} ${e.status}`))).toEqual([
        ['GET /hello 200', 'GET /hello 200'],
        ['POST /empty 204'],
      ]);
    } finally {
      exit.close();
      await new Promise<void>((r) => server.close(() => r()));
      await up.close();
    }
  });
});

describe('limits and timeouts', () => {
  let up: Upstream;
  let ex: ExitListener;

  beforeAll(async () => {
    up = await startUpstream(pki, { name: 'authorization', value: `Bearer ${TOKEN}` });
    ex = await startExit(bearerTarget(up), {
      maxHeaderBytes: 4096,
      headersTimeoutMs: 300,
      timeoutCheckIntervalMs: 50,
      responseTimeoutMs: 400,
    });
  });
  afterAll(async () => {
    await ex.close();
    await up.close();
  });

  it('answers 431 to an oversized request head, without contacting the upstream', async () => {
    const from = up.seen.length;
    const r = await curl([`${ex.url}/hello`, '-H', `X-Big: ${'a'.repeat(8000)}`]);
    expect(r.status).toBe(431);
    expect(JSON.parse(r.body).error.code).toBe('CIPORT_E_HEADERS_TOO_LARGE');
    expect(up.seen.length).toBe(from);
    expect(ex.events.at(-1)).toMatchObject({ status: 431, error: 'CIPORT_E_HEADERS_TOO_LARGE' });
  });

  it('answers 502 when upstream response headers exceed the limit', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'x-huge': 'b'.repeat(8000) });
      res.end('never seen');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const small = await startExit(
      { address: `127.0.0.1:${port}`, injection: { kind: 'bearer', token: secret(TOKEN) } },
      { maxHeaderBytes: 4096 },
    );
    try {
      const r = await curl([`${small.url}/`]);
      expect(r.status).toBe(502);
      expect(JSON.parse(r.body).error.message).toMatch(/response headers larger than 4096 bytes/);
    } finally {
      await small.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('answers 408 when the request head does not arrive in time', async () => {
    const started = Date.now();
    const got = await raw(ex.port, 'GET /hello HTTP/1.1\r\nHost: x\r\n', /^HTTP\/1\.1 408/, 5000);
    expect(got).toMatch(/^HTTP\/1\.1 408 /);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('answers 502 when the upstream sends no response in time', async () => {
    const r = await curl([`${ex.url}/slow`]);
    expect(r.status).toBe(502);
    const body = JSON.parse(r.body) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('CIPORT_E_HTTP_UPSTREAM');
    expect(body.error.message).toMatch(/no response within 400 ms/);
    expect(ex.events.at(-1)).toMatchObject({ path: '/slow', status: 502, error: 'CIPORT_E_HTTP_UPSTREAM' });
  });

  it('close() cuts the open app connections', async () => {
    const sock = connect(ex.port, '127.0.0.1');
    await once(sock, 'connect');
    await new Promise((r) => setTimeout(r, 50));
    expect(ex.exit.connections).toBeGreaterThan(0);
    const closed = once(sock, 'close');
    ex.exit.close();
    await closed;
    expect(ex.exit.connections).toBe(0);
    expect(ex.exit.closed).toBe(true);
  });
});

describe('upstream failures', () => {
  let up: Upstream;
  const exits: ExitListener[] = [];
  const start = async (...args: Parameters<typeof startExit>) => {
    const ex = await startExit(...args);
    exits.push(ex);
    return ex;
  };

  beforeAll(async () => {
    up = await startUpstream(pki, { name: 'authorization', value: `Bearer ${TOKEN}` });
  });
  afterAll(async () => {
    for (const ex of exits) await ex.close();
    await up.close();
  });

  it('upstream down: 502 with CIPORT_E_HTTP_UPSTREAM, for requests and upgrades', async () => {
    const port = await deadPort();
    const ex = await start({ ...bearerTarget(up), address: `127.0.0.1:${port}` });
    const r = await curl([`${ex.url}/hello`]);
    expect(r.status).toBe(502);
    expect(r.headers).toMatch(/ciport-error: CIPORT_E_HTTP_UPSTREAM/i);
    expect(r.headers).toMatch(/content-type: application\/json/i);
    const body = JSON.parse(r.body) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('CIPORT_E_HTTP_UPSTREAM');
    expect(body.error.message).toContain(`127.0.0.1:${port}`);
    expect(body.error.message).toContain('ECONNREFUSED');
    const e = ex.events.at(-1)!;
    expectCleanEvent(e);
    expect(e).toMatchObject({ status: 502, error: 'CIPORT_E_HTTP_UPSTREAM' });

    const got = await raw(
      ex.port,
      'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    );
    expect(got).toMatch(/^HTTP\/1\.1 502 /);
    expect(got).toContain('"code":"CIPORT_E_HTTP_UPSTREAM"');
  });

  it('wrong CA: 502 with a TLS message; nothing reaches the upstream', async () => {
    const from = up.seen.length + up.seenUpgrades.length;
    const ex = await start({ ...bearerTarget(up), tls: { ca: secret(otherPki.caPem, 'OTHER_CA') } });
    const r = await curl([`${ex.url}/hello`]);
    expect(r.status).toBe(502);
    const body = JSON.parse(r.body) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('CIPORT_E_HTTP_UPSTREAM');
    expect(body.error.message).toMatch(/^TLS verification of upstream localhost:\d+ failed \(/);
    expect(body.error.message).toMatch(/SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/);

    const got = await raw(
      ex.port,
      'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    );
    expect(got).toMatch(/^HTTP\/1\.1 502 /);
    expect(got).toContain('TLS verification');
    expect(up.seen.length + up.seenUpgrades.length).toBe(from);
  });

  it('tls: true verifies against the system CAs (a private CA is not trusted)', async () => {
    const from = up.seen.length;
    const ex = await start({ ...bearerTarget(up), tls: true });
    const r = await curl([`${ex.url}/hello`]);
    expect(r.status).toBe(502);
    expect(r.body).toContain('TLS verification');
    expect(up.seen.length).toBe(from);
  });

  it('a servername the certificate does not cover is refused', async () => {
    const from = up.seen.length;
    const ex = await start({
      ...bearerTarget(up),
      tls: { ca: secret(pki.caPem), servername: 'other.example' },
    });
    const r = await curl([`${ex.url}/hello`]);
    expect(r.status).toBe(502);
    expect(r.body).toContain('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(up.seen.length).toBe(from);
  });

  it('TLS to an upstream that does not speak TLS, and an upstream that does not speak HTTP: 502', async () => {
    const junk = createServer((sock) => {
      sock.on('error', () => {});
      sock.once('data', () => sock.end('SSH-2.0-OpenSSH_9.2\r\nnot http at all\r\n\r\n'));
    });
    junk.listen(0, '127.0.0.1');
    await once(junk, 'listening');
    const port = (junk.address() as AddressInfo).port;
    try {
      const tlsEx = await start({ ...bearerTarget(up), address: `127.0.0.1:${port}` });
      const r1 = await curl([`${tlsEx.url}/hello`]);
      expect(r1.status).toBe(502);
      expect(JSON.parse(r1.body).error.message).toMatch(
        /TLS handshake with upstream 127\.0\.0\.1:\d+ failed \(EPROTO: wrong version number\)$/,
      );
      const plainEx = await start({
        address: `127.0.0.1:${port}`,
        injection: { kind: 'bearer', token: secret(TOKEN) },
      });
      const r2 = await curl([`${plainEx.url}/hello`]);
      expect(r2.status).toBe(502);
      expect(JSON.parse(r2.body).error.message).toMatch(/sent an invalid HTTP response \(HPE_/);
    } finally {
      await new Promise<void>((r) => junk.close(() => r()));
    }
  });

  it('an IP address upstream is verified against the IP in the certificate', async () => {
    const ex = await start({ ...bearerTarget(up), address: `127.0.0.1:${up.port}` });
    const r = await curl([`${ex.url}/hello`]);
    expect(r.status).toBe(200);
    expect(rawValues(up.seen.at(-1)!.rawHeaders, 'host')).toEqual([`127.0.0.1:${up.port}`]);
  });
});

describe('plain HTTP upstream, basic and custom-header injection', () => {
  it('injects basic credentials; a client-sent user never reaches the upstream', async () => {
    const expected = `Basic ${Buffer.from(`${BASIC_USER}:${BASIC_PASSWORD}`).toString('base64')}`;
    const up = await startUpstream(pki, { name: 'authorization', value: expected });
    const ex = await startExit({
      address: `localhost:${up.port}`,
      tls: { ca: secret(pki.caPem) },
      injection: { kind: 'basic', user: BASIC_USER, password: secret(BASIC_PASSWORD) },
    });
    try {
      const r = await curl([`${ex.url}/hello`, '-u', 'evil:evil']);
      expect(r.status).toBe(200);
      expect(rawValues(up.seen.at(-1)!.rawHeaders, 'authorization')).toEqual([expected]);
    } finally {
      await ex.close();
      await up.close();
    }
  });

  it('injects a named header, replacing a client-sent one and removing Authorization', async () => {
    const up = await startUpstream(pki, { name: 'x-api-key', value: API_KEY });
    const ex = await startExit({
      address: `localhost:${up.port}`,
      tls: { ca: secret(pki.caPem) },
      injection: { kind: 'header', header: 'X-API-Key', value: secret(API_KEY) },
    });
    try {
      const r = await curl([`${ex.url}/hello`, '-H', 'x-api-key: evil', '-H', 'Authorization: Bearer evil']);
      expect(r.status).toBe(200);
      const seen = up.seen.at(-1)!.rawHeaders;
      expect(rawValues(seen, 'x-api-key')).toEqual([API_KEY]);
      expect(rawValues(seen, 'authorization')).toEqual([]);
    } finally {
      await ex.close();
      await up.close();
    }
  });

  it('forwards to a plain HTTP upstream when tls is off', async () => {
    const seen: string[][] = [];
    const server = http.createServer((req, res) => {
      seen.push(req.rawHeaders);
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('plain');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const ex = await startExit({
      address: `127.0.0.1:${port}`,
      tls: false,
      injection: { kind: 'bearer', token: secret(TOKEN) },
    });
    try {
      const r = await curl([`${ex.url}/x`]);
      expect(r.status).toBe(200);
      expect(r.body).toBe('plain');
      expect(rawValues(seen[0]!, 'authorization')).toEqual([`Bearer ${TOKEN}`]);
      expect(rawValues(seen[0]!, 'host')).toEqual([`127.0.0.1:${port}`]);
    } finally {
      await ex.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('secrets', () => {
  it('never appear in events, responses, error messages or the exit objects', async () => {
    const up = await startUpstream(pki, { name: 'authorization', value: `Bearer ${TOKEN}` });
    const good = await startExit(bearerTarget(up));
    const badCa = await startExit({ ...bearerTarget(up), tls: { ca: secret(otherPki.caPem) } });
    const down = await startExit({ ...bearerTarget(up), address: `127.0.0.1:${await deadPort()}` });
    const basic = await startExit({
      address: `127.0.0.1:${await deadPort()}`,
      injection: { kind: 'basic', user: BASIC_USER, password: secret(BASIC_PASSWORD) },
    });
    const header = await startExit({
      address: `localhost:${up.port}`,
      tls: { ca: secret(pki.caPem) },
      injection: { kind: 'header', header: 'X-API-Key', value: secret(API_KEY) },
    });
    const all = [good, badCa, down, basic, header];
    try {
      const outputs: string[] = [];
      for (const ex of all) {
        for (const path of ['/hello', '/hello?token=x', '/nope']) {
          const r = await curl([`${ex.url}${path}`, '-H', 'Authorization: Bearer evil']);
          outputs.push(r.headers, r.body);
        }
        outputs.push(
          await raw(
            ex.port,
            'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
            /\}$|^HTTP\/1\.1 101[\s\S]*\r\n\r\n$/,
          ),
        );
        outputs.push(inspect(ex.exit.target, { depth: 10 }), JSON.stringify(ex.exit.target));
      }
      // The exit relayed real traffic (good: 200, header: the upstream's 401 as it wants a bearer)
      // and produced events for all of it.
      expect(outputs.join('\n')).toContain('{"hello":"world"}');
      await new Promise((r) => setTimeout(r, 100));
      const events = all.flatMap((ex) => ex.events);
      expect(events.length).toBeGreaterThanOrEqual(all.length * 4);
      for (const e of events) expectCleanEvent(e);
      const text = `${outputs.join('\n')}\n${JSON.stringify(events)}`;
      const basicB64 = Buffer.from(`${BASIC_USER}:${BASIC_PASSWORD}`).toString('base64');
      for (const s of [TOKEN, BASIC_PASSWORD, API_KEY, basicB64]) expect(text).not.toContain(s);
    } finally {
      for (const ex of all) await ex.close();
      await up.close();
    }
  });
});

describe('over an HTTP/2 CONNECT stream (the shape of the real tunnel)', () => {
  let up: Upstream;
  let exit: HttpExit;
  let h2server: Http2Server;
  let session: ClientHttp2Session;
  let local: Server;
  let url: string;
  let port: number;
  const events: HttpRequestEvent[] = [];

  beforeAll(async () => {
    up = await startUpstream(pki, { name: 'authorization', value: `Bearer ${TOKEN}` });
    exit = createHttpExit({ name: 'api', ...bearerTarget(up) });
    h2server = createH2Server();
    h2server.on('stream', (stream, headers) => {
      if (headers[':method'] !== 'CONNECT') {
        stream.respond({ ':status': 405 });
        stream.end();
        return;
      }
      stream.respond({ ':status': 200 });
      exit.serve(stream, { onRequest: (e) => events.push(e) });
    });
    h2server.listen(0, '127.0.0.1');
    await once(h2server, 'listening');
    session = h2connect(`http://127.0.0.1:${(h2server.address() as AddressInfo).port}`);
    // The client side of ciport in miniature: each app connection becomes one CONNECT stream.
    local = createServer({ allowHalfOpen: true }, (sock) => {
      const stream = session.request({ ':method': 'CONNECT', ':authority': 'api:443' });
      sock.pipe(stream);
      stream.pipe(sock);
      sock.on('error', () => stream.destroy());
      stream.on('error', () => sock.destroy());
    });
    local.listen(0, '127.0.0.1');
    await once(local, 'listening');
    port = (local.address() as AddressInfo).port;
    url = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    exit.close();
    session.destroy();
    await new Promise<void>((r) => h2server.close(() => r()));
    await new Promise<void>((r) => local.close(() => r()));
    await up.close();
  });

  it('curl and fetch get 200 with the injected token', async () => {
    const r = await curl([`${url}/hello`, '-H', 'Authorization: Bearer evil']);
    expect(r.status).toBe(200);
    const res = await fetch(`${url}/hello`);
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    expect(rawValues(up.seen.at(-1)!.rawHeaders, 'authorization')).toEqual([`Bearer ${TOKEN}`]);
    expect(events.filter((e) => e.path === '/hello' && e.status === 200).length).toBeGreaterThanOrEqual(2);
  });

  it('a 50 MiB download keeps HTTP/2 flow control as backpressure', async () => {
    const total = 50 * MiB;
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/download?mib=50' }, resolve).on('error', reject);
    });
    res.pause();
    expect(await settle(() => up.downloadWritten)).toBeLessThan(total / 2);
    const hash = createHash('sha256');
    let received = 0;
    for await (const c of res as AsyncIterable<Buffer>) {
      hash.update(c);
      received += c.length;
    }
    expect(received).toBe(total);
    expect(hash.digest('hex')).toBe(up.downloadSha);
  });

  it('a WebSocket upgrade works over the stream', async () => {
    const ws = await wsEcho(port, 'over h2');
    expect(ws.head).toMatch(/^HTTP\/1\.1 101 /);
    expect(ws.echoed).toBe('over h2');
  });

  it('a refused request head still gets its answer (no stream reset)', async () => {
    const r = await curl([`${url}/hello`, '-H', `X-Big: ${'a'.repeat(20_000)}`]);
    expect(r.status).toBe(431);
    expect(JSON.parse(r.body).error.code).toBe('CIPORT_E_HEADERS_TOO_LARGE');
  });
});
