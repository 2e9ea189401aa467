// A port end to end on the client side, in process, against the fake gateway over real TLS +
// HTTP/2 and real upstream sockets: data integrity, half-close, session end under the port.
import { createHash, randomBytes } from 'node:crypto';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Port, stderrLog } from '../../src/client/port.js';
import { CiportError } from '../../src/errors/index.js';
import { FakeGateway } from '../fixtures/fake-gateway.js';
import { waitFor } from '../fixtures/wait-for.js';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

let echo: Server;
let digest: Server;
let gw: FakeGateway;
const ports: Port[] = [];

/** Echo server. */
async function listen(handler: (s: Socket) => void): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}
const addr = (s: Server) => `127.0.0.1:${(s.address() as AddressInfo).port}`;

beforeAll(async () => {
  echo = await listen((s) => s.pipe(s));
  // Reads to the end, then answers with the SHA-256 of what it got and the byte count.
  digest = await listen((s) => {
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (c: Buffer) => {
      h.update(c);
      n += c.length;
    });
    s.on('end', () => s.end(`${h.digest('hex')} ${n}`));
  });
  gw = await FakeGateway.start({
    targets: [
      { name: 'echo', protocol: 'tcp', address: addr(echo) },
      { name: 'digest', protocol: 'tcp', address: addr(digest) },
      { name: 'pg', protocol: 'postgres', address: addr(echo), database: 'app' },
      { name: 'gone', protocol: 'tcp', address: '127.0.0.1:1' },
    ],
    tokens: { good: { allow: ['echo', 'digest', 'pg', 'gone'] } },
    heartbeatIntervalMs: 100,
  });
});

afterEach(async () => {
  await Promise.all(ports.splice(0).map((p) => p.close()));
});

afterAll(async () => {
  await gw.close();
  echo.close();
  digest.close();
});

