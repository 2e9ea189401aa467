// Serve one request through an aws exit over a real loopback socket pair (the host's stream in
// production is an HTTP/2 stream; the exit only needs a Duplex): the raw answer and the outcome.
import { connect, createServer, type Socket } from 'node:net';
import type { ExitConnection, StreamExit } from '../../../src/exits/contract.js';

export async function serveOnce(
  exit: StreamExit,
  bytes: string,
  connection: Partial<ExitConnection> = {},
): Promise<{ answer: string; outcome: unknown }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const client = connect((server.address() as { port: number }).port, '127.0.0.1');
  const side = await accepted;
  server.close();
  let answer = '';
  client.on('data', (c) => {
    answer += c.toString();
  });
  const ended = new Promise<void>((r) => client.on('close', () => r()));
  client.write(bytes);
  const outcome = await exit
    .serve(side, { session: { id: 'ses_test' }, signal: new AbortController().signal, ...connection })
    .catch((err: unknown) => err);
  await ended;
  return { answer, outcome };
}
