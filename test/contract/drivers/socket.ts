// Node sockets as a job's application: connect to the port, send, read until a condition or the
// peer's end, and a held connection whose closing the cases watch.
import { connect, type Socket } from 'node:net';
import type { Held } from '../driver.js';

/** Connect to the port on 127.0.0.1; rejects when it is refused. */
export function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    // Not half-open: the port ending its side closes the connection, as for most clients.
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/**
 * Write `payload` (and end, when `end`), collect what comes back until `done(received)` holds or
 * the peer closes; rejects after `timeoutMs`.
 */
export function exchange(
  socket: Socket,
  payload: Buffer | string,
  options: { end?: boolean; done?: (received: Buffer) => boolean; timeoutMs?: number } = {},
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => finish(new Error('no answer in time')), options.timeoutMs ?? 10_000);
    const finish = (err?: Error) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (options.done?.(Buffer.concat(chunks, size))) finish();
    };
    const onClose = () => finish();
    const onError = (err: Error) => finish(err);
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.once('error', onError);
    if (options.end) socket.end(payload);
    else socket.write(payload);
  });
}

/** A socket as a Held connection. */
export function held(socket: Socket): Held {
  let closed = false;
  socket.once('close', () => {
    closed = true;
  });
  socket.on('error', () => {});
  return { closed: () => closed, release: () => socket.destroy() };
}
