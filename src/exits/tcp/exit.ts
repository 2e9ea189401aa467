// Protocol `tcp`: the exit opens a plain TCP connection to the target's address and the tunnel
// carries raw bytes; nothing is injected. Other protocols plug in with the same shape.
import { connect, type Socket } from 'node:net';
import { CiportError } from '../../errors/index.js';

export interface DialOptions {
  /** Give up connecting after this long. */
  timeoutMs: number;
  /** Abort the attempt (the session ended or the stream went away meanwhile). */
  signal?: AbortSignal | undefined;
}

/** `host:port` or `[v6]:port` into its parts. */
export function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(i + 1));
  return { host, port };
}

/**
 * Open a TCP connection to `address`. Resolves once connected, with the socket in paused,
 * half-open-capable mode so that the tunnel can forward each direction's end separately.
 * Rejects with CIPORT_E_UPSTREAM_UNREACHABLE (no address details beyond the target's own).
 */
export function dialTcp(address: string, options: DialOptions): Promise<Socket> {
  const { host, port } = splitHostPort(address);
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(unreachable(address, 'aborted'));
      return;
    }
    const socket = connect({ host, port, allowHalfOpen: true, noDelay: true });
    socket.pause();
    const timer = setTimeout(
      () => fail(new Error(`no connection within ${options.timeoutMs} ms`)),
      options.timeoutMs,
    );
    timer.unref();
    const onAbort = () => fail(new Error('aborted'));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    function cleanup() {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.removeListener('error', fail);
      socket.removeListener('connect', ok);
    }
    function fail(err: Error) {
      cleanup();
      socket.destroy();
      reject(unreachable(address, (err as NodeJS.ErrnoException).code ?? err.message));
    }
    function ok() {
      cleanup();
      socket.setKeepAlive(true, 30_000);
      resolve(socket);
    }
    socket.once('error', fail);
    socket.once('connect', ok);
  });
}

function unreachable(address: string, reason: string): CiportError {
  return new CiportError('CIPORT_E_UPSTREAM_UNREACHABLE', `cannot connect to ${address}: ${reason}`, {
    details: { reason },
  });
}