async function openPort(
  targets: string[],
  extra: { gateway?: FakeGateway; log?: Capture; verbose?: boolean } = {},
) {
  const log = extra.log ?? new Capture();
  const via = extra.gateway ?? gw;
  const port = await Port.open({
    env: { CIPORT_ID_TOKEN: 'good', CIPORT_CA_FILE: via.caFile },
    gateway: via.url,
    targets: targets.map((t) => {
      const [name, p] = t.split(':');
      return { name: name as string, port: Number(p ?? 0) };
    }),
    log: stderrLog(log, extra.verbose ?? false),
  });
  ports.push(port);
  return { port, log };
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Send `data`, half-close, and collect the full answer. */
function exchange(port: number, data: Buffer): Promise<Buffer> {
  return dial(port).then(
    (s) =>
      new Promise((resolve, reject) => {
        const chunks: Buffer[] = [];
        s.on('data', (c: Buffer) => chunks.push(c));
        s.on('end', () => resolve(Buffer.concat(chunks)));
        s.on('error', reject);
        s.end(data);
      }),
  );
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('Port', () => {
  it('exports the local address of each target and tunnels bytes both ways', async () => {
    const { port } = await openPort(['echo', 'pg']);
    const p = Number(port.env.CIPORT_ECHO_PORT);
    expect(port.env.CIPORT_ECHO_HOST).toBe('127.0.0.1');
    expect(port.env.CIPORT_ECHO_URL).toBe(`tcp://127.0.0.1:${p}`);
    expect(port.env.DATABASE_URL).toBe(`postgres://127.0.0.1:${port.env.CIPORT_PG_PORT}/app`);
    expect(port.env.PGDATABASE).toBe('app');
    expect((await exchange(p, Buffer.from('hello'))).toString()).toBe('hello');
  });

  it('keeps 16 MiB intact in each direction, across 8 concurrent connections', async () => {
    const { port } = await openPort(['echo']);
    const p = Number(port.env.CIPORT_ECHO_PORT);
    const payloads = Array.from({ length: 8 }, () => randomBytes(2 << 20));
    const answers = await Promise.all(payloads.map((b) => exchange(p, b)));
    expect(answers.map(sha)).toEqual(payloads.map(sha));
  });

  it('carries a half-close: the upstream answers after the app stopped sending', async () => {
    const { port } = await openPort(['digest']);
    const data = randomBytes(300_000);
    const answer = (await exchange(Number(port.env.CIPORT_DIGEST_PORT), data)).toString();
    expect(answer).toBe(`${sha(data)} ${data.length}`);
  });

  /** A fake gateway whose one target records when its upstream connections end. */
  async function trackedGateway() {
    const upstreamClosed: number[] = [];
    const tracked = await listen((u) => {
      u.on('data', (c: Buffer) => u.write(c));
      u.on('error', () => {});
      u.once('end', () => {
        if (!u.destroyed) u.destroy();
        upstreamClosed.push(Date.now());
      });
    });
    const local = await FakeGateway.start({
      targets: [{ name: 'tracked', protocol: 'tcp', address: addr(tracked) }],
      tokens: { good: { allow: ['tracked'] } },
    });
    const { port } = await openPort(['tracked'], { gateway: local });
    const s = await dial(Number(port.env.CIPORT_TRACKED_PORT));
    s.on('error', () => {});
    s.write('hello');
    await new Promise((resolve) => s.once('data', resolve));
    const done = async () => {
      await Promise.all(ports.splice(0).map((p) => p.close()));
      await local.close();
      tracked.close();
    };
    return { port, s, upstreamClosed, done };
  }

  it('an app that resets its connection: the stream is reset and the upstream closes', async () => {
    const { s, upstreamClosed, done } = await trackedGateway();
    try {
      const resetAt = Date.now();
      s.resetAndDestroy();
      await waitFor(() => upstreamClosed.length === 1, 2000);
      expect((upstreamClosed[0] as number) - resetAt).toBeLessThan(1000);
    } finally {
      await done();
    }
  });

  it('closing a listener resets its streams, so the gateway closes the upstreams at once', async () => {
    const { port, upstreamClosed, done } = await trackedGateway();
    try {
      const closedAt = Date.now();
      // The listener only: the session stays active, so only the RST_STREAM can tell the gateway.
      await port.listeners[0]?.close();
      await waitFor(() => upstreamClosed.length === 1, 2000);
      expect((upstreamClosed[0] as number) - closedAt).toBeLessThan(1000);
    } finally {
      await done();
    }
  });

  it('heartbeats at the interval the gateway gave', async () => {
    const { port } = await openPort(['echo']);
    await sleep(550);
    const beats = gw.sessions.get(port.session.id)?.heartbeats ?? 0;
    expect(beats).toBeGreaterThanOrEqual(3);
    expect(beats).toBeLessThanOrEqual(7);
  });

  it('close() ends the session, cuts connections and stops listening', async () => {
    const { port } = await openPort(['echo']);
    const p = Number(port.env.CIPORT_ECHO_PORT);
    const s = await dial(p);
    // The app sees the end of its connection (half-open sockets see 'end' first).
    const closed = new Promise((resolve) => {
      s.once('end', resolve);
      s.once('close', resolve);
    });
    s.on('error', () => {});
    s.resume();
    s.write('x');
    await sleep(100);
    await port.close();
    await closed;
    expect(gw.sessions.get(port.session.id)?.endReason).toBe('client_end');
    await expect(dial(p)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('a session ended by the gateway cuts live connections and says why', async () => {
    const { port, log } = await openPort(['echo']);
    const p = Number(port.env.CIPORT_ECHO_PORT);
    const s = await dial(p);
    s.on('error', () => {});
    s.write('ping');
    await new Promise((resolve) => s.once('data', resolve));
    s.resume();
    const closed = new Promise((resolve) => {
      s.once('end', resolve);
      s.once('close', resolve);
    });
    const started = Date.now();
    gw.end(port.session.id, 'revoked');
    await closed;
    expect(Date.now() - started).toBeLessThan(1000);
    const end = await port.ended;
    expect(end.reason).toBe('revoked');
    expect(log.text).toMatch(/^ciport: session ended: revoked by an operator \(revoked\)$/m);
    await expect(dial(p)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('an unreachable target: the app sees its socket closed and one warning explains it', async () => {
    const { port, log } = await openPort(['gone']);
    const p = Number(port.env.CIPORT_GONE_PORT);
    for (let i = 0; i < 3; i++) {
      const s = await dial(p);
      s.on('error', () => {});
      s.resume();
      await new Promise((resolve) => s.once('close', resolve));
    }
    const lines = log.text.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/gone: connection refused by the gateway \(502 CIPORT_E_UPSTREAM_UNREACHABLE\)/);
  });

  it('--verbose logs each connection with bytes, and never the secret or token', async () => {
    const log = new Capture();
    const { port } = await openPort(['echo'], { log, verbose: true });
    await exchange(Number(port.env.CIPORT_ECHO_PORT), Buffer.alloc(2048, 1));
    await port.close();
    expect(log.text).toMatch(/echo: connection 1 opened/);
    expect(log.text).toMatch(/echo: connection 1 closed \(sent 2\.0 KiB, received 2\.0 KiB/);
    expect(log.text).toMatch(/session ses_\w+ opened/);
    const secret = gw.sessions.get(port.session.id)?.secret as string;
    expect(log.text).not.toContain(secret);
    expect(log.text).not.toContain('good');
  });

  it('a local port that is taken: usage error, and the session is ended', async () => {
    const blocker = await listen(() => {});
    const taken = (blocker.address() as AddressInfo).port;
    const before = gw.count('DELETE', '/v1/sessions/');
    try {
      await expect(openPort([`echo:${taken}`])).rejects.toSatisfy(
        (e: unknown) =>
          e instanceof CiportError && e.code === 'CIPORT_E_USAGE' && /EADDRINUSE/.test(e.message),
      );
      expect(gw.count('DELETE', '/v1/sessions/')).toBe(before + 1);
    } finally {
      blocker.close();
    }
  });

  it('a gateway that stays away longer than the lease: the port ends itself', async () => {
    const lonely = await FakeGateway.start({
      targets: [{ name: 'echo', protocol: 'tcp', address: addr(echo) }],
      tokens: { good: { allow: ['echo'] } },
      heartbeatIntervalMs: 100,
      leaseTimeoutMs: 500,
    });
    const { port, log } = await openPort(['echo'], { gateway: lonely });
    await lonely.kill();
    const end = await Promise.race([port.ended, sleep(5000).then(() => undefined)]);
    expect(end?.reason).toBe('gateway_unreachable');
    expect(log.text).toMatch(/gateway stayed unreachable/);
  });
});
