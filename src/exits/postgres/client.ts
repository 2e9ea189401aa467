// The client's whole job for one local postgres connection (`ciport exec`): authenticate the
// application with the one-time password, open a tunnel stream, send the startup frame, and
// relay. A CancelRequest gets a stream of its own that carries only the frame.
import type { Duplex } from 'node:stream';
import { CiportError } from '../../errors/index.js';
import { sendErrorAndClose } from './errors.js';
import { type AcceptPgClientOptions, acceptPgClient } from './frontend.js';
import { type RelayResult, relayPg } from './relay.js';
import { encodeStartupFrame, type PgStartup } from './startup-wire.js';

export interface PgClientOptions extends AcceptPgClientOptions {
  /** Open one tunnel stream to the exit (an HTTP/2 CONNECT stream in the product). */
  openTunnel: (kind: PgStartup['kind']) => Promise<Duplex>;
  /** How long opening the tunnel may take (default 15 s). */
  tunnelTimeoutMs?: number | undefined;
  /** How long a forwarded cancel may take before the application's socket is closed (5 s). */
  cancelTimeoutMs?: number | undefined;
}

export type PgClientResult = { kind: 'cancel' } | ({ kind: 'session' } & RelayResult);

/**
 * Serve one accepted local socket. Rejects (after the application got an ErrorResponse) when
 * the handshake fails or the tunnel cannot be opened; resolves when the connection is over.
 */
export async function servePgClientConnection(
  socket: Duplex,
  opts: PgClientOptions,
): Promise<PgClientResult> {
  const startup = await acceptPgClient(socket, opts);
  let tunnel: Duplex;
  try {
    tunnel = await withTimeout(opts.openTunnel(startup.kind), opts.tunnelTimeoutMs ?? 15_000);
  } catch (err) {
    await sendErrorAndClose(socket, err);
    throw err;
  }
  tunnel.write(encodeStartupFrame(startup));
  if (startup.kind === 'cancel') {
    // The exit ends the stream once it has acted; the application waits for our close.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, opts.cancelTimeoutMs ?? 5000);
      timer.unref();
      tunnel.on('error', () => resolve());
      tunnel.on('close', () => resolve());
      tunnel.on('end', () => resolve());
      tunnel.resume();
      tunnel.end();
    });
    tunnel.destroy();
    socket.on('error', () => {});
    socket.end();
    socket.resume();
    return { kind: 'cancel' };
  }
  const result = await relayPg(socket, tunnel, { resetAppAfterGoodbye: true });
  return { kind: 'session', ...result };
}

/** The tunnel, or CIPORT_E_GATEWAY_UNREACHABLE after `ms`; a tunnel that opens late is closed. */
function withTimeout(opening: Promise<Duplex>, ms: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      reject(new CiportError('CIPORT_E_GATEWAY_UNREACHABLE', `no tunnel stream to the exit within ${ms} ms`));
    }, ms);
    opening.then(
      (tunnel) => {
        clearTimeout(timer);
        if (late) tunnel.destroy();
        else resolve(tunnel);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
