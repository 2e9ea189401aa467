// The client's whole job for one local mysql connection (`ciport exec`): authenticate the
// application with the one-time password, open a tunnel stream, send the connect request, pass
// the exit's answer (the upstream's OK, or an ERR) to the application with the sequence id its
// handshake expects, and relay.
import type { Duplex } from 'node:stream';
import { CiportError, ERROR_CODES, type ErrorCode } from '../../errors/index.js';
import { encodeConnectFrame } from './connect-wire.js';
import { MysqlError, sendErrorAndClose } from './errors.js';
import { type AcceptMysqlClientOptions, acceptMysqlClient } from './frontend.js';
import { encodePacket, PacketReader, parseErr } from './packets.js';
import { type RelayResult, relayMysql } from './relay.js';

export interface MysqlClientOptions extends AcceptMysqlClientOptions {
  /** Open one tunnel stream to the exit (an HTTP/2 CONNECT stream in the product). */
  openTunnel: () => Promise<Duplex>;
  /** How long opening the tunnel may take (default 15 s). */
  tunnelTimeoutMs?: number | undefined;
  /** How long the exit may take to answer the connect request (default 30 s). */
  answerTimeoutMs?: number | undefined;
}

/**
 * Serve one accepted local socket. Rejects (after the application got an ERR packet) when the
 * handshake fails, the tunnel cannot be opened or the exit refused; resolves when the
 * connection is over.
 */
export async function serveMysqlClientConnection(
  socket: Duplex,
  opts: MysqlClientOptions,
): Promise<RelayResult> {
  const accepted = await acceptMysqlClient(socket, opts);
  let tunnel: Duplex | undefined;
  try {
    tunnel = await withTimeout(opts.openTunnel(), opts.tunnelTimeoutMs ?? 15_000);
    tunnel.on('error', () => {});
    tunnel.write(encodeConnectFrame(accepted.request));
    const reader = new PacketReader(
      tunnel,
      (why, detail) =>
        new MysqlError(
          'CIPORT_E_MYSQL_PROTOCOL',
          1043,
          '08S01',
          why === 'too-large' ? `the exit sent an oversized ${detail}` : `no answer from the exit: ${detail}`,
        ),
    );
    let answer: Buffer;
    try {
      answer = (await reader.read(64 * 1024, opts.answerTimeoutMs ?? 30_000)).payload;
    } finally {
      reader.release();
    }
    if (answer[0] === 0xff) {
      // The exit's refusal already says what went wrong (its message starts with the code):
      // pass it on unchanged, and fail with the same code.
      socket.on('error', () => {});
      socket.end(encodePacket(answer, accepted.nextSeq));
      socket.resume();
      tunnel.destroy();
      throw refusalFrom(answer);
    }
    if (answer[0] !== 0x00) {
      throw new MysqlError('CIPORT_E_MYSQL_PROTOCOL', 1043, '08S01', 'the exit answered neither OK nor ERR');
    }
    socket.write(encodePacket(answer, accepted.nextSeq));
  } catch (err) {
    tunnel?.destroy();
    if (!(err instanceof RefusedByExit)) await sendErrorAndClose(socket, err, accepted.nextSeq);
    throw err;
  }
  return relayMysql(socket, tunnel);
}

class RefusedByExit extends MysqlError {}

function refusalFrom(payload: Buffer): MysqlError {
  const e = parseErr(payload);
  const match = /^(CIPORT_E_[A-Z0-9_]+): /.exec(e.message);
  const code =
    match?.[1] && match[1] in ERROR_CODES ? (match[1] as ErrorCode) : 'CIPORT_E_MYSQL_UPSTREAM_REFUSED';
  return new RefusedByExit(code, e.errno, e.sqlState, match ? e.message.slice(match[0].length) : e.message);
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
