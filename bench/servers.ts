// Targets for the tunnel benchmark, run in their own process so they do not share an event
// loop with the load generator: an echo server (round trips) and a sink (bulk upload) that
// answers with the byte count when the sender half-closes.
import { createServer } from 'node:net';

function listen(handler: Parameters<typeof createServer>[1]): Promise<number> {
  const server = createServer({ noDelay: true }, handler);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
}

const echo = await listen((socket) => {
  socket.on('error', () => socket.destroy());
  socket.pipe(socket);
});
const sink = await listen((socket) => {
  let bytes = 0;
  socket.on('data', (b: Buffer) => {
    bytes += b.length;
  });
  socket.on('end', () => socket.end(`${bytes}\n`));
  socket.on('error', () => socket.destroy());
});
process.stdout.write(`${JSON.stringify({ echo, sink })}\n`);
