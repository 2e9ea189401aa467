// HOSTILE (r14): a webhook receiver (raw TCP, so it can break HTTP the way a real server never
// would) that tries to make the gateway advance a sink's cursor for a batch it did not take:
// a redirect to another receiver (or the metadata service), a 200 whose body is cut short, an
// endless stream of 103 Early Hints, a malformed answer, two answers in one. All held: none of
// them acknowledges anything, the cursor stays at 0, the gateway keeps serving, and once the
// receiver behaves it gets every event once, in chain order.
import { writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { onCleanup, openSessions, sinkGateway } from '../audit-sinks/harness.js';
import { waitFor } from '../fixtures/wait-for.js';
import { ADMIN_TOKEN, api, tempDir } from '../gateway/helpers.js';

type Mode = 'redirect' | 'cut' | 'early-hints' | 'garbage' | 'double' | 'ok';

class RawReceiver {
  mode: Mode = 'redirect';
  readonly seqs: number[] = [];
  requests = 0;
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;
  port = 0;

  async start(): Promise<void> {
    this.#server = createServer((s) => this.#serve(s));
    await new Promise<void>((r) => this.#server?.listen(0, '127.0.0.1', r));
    this.port = (this.#server.address() as { port: number }).port;
  }

  async stop(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise((r) => this.#server?.close(r));
  }

  #serve(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const length = Number(/content-length: *(\d+)/i.exec(buf.subarray(0, end).toString())?.[1] ?? 0);
      if (buf.length < end + 4 + length) return;
      this.requests++;
      this.#answer(socket, buf.subarray(end + 4, end + 4 + length).toString());
      buf = Buffer.alloc(0);
    });
  }

  #answer(socket: Socket, body: string): void {
    switch (this.mode) {
      case 'redirect':
        socket.end(
          'HTTP/1.1 307 Temporary Redirect\r\nlocation: http://169.254.169.254/latest/meta-data/\r\ncontent-length: 0\r\n\r\n',
        );
        return;
      case 'cut':
        socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789');
        setTimeout(() => socket.end(), 20);
        return;
      case 'early-hints': {
        const t = setInterval(
          () => socket.write('HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n'),
          5,
        );
        socket.once('close', () => clearInterval(t));
        return;
      }
      case 'garbage':
        socket.end('HTTP/1.1 200 OK\r\ncontent-length: -5\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n');
        return;
      case 'double':
        // A 500 for this batch, then a 200 "for" it in the same breath.
        socket.end(
          'HTTP/1.1 500 No\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n',
        );
        return;
      case 'ok':
        for (const e of JSON.parse(body) as { seq: number }[]) this.seqs.push(e.seq);
        socket.end('HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
        return;
    }
  }
}

describe('hostile: a webhook receiver that lies', () => {
  it('no lie acknowledges a batch; the cursor stays put; honest answers then get every event once', async () => {
    const receiver = new RawReceiver();
    await receiver.start();
    onCleanup(() => receiver.stop());
    const tmp = tempDir('ciport-hostile-webhook-');
    onCleanup(tmp.cleanup);
    const secretFile = join(tmp.dir, 'webhook.secret');
    writeFileSync(secretFile, 'whsec-hostile-0123456789\n', { mode: 0o600 });
    const h = await sinkGateway([
      {
        name: 'siem',
        kind: 'webhook',
        url: `http://127.0.0.1:${receiver.port}/audit`,
        secret: { file: secretFile },
        timeout: '300ms',
        batch: 5,
      },
    ]);
    await openSessions(h, 3);
    for (const mode of ['redirect', 'cut', 'early-hints', 'garbage', 'double'] as const) {
      receiver.mode = mode;
      const seen = receiver.requests;
      await waitFor(() => receiver.requests >= seen + 2, 10_000, `two attempts in mode ${mode}`);
      const [cursor] = await h.gateway.store.auditSinkCursors();
      expect(cursor?.seq, mode).toBe(0);
    }
    // The gateway still serves its API.
    const c = await h.client();
    expect((await api(c, 'GET', '/v1/sessions', { bearer: ADMIN_TOKEN })).status).toBe(200);
    receiver.mode = 'ok';
    const n = (await h.gateway.store.auditHead())?.seq ?? 0;
    await waitFor(() => receiver.seqs.length >= n, 10_000, 'every event');
    expect(receiver.seqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  });
});
