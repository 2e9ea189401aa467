// The tcp target of the contract suite: an echo server on 127.0.0.1 that counts what the exit
// did to it (connections accepted and still open) and remembers, per connection, the first bytes
// and the SHA-256 of everything it received (so a test can tell the upstream saw the app's bytes
// unchanged, with nothing injected before them).
import { createHash, type Hash } from 'node:crypto';
import { type AddressInfo, createServer, type Socket } from 'node:net';

export interface EchoConnection {
  first: Buffer;
  received: number;
  /** SHA-256 (hex) of all bytes received, once the peer ended its side. */
  sha256: string | undefined;
}

export interface EchoServer {
  address: string;
  /** Connections accepted since start. */
  readonly accepted: number;
  /** Connections open now. */
  readonly open: number;
  connections: EchoConnection[];
  close(): Promise<void>;
}

export async function startEcho(): Promise<EchoServer> {
  const open = new Set<Socket>();
  const connections: EchoConnection[] = [];
  let accepted = 0;
  const server = createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    open.add(s);
    const seen: EchoConnection = { first: Buffer.alloc(0), received: 0, sha256: undefined };
    connections.push(seen);
    const hash: Hash = createHash('sha256');
    s.once('close', () => open.delete(s));
    s.on('error', () => {});
    s.on('data', (chunk: Buffer) => {
      if (seen.first.length < 64) seen.first = Buffer.concat([seen.first, chunk]).subarray(0, 64);
      seen.received += chunk.length;
      hash.update(chunk);
    });
    s.once('end', () => {
      seen.sha256 = hash.digest('hex');
    });
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    get accepted() {
      return accepted;
    },
    get open() {
      return open.size;
    },
    connections,
    close: () =>
      new Promise<void>((r) => {
        for (const s of open) s.destroy();
        server.close(() => r());
      }),
  };
}
