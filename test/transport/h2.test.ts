// resetStream (src/transport/h2.ts), the one way ciport cuts a tunnel stream: on a stream that a
// pipeline carries both ways — as the client's local connections, the gateway and the agent all
// do — the peer must get the RST_STREAM with its code, from either end of the stream.
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type Http2Server,
  type Http2Stream,
  constants as h2,
  connect as h2connect,
  createServer as h2server,
  type ServerHttp2Stream,
} from 'node:http2';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { pipeline } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { resetStream } from '../../src/transport/h2.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** An h2c server whose CONNECT streams are answered 200; each stream, once it arrived. */
async function h2pair(): Promise<{ session: ClientHttp2Session; next: () => Promise<ServerHttp2Stream> }> {
  const server: Http2Server = h2server();
  const arrived: ServerHttp2Stream[] = [];
  const waiting: Array<(s: ServerHttp2Stream) => void> = [];
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    const w = waiting.shift();
    if (w) w(stream);
    else arrived.push(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const session = h2connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  cleanups.push(() => {
    session.destroy();
    server.close();
  });
  const next = () =>
    new Promise<ServerHttp2Stream>((resolve) => {
      const s = arrived.shift();
      if (s) resolve(s);
      else waiting.push(resolve);
    });
  return { session, next };
}

/** A connected pair of TCP sockets on loopback. */
async function socketPair(): Promise<[Socket, Socket]> {
  const server: Server = createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const a = connect((server.address() as AddressInfo).port, '127.0.0.1');
  const b = await accepted;
  for (const s of [a, b]) s.on('error', () => {});
  cleanups.push(() => {
    a.destroy();
    b.destroy();
    server.close();
  });
  return [a, b];
}

/** `stream` piped both ways with a socket, as a tunnel's relay does. */
async function piped(stream: Http2Stream): Promise<void> {
  const [, near] = await socketPair();
  pipeline(near, stream, () => {});
  pipeline(stream, near, () => {});
}

/** The RST_STREAM code `stream` closed with (undefined: still open after 2 s). */
function closedWith(stream: Http2Stream): Promise<number | undefined> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(undefined), 2000);
    stream.on('error', () => {});
    stream.once('close', () => {
      clearTimeout(t);
      resolve(stream.rstCode);
    });
  });
}

async function openStream(): Promise<{ client: ClientHttp2Stream; server: ServerHttp2Stream }> {
  const { session, next } = await h2pair();
  const client = session.request({ ':method': 'CONNECT', ':authority': 'target:443' });
  await new Promise((resolve) => client.once('response', resolve));
  return { client, server: await next() };
}

describe('resetStream', () => {
  it.each([
    ['CANCEL', h2.NGHTTP2_CANCEL],
    ['CONNECT_ERROR', h2.NGHTTP2_CONNECT_ERROR],
    ['ENHANCE_YOUR_CALM', h2.NGHTTP2_ENHANCE_YOUR_CALM],
  ])('from the client end of a piped stream, the peer gets RST_STREAM %s', async (_name, code) => {
    const { client, server } = await openStream();
    await piped(client);
    const seen = closedWith(server);
    resetStream(client, code);
    expect(await seen).toBe(code);
    expect(client.rstCode).toBe(code);
  });

  it.each([
    ['CANCEL', h2.NGHTTP2_CANCEL],
    ['CONNECT_ERROR', h2.NGHTTP2_CONNECT_ERROR],
  ])('from the server end of a piped stream, the peer gets RST_STREAM %s', async (_name, code) => {
    const { client, server } = await openStream();
    await piped(server);
    await piped(client);
    const seen = closedWith(client);
    resetStream(server, code);
    expect(await seen).toBe(code);
  });

  it('defaults to CANCEL, and a second reset (or one of a closed stream) changes nothing', async () => {
    const { client, server } = await openStream();
    await piped(client);
    const seen = closedWith(server);
    resetStream(client);
    resetStream(client, h2.NGHTTP2_INTERNAL_ERROR);
    expect(await seen).toBe(h2.NGHTTP2_CANCEL);
    expect(client.rstCode).toBe(h2.NGHTTP2_CANCEL);
  });

  it('a stream nobody listens to for errors survives its own reset with an error code', async () => {
    const { client, server } = await openStream();
    // No 'error' listener on `client`: Node's ERR_HTTP2_STREAM_ERROR for this side's own reset
    // would be thrown (an uncaught exception fails the run).
    const seen = closedWith(server);
    const closed = new Promise((resolve) => client.once('close', resolve));
    resetStream(client, h2.NGHTTP2_CONNECT_ERROR);
    expect(await seen).toBe(h2.NGHTTP2_CONNECT_ERROR);
    await closed;
    expect(client.destroyed).toBe(true);
  });
});
