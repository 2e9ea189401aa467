// One local connection on the client (src/client/local-connection.ts) settles exactly once, with
// one reason and the bytes both ways, and is the one place that tears down its socket and its
// tunnel stream; the listener (src/client/tunnel.ts) reports from that one settlement. Against a
// real HTTP/2 server on loopback (h2c) and real TCP sockets.
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  constants as h2,
  connect as h2connect,
  createServer as h2server,
  type ServerHttp2Stream,
} from 'node:http2';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type ConnectionStats, LocalConnection, resetReason } from '../../src/client/local-connection.js';
import { TargetListener } from '../../src/client/tunnel.js';
import { resetStream } from '../../src/transport/h2.js';
import { waitFor } from '../fixtures/wait-for.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

/**
 * A stand-in gateway: answers every CONNECT with 200 and hands the stream to `serve`; each stream
 * is kept, with the RST_STREAM code it closed with once it has.
 */
async function gateway(serve: (stream: ServerHttp2Stream) => void = () => {}) {
  const server = h2server();
  const streams: ServerHttp2Stream[] = [];
  server.on('stream', (stream) => {
    streams.push(stream);
    stream.on('error', () => {});
    stream.respond({ ':status': 200 });
    serve(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const session: ClientHttp2Session = h2connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  cleanups.push(() => {
    session.destroy();
    server.close();
  });
  const open = async (): Promise<ClientHttp2Stream> => {
    const stream = session.request({ ':method': 'CONNECT', ':authority': 'svc:443' });
    await new Promise((resolve, reject) => {
      stream.once('response', resolve);
      stream.once('error', reject);
    });
    return stream;
  };
  /** The n-th stream the gateway got, once it closed: its RST_STREAM code (0: a clean close). */
  const closedWith = (n: number) =>
    waitFor(() => {
      const s = streams[n];
      return s?.closed && s.destroyed ? { code: s.rstCode } : undefined;
    });
  return { open, streams, closedWith };
}

/** An application's socket connected to a local port, and the socket the port accepted. */
async function accepted(): Promise<{ app: Socket; local: Socket }> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const got = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const app = connect((server.address() as AddressInfo).port, '127.0.0.1');
  app.on('error', () => {});
  const local = await got;
  cleanups.push(() => {
    app.destroy();
    local.destroy();
    server.close();
  });
  return { app, local };
}

/** A connection whose settlements are recorded (a second one is the failure these tests look for). */
function tracked(local: Socket) {
  const settled: ConnectionStats[] = [];
  const conn = new LocalConnection(local, { id: 1, target: 'svc', onSettle: (s) => settled.push(s) });
  return { conn, settled };
}

/** A gateway that echoes what it gets. */
function echo(stream: ServerHttp2Stream): void {
  stream.on('data', (c: Buffer) => stream.write(c));
}

/** A connection relaying to an echoing gateway, one round trip done. */
async function echoing() {
  const gw = await gateway(echo);
  const { app, local } = await accepted();
  const { conn, settled } = tracked(local);
  const stream = await gw.open();
  conn.relay(stream);
  app.write('ping');
  await new Promise((resolve) => app.once('data', resolve));
  return { gw, app, local, conn, settled, stream, gatewayStream: gw.streams[0] as ServerHttp2Stream };
}

/** Everything that could still settle it has happened: both ends closed, queued work run. */
async function quiet(local: Socket, stream?: ClientHttp2Stream): Promise<void> {
  await waitFor(() => local.destroyed && (!stream || (stream.closed && stream.destroyed)));
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setTimeout(resolve, 50));
}

/** What the application got: the bytes, and whether its socket ended cleanly or was reset. */
function received(app: Socket): Promise<{ bytes: number; end: 'fin' | 'reset' }> {
  return new Promise((resolve) => {
    let bytes = 0;
    let end: 'fin' | 'reset' = 'fin';
    app.on('data', (c: Buffer) => {
      bytes += c.length;
    });
    app.on('error', () => {
      end = 'reset';
    });
    app.on('close', () => resolve({ bytes, end }));
  });
}

describe('LocalConnection', () => {
  it('counts the bytes both ways and settles once, cleanly, when both halves end', async () => {
    const up = 300_000;
    const down = 70_001;
    let gatewayGot = 0;
    const gw = await gateway((stream) => {
      stream.on('data', (c: Buffer) => {
        gatewayGot += c.length;
      });
      stream.on('end', () => stream.end(Buffer.alloc(down, 7)));
    });
    const { app, local } = await accepted();
    const { conn, settled } = tracked(local);
    const stream = await gw.open();
    const got = received(app);
    conn.relay(stream);
    app.end(Buffer.alloc(up, 1));
    expect(await got).toEqual({ bytes: down, end: 'fin' });
    await quiet(local, stream);
    expect(settled).toHaveLength(1);
    expect(settled[0]).toMatchObject({ id: 1, target: 'svc', sent: up, received: down, error: undefined });
    expect(settled[0]?.farReset).toBeUndefined();
    expect(gatewayGot).toBe(up);
    expect((await gw.closedWith(0)).code).toBe(h2.NGHTTP2_NO_ERROR);
  });

  it('a greeting reaches the application first and counts as received', async () => {
    const gw = await gateway((stream) => {
      stream.resume();
      stream.end('PONG');
    });
    const { app, local } = await accepted();
    const { conn, settled } = tracked(local);
    const stream = await gw.open();
    const chunks: Buffer[] = [];
    app.on('data', (c: Buffer) => chunks.push(c));
    conn.relay(stream, Buffer.from('+OK\r\n'));
    app.end();
    await quiet(local, stream);
    expect(Buffer.concat(chunks).toString()).toBe('+OK\r\nPONG');
    expect(settled).toHaveLength(1);
    expect(settled[0]).toMatchObject({ sent: 0, received: 9, error: undefined });
  });

  it('an application that fails settles it once as its own failure; the gateway reads CANCEL', async () => {
    const { gw, app, local, settled, stream } = await echoing();
    // The app resets its connection: the local socket fails with ECONNRESET.
    app.resetAndDestroy();
    await quiet(local, stream);
    expect(settled).toHaveLength(1);
    expect(settled[0]?.error).toMatch(/^application socket: /);
    expect(settled[0]?.farReset).toBeUndefined();
    // Not INTERNAL_ERROR (a pipeline passing the socket's error on), which the gateway would
    // audit as a failure and this side would read as the gateway's.
    expect((await gw.closedWith(0)).code).toBe(h2.NGHTTP2_CANCEL);
  });

  it("a far-side reset settles it once with the reset's reason; the application gets a reset, not a FIN", async () => {
    const gw = await gateway((stream) =>
      stream.once('data', () => resetStream(stream, h2.NGHTTP2_ENHANCE_YOUR_CALM)),
    );
    const { app, local } = await accepted();
    const { conn, settled } = tracked(local);
    const stream = await gw.open();
    const got = received(app);
    conn.relay(stream);
    app.write('x');
    expect((await got).end).toBe('reset');
    await quiet(local, stream);
    expect(settled).toHaveLength(1);
    expect(settled[0]?.error).toBe(resetReason(h2.NGHTTP2_ENHANCE_YOUR_CALM));
    expect(settled[0]?.farReset).toBe(h2.NGHTTP2_ENHANCE_YOUR_CALM);
    expect(settled[0]?.sent).toBe(1);
  });

  it('a socket error and a stream reset racing: settled once, with one of the two reasons', async () => {
    for (let round = 0; round < 12; round++) {
      const { app, local, settled, stream, gatewayStream } = await echoing();
      // Both at once, in an order that varies: the gateway resets, the application resets.
      if (round % 2 === 0) {
        resetStream(gatewayStream, h2.NGHTTP2_CONNECT_ERROR);
        app.resetAndDestroy();
      } else {
        app.resetAndDestroy();
        resetStream(gatewayStream, h2.NGHTTP2_CONNECT_ERROR);
      }
      await quiet(local, stream);
      expect(settled).toHaveLength(1);
      const error = settled[0]?.error ?? '';
      const mine = error.startsWith('application socket: ');
      expect(mine || error === resetReason(h2.NGHTTP2_CONNECT_ERROR), error).toBe(true);
      // The reason and the far-side mark agree.
      expect(settled[0]?.farReset).toBe(mine ? undefined : h2.NGHTTP2_CONNECT_ERROR);
    }
  });

  it('an application gone before its tunnel opened: the stream is reset when it arrives', async () => {
    const gw = await gateway();
    const { app, local } = await accepted();
    const { conn, settled } = tracked(local);
    app.end();
    local.resume();
    local.destroy();
    await waitFor(() => local.destroyed);
    const stream = await gw.open();
    conn.relay(stream);
    await quiet(local, stream);
    expect(settled).toHaveLength(1);
    expect(settled[0]?.error).toBe('the application closed the connection first');
    expect((await gw.closedWith(0)).code).toBe(h2.NGHTTP2_CANCEL);
  });

  it('settled before its tunnel opened (the port closed): attach refuses the stream and resets it', async () => {
    const gw = await gateway();
    const { app, local } = await accepted();
    const { conn, settled } = tracked(local);
    const closedApp = received(app);
    conn.close('the port closed');
    const stream = await gw.open();
    expect(conn.attach(stream)).toBe(false);
    conn.relay(stream);
    await closedApp;
    await quiet(local, stream);
    expect(settled).toEqual([expect.objectContaining({ error: 'the port closed', sent: 0, received: 0 })]);
    expect((await gw.closedWith(0)).code).toBe(h2.NGHTTP2_CANCEL);
  });

  it('closing it while the relay runs resets the stream and closes the socket, once', async () => {
    const { gw, local, conn, settled, stream } = await echoing();
    conn.close('the port closed');
    conn.abort('too late');
    conn.close();
    await quiet(local, stream);
    expect(settled).toHaveLength(1);
    expect(settled[0]).toMatchObject({ error: 'the port closed', sent: 4, received: 4 });
    expect(settled[0]?.farReset).toBeUndefined();
    expect((await gw.closedWith(0)).code).toBe(h2.NGHTTP2_CANCEL);
  });
});

describe('TargetListener reports from the one settlement', () => {
  async function listening(serve: (stream: ServerHttp2Stream) => void) {
    const gw = await gateway(serve);
    const warnings: string[] = [];
    const infos: string[] = [];
    const trouble: Array<number | undefined> = [];
    const l = await TargetListener.listen({
      target: 'svc',
      port: 0,
      log: { verbose: false, warn: (m) => warnings.push(m), info: (m) => infos.push(m) },
      open: gw.open,
      onTrouble: (status) => trouble.push(status),
    });
    cleanups.push(() => void l.close());
    const app = connect(l.port, '127.0.0.1');
    app.on('error', () => {});
    return { gw, l, app, warnings, trouble };
  }

  it('an application that resets its connection: no warning, no session check', async () => {
    const { gw, l, app, warnings, trouble } = await listening(echo);
    app.write('ping');
    await new Promise((resolve) => app.once('data', resolve));
    app.resetAndDestroy();
    await waitFor(() => l.totals.connections === 1);
    expect((await gw.closedWith(0)).code).toBe(h2.NGHTTP2_CANCEL);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(warnings).toEqual([]);
    expect(trouble).toEqual([]);
    expect(l.activeConnections).toBe(0);
  });

  it('a gateway reset: one line and one session check for the connection', async () => {
    const { l, app, warnings, trouble } = await listening((stream) =>
      stream.once('data', () => resetStream(stream, h2.NGHTTP2_CANCEL)),
    );
    app.write('x');
    await waitFor(() => l.totals.connections === 1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(trouble).toEqual([undefined]);
    expect(warnings).toEqual([`svc: connection 1 closed: ${resetReason(h2.NGHTTP2_CANCEL)}`]);
    expect(l.totals).toMatchObject({ connections: 1, sent: 1, received: 0 });
  });

  it('closing the listener settles an open connection once, as the port closing', async () => {
    const { gw, l, app, warnings, trouble } = await listening(echo);
    app.write('ping');
    await new Promise((resolve) => app.once('data', resolve));
    await l.close();
    expect((await gw.closedWith(0)).code).toBe(h2.NGHTTP2_CANCEL);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(l.totals).toMatchObject({ connections: 1, sent: 4, received: 4 });
    expect(l.activeConnections).toBe(0);
    expect(warnings).toEqual([]);
    expect(trouble).toEqual([]);
  });
});
