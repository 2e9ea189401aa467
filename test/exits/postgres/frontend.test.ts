// The local listener's side of the handshake, against raw sockets and node-postgres (no server).
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { CiportError } from '../../../src/errors/index.js';
import { servePgClientConnection } from '../../../src/exits/postgres/client.js';
import {
  type AcceptPgClientOptions,
  acceptPgClient,
  type PgStartup,
} from '../../../src/exits/postgres/frontend.js';
import {
  authenticationOk,
  backendKeyData,
  decodeBackend,
  parameterStatus,
  readyForQuery,
  startupMessage,
} from '../../../src/exits/postgres/messages.js';

const OTP = 'otp_0123456789abcdef0123456789abcdef';
let server: Server | undefined;

afterEach(() => {
  server?.close();
  server = undefined;
});

interface Accepted {
  port: number;
  result: Promise<{ socket: Socket; outcome: PgStartup | Error }>;
}

async function listener(opts: Partial<AcceptPgClientOptions> = {}): Promise<Accepted> {
  let deliver!: (v: { socket: Socket; outcome: PgStartup | Error }) => void;
  const result = new Promise<{ socket: Socket; outcome: PgStartup | Error }>((r) => {
    deliver = r;
  });
  server = createServer((socket) => {
    acceptPgClient(socket, { password: OTP, ...opts }).then(
      (outcome) => deliver({ socket, outcome }),
      (outcome: Error) => deliver({ socket, outcome }),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as { port: number }).port, result };
}

/** Connect, send `bytes`, return everything received until the server closes (or `ms`). */
async function exchange(port: number, bytes: (Buffer | number)[], ms = 3000): Promise<Buffer> {
  const s = connect(port, '127.0.0.1');
  await once(s, 'connect');
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  for (const b of bytes) {
    if (typeof b === 'number') await new Promise((r) => setTimeout(r, b));
    else s.write(b);
  }
  await Promise.race([once(s, 'close'), new Promise((r) => setTimeout(r, ms))]);
  s.destroy();
  return Buffer.concat(got);
}

/** Split typed backend messages. */
function messages(buf: Buffer): { type: string; body: Buffer; raw: Buffer }[] {
  const out = [];
  let i = 0;
  while (i + 5 <= buf.length) {
    const len = buf.readInt32BE(i + 1);
    out.push({
      type: String.fromCharCode(buf[i] as number),
      body: buf.subarray(i + 5, i + 1 + len),
      raw: buf.subarray(i, i + 1 + len),
    });
    i += 1 + len;
  }
  return out;
}

function errorOf(buf: Buffer) {
  const e = messages(buf).find((m) => m.type === 'E');
  if (!e) throw new Error(`no ErrorResponse in ${buf.toString('latin1')}`);
  return decodeBackend(e) as unknown as { code: string; message: string; severity: string };
}

const int32 = (...ns: number[]) => {
  const b = Buffer.alloc(4 * ns.length);
  ns.forEach((n, i) => {
    b.writeInt32BE(n, 4 * i);
  });
  return b;
};

describe('acceptPgClient', () => {
  it('answers SSLRequest and GSSENCRequest with N, then asks for SCRAM-SHA-256 only', async () => {
    const { port } = await listener();
    const steps = [int32(8, 80877103), 50, int32(8, 80877104), 50, startupMessage({ user: 'app' })];
    const got = await exchange(port, steps, 300);
    expect(got.subarray(0, 2).toString()).toBe('NN');
    const [auth] = messages(got.subarray(2));
    expect(auth?.type).toBe('R');
    expect(auth?.body.readInt32BE(0)).toBe(10);
    expect(auth?.body.subarray(4).toString()).toBe('SCRAM-SHA-256\0\0');
  });

  it('refuses bytes sent before the answer to an SSLRequest (injection guard)', async () => {
    const { port } = await listener();
    const got = await exchange(port, [Buffer.concat([int32(8, 80877103), startupMessage({ user: 'app' })])]);
    expect(errorOf(got).message).toContain('data received after an encryption request');
  });

  it('returns a CancelRequest as such', async () => {
    const { port, result } = await listener();
    void exchange(port, [int32(16, 80877102, 4242, -99)], 200);
    const { outcome } = await result;
    expect(outcome).toEqual({ kind: 'cancel', processId: 4242, secretKey: -99 });
  });

  it('refuses protocol 2.0 with ErrorResponse 0A000', async () => {
    const { port, result } = await listener();
    const got = await exchange(port, [Buffer.concat([int32(8 + 4, 0x20000), Buffer.from('u\0\0\0')])]);
    const err = errorOf(got);
    expect(err.code).toBe('0A000');
    expect(err.message).toContain('CIPORT_E_PG_PROTOCOL');
    expect(err.message).toContain('unsupported frontend protocol 2.0');
    expect((await result).outcome).toBeInstanceOf(Error);
  });

  it('answers protocol 3.2 and _pq_ options with NegotiateProtocolVersion (3.0)', async () => {
    const { port } = await listener();
    const s = startupMessage({ user: 'app', '_pq_.compression': 'on' });
    s.writeInt32BE((3 << 16) | 2, 4);
    const got = await exchange(port, [s], 300);
    const [v, r] = messages(got);
    expect(v?.type).toBe('v');
    expect(v?.body.readInt32BE(0)).toBe(0);
    expect(v?.body.readInt32BE(4)).toBe(1);
    expect(v?.body.subarray(8).toString()).toBe('_pq_.compression\0');
    expect(r?.type).toBe('R');
  });

  it('refuses replication connections, a missing user and a user other than the exported one', async () => {
    let l = await listener();
    expect(
      errorOf(await exchange(l.port, [startupMessage({ user: 'app', replication: 'database' })])).code,
    ).toBe('0A000');
    server?.close();
    l = await listener();
    expect(errorOf(await exchange(l.port, [startupMessage({ database: 'x' })])).code).toBe('28000');
    server?.close();
    l = await listener({ user: 'app' });
    const err = errorOf(await exchange(l.port, [startupMessage({ user: 'postgres' })]));
    expect(err.code).toBe('28000');
    expect(err.message).toBe('CIPORT_E_PG_AUTH: this port accepts user "app" only, not "postgres"');
  });

  it('refuses an oversized startup packet and a foreign SASL mechanism', async () => {
    let l = await listener();
    expect(errorOf(await exchange(l.port, [int32(100_000, 196608)])).code).toBe('08P01');
    server?.close();
    l = await listener();
    const got = await exchange(l.port, [
      startupMessage({ user: 'app' }),
      serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256-PLUS', 'p=tls-server-end-point,,n=,r=abc'),
    ]);
    expect(errorOf(got).message).toContain('invalid SASL authentication mechanism');
  });

  it('never hangs on a silent application', async () => {
    const { port, result } = await listener({ timeoutMs: 200 });
    const started = Date.now();
    const got = await exchange(port, [startupMessage({ user: 'app' }).subarray(0, 6)], 3000);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(errorOf(got).code).toBe('08006');
    expect(((await result).outcome as unknown as { code: string }).code).toBe('CIPORT_E_PG_PROTOCOL');
  });

  it('authenticates node-postgres with SCRAM and leaves AuthenticationOk to the exit', async () => {
    const { port, result } = await listener({ user: 'app' });
    const client = new pg.Client({
      host: '127.0.0.1',
      port,
      user: 'app',
      password: OTP,
      database: 'appdb',
      application_name: 'unit',
    });
    const connected = client.connect();
    const { socket, outcome } = await result;
    expect(outcome).toEqual({
      kind: 'startup',
      params: expect.objectContaining({ user: 'app', database: 'appdb', application_name: 'unit' }),
    });
    // What the exit would relay from the real server.
    socket.resume();
    socket.write(
      Buffer.concat([
        authenticationOk(),
        parameterStatus('server_version', '15.0'),
        backendKeyData(7, 8),
        readyForQuery(),
      ]),
    );
    await connected; // node-postgres verified our SCRAM server signature
    expect((client as unknown as { processID: number }).processID).toBe(7);
    socket.destroy();
    await client.end().catch(() => {});
  });

  it('refuses a wrong one-time password with 28P01 and closes', async () => {
    const { port, result } = await listener();
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'app', password: 'guess', database: 'x' });
    const err = (await client.connect().catch((e: unknown) => e)) as {
      code: string;
      message: string;
      hint?: string;
    };
    expect(err.code).toBe('28P01');
    expect(err.message).toBe('CIPORT_E_PG_AUTH: password authentication failed for user "app"');
    expect(err.hint).toContain('one-time password');
    const { socket, outcome } = await result;
    expect((outcome as unknown as { code: string }).code).toBe('CIPORT_E_PG_AUTH');
    if (!socket.destroyed) await once(socket, 'close');
  });
});

describe('servePgClientConnection', () => {
  async function clientListener(openTunnel: () => Promise<never>) {
    server = createServer((socket) => {
      servePgClientConnection(socket, { password: OTP, openTunnel, tunnelTimeoutMs: 300 }).catch(() => {});
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return (server.address() as { port: number }).port;
  }
  const connectErr = async (port: number) => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'app', password: OTP, database: 'x' });
    return (await c.connect().catch((e: unknown) => e)) as { code: string; message: string };
  };

  it('tells the application when the tunnel does not open in time', async () => {
    const port = await clientListener(() => new Promise<never>(() => {}));
    const started = Date.now();
    const err = await connectErr(port);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(err.code).toBe('08001');
    expect(err.message).toBe('CIPORT_E_GATEWAY_UNREACHABLE: no tunnel stream to the exit within 300 ms');
  });

  it('passes a gateway refusal on as an ErrorResponse with its code', async () => {
    const port = await clientListener(() =>
      Promise.reject(new CiportError('CIPORT_E_SESSION_ENDED', 'the session has ended (ttl)')),
    );
    const err = await connectErr(port);
    expect(err.code).toBe('08004');
    expect(err.message).toBe('CIPORT_E_SESSION_ENDED: the session has ended (ttl)');
  });
});
