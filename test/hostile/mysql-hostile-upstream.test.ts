// A hostile (or impersonated) upstream: the exit reads the server's handshake before it has
// authenticated anything. A 16 MiB announcement, a malformed greeting or a greeting that never
// ends must fail fast with a bounded read, as an ERR to the application — never with the
// password, and never by buffering what the peer announces.
import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connectMysqlUpstream } from '../../src/exits/mysql/upstream.js';

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise<void>((r) => s.close(() => r()));
});

async function fakeUpstream(
  greet: (socket: Socket) => void,
): Promise<{ address: string; received: () => number }> {
  let received = 0;
  const server = createServer((socket) => {
    socket.on('data', (d: Buffer) => {
      received += d.length;
    });
    socket.on('error', () => {});
    greet(socket);
    setTimeout(() => socket.destroy(), 5_000).unref();
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { address: `127.0.0.1:${(server.address() as { port: number }).port}`, received: () => received };
}

const PASSWORD = 'hostile-upstream-must-not-see-this';

describe('mysql exit: a hostile upstream handshake', () => {
  it('a 16 MiB greeting announcement is refused before its payload is read', async () => {
    const up = await fakeUpstream((s) => {
      s.write(Buffer.from([0xff, 0xff, 0xff, 0x00]));
      // Some of the announced payload; the exit must not wait for the rest.
      s.write(Buffer.alloc(64 * 1024, 0x41));
    });
    const err = await connectMysqlUpstream({
      address: up.address,
      user: 'u',
      password: PASSWORD,
      timeoutMs: 3_000,
    }).then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    );
    expect(err?.code).toBe('CIPORT_E_MYSQL_PROTOCOL');
    expect(err?.message).not.toContain(PASSWORD);
    // Nothing was sent to it: no handshake response, no password proof.
    expect(up.received()).toBe(0);
  });

  it('a malformed greeting is a protocol error, and gets no handshake response', async () => {
    const up = await fakeUpstream((s) => {
      const payload = Buffer.from([10, 0x35, 0x2e, 0x35]); // protocol 10, "5.5" without NUL, then ends
      const head = Buffer.from([payload.length, 0, 0, 0]);
      s.write(Buffer.concat([head, payload]));
    });
    const err = await connectMysqlUpstream({
      address: up.address,
      user: 'u',
      password: PASSWORD,
      timeoutMs: 3_000,
    }).then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    );
    expect(err?.code).toBe('CIPORT_E_MYSQL_PROTOCOL');
    expect(up.received()).toBe(0);
  });
});
