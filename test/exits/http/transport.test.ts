// Http1Transport: what the exit's http.Server writes into an HTTP/2 CONNECT stream. On Node 20 a
// response ending `writeHead(…Content-Length…); end(buf)` reached the stream as one writev ending
// in an empty chunk, and nghttp2 sent the head from freed memory (see transport.ts). Here: the
// connection never sees an empty write or a batch, and an http.Server fed real HTTP/2 streams
// through the transport answers hundreds of requests byte-exact.
import { once } from 'node:events';
import http from 'node:http';
import { createServer as createH2Server, connect as h2connect, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Http1Transport } from '../../../src/exits/http/transport.js';
import { patternBody, sha256 } from '../../fixtures/upstreams.js';

describe('Http1Transport', () => {
  it('gives the connection one non-empty Buffer per write, never an empty one', async () => {
    const writes: Buffer[] = [];
    const conn = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        writes.push(chunk);
        cb();
      },
    });
    const t = new Http1Transport(conn);
    t.cork();
    t.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n', 'latin1');
    t.write(Buffer.from('abc'));
    t.write('', 'latin1');
    t.uncork();
    t.write(Buffer.alloc(0));
    t.write('x');
    await new Promise((r) => setImmediate(r));
    expect(writes.map((w) => w.toString('latin1'))).toEqual([
      'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc',
      'x',
    ]);
    expect(writes.every((w) => w.length > 0)).toBe(true);
  });

  it('closes with its connection, also one already gone when served; destroying it cuts the connection', async () => {
    const gone = new Duplex({ read() {}, write: (_c, _e, cb) => cb() });
    gone.destroy();
    const late = new Http1Transport(gone);
    await once(late, 'close');
    const conn = new Duplex({ read() {}, write: (_c, _e, cb) => cb() });
    const t = new Http1Transport(conn);
    t.on('error', () => {});
    const closed = new Promise((r) => conn.once('close', r));
    t.destroy(new Error('app gone'));
    await closed;
    expect(conn.destroyed).toBe(true);
  });

  it('an http.Server fed HTTP/2 streams answers 400 requests byte-exact (writeHead + end(buf))', async () => {
    const sizes = [0, 1, 100, 16_384, 65_537];
    const bodies = new Map(sizes.map((n) => [n, patternBody(n)]));
    const server = http.createServer((req, res) => {
      const body = bodies.get(Number(req.url?.slice(1))) as Buffer;
      res.writeHead(200, { 'Content-Length': body.length });
      res.end(body);
    });
    const h2 = createH2Server();
    h2.on('stream', (stream: ServerHttp2Stream) => {
      stream.respond({ ':status': 200 });
      server.emit('connection', new Http1Transport(stream));
    });
    h2.listen(0, '127.0.0.1');
    await once(h2, 'listening');
    const session = h2connect(`http://127.0.0.1:${(h2.address() as AddressInfo).port}`);
    // One app connection per request, as curl or urllib would open: raw HTTP/1.1 over CONNECT.
    const one = (n: number) =>
      new Promise<{ head: string; sha: string }>((resolve, reject) => {
        const st = session.request({ ':method': 'CONNECT', ':authority': 'api:80' });
        let buf = Buffer.alloc(0);
        st.on('error', reject);
        st.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          const end = buf.indexOf('\r\n\r\n');
          if (end >= 0 && buf.length >= end + 4 + n) {
            st.close();
            resolve({ head: buf.subarray(0, end).toString('latin1'), sha: sha256(buf.subarray(end + 4)) });
          }
        });
        st.write(`GET /${n} HTTP/1.1\r\nHost: api\r\n\r\n`);
      });
    try {
      const wrong: string[] = [];
      const check = (n: number, r: { head: string; sha: string }) => {
        if (!r.head.startsWith('HTTP/1.1 200 OK\r\n') || r.sha !== sha256(bodies.get(n) as Buffer)) {
          wrong.push(`${n}: ${JSON.stringify(r.head.slice(0, 24))}`);
        }
      };
      for (let i = 0; i < 200; i++) {
        const n = sizes[i % sizes.length] as number;
        check(n, await one(n));
      }
      const batch = Array.from({ length: 200 }, (_, i) => sizes[i % sizes.length] as number);
      for (let i = 0; i < batch.length; i += 50) {
        const part = batch.slice(i, i + 50);
        const got = await Promise.all(part.map(one));
        for (const [j, n] of part.entries()) check(n, got[j] as { head: string; sha: string });
      }
      expect(wrong.slice(0, 5)).toEqual([]);
    } finally {
      session.destroy();
      await new Promise<void>((r) => h2.close(() => r()));
    }
  }, 60_000);
});
