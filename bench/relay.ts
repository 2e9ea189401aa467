// A bare two-process `node:tls` relay, the runtime's own ceiling for a TLS tunnel (issue 11's
// bulk target is stated against it): no framing, no protocol, no audit, `pipe()` both ways.
//
//   node dist/bench/relay.js server CERT KEY TARGET_PORT...   TLS in, plain TCP to each target
//   node dist/bench/relay.js client CA SERVER_PORT...         plain TCP in, TLS to each server port
//
// Each listens on one free loopback port per argument and prints {"ports": [...]} when ready.
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, createServer as tlsCreateServer } from 'node:tls';

const LOOP = '127.0.0.1';

function join(a: Socket, b: Socket): void {
  a.setNoDelay(true);
  b.setNoDelay(true);
  a.pipe(b);
  b.pipe(a);
  const close = () => {
    a.destroy();
    b.destroy();
  };
  a.once('error', close);
  b.once('error', close);
  a.once('close', close);
  b.once('close', close);
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, LOOP, () => resolve((server.address() as { port: number }).port)),
  );
}

const [mode, ...args] = process.argv.slice(2);
const ports: number[] = [];
if (mode === 'server') {
  const [cert, key, ...targets] = args;
  const options = { cert: readFileSync(cert!), key: readFileSync(key!) };
  for (const target of targets) {
    ports.push(await listen(tlsCreateServer(options, (s) => join(s, connect(Number(target), LOOP)))));
  }
} else if (mode === 'client') {
  const [ca, ...servers] = args;
  const trust = readFileSync(ca!);
  for (const server of servers) {
    ports.push(
      await listen(
        createServer((s) =>
          join(
            s,
            // the certificate is pinned (it is its own CA), as stunnel's client does: no name check
            tlsConnect({ host: LOOP, port: Number(server), ca: trust, checkServerIdentity: () => undefined }),
          ),
        ),
      ),
    );
  }
} else {
  process.stderr.write('usage: relay.js server CERT KEY TARGET_PORT... | client CA SERVER_PORT...\n');
  process.exit(2);
}
process.stdout.write(`${JSON.stringify({ ports })}\n`);
