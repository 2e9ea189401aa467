// Stopping a statement in progress. MySQL has no out-of-band cancel message: a client cancels
// with `KILL QUERY <thread id>` on a second connection. The exit knows the upstream thread id
// from the server's handshake and the target's credentials (a user may always kill its own
// threads), so it can do the same when a session ends while a statement runs.
import { MysqlError } from './errors.js';
import { Command, encodePacket, PacketReader, parseErr } from './packets.js';
import { connectMysqlUpstream, type MysqlUpstreamTarget } from './upstream.js';

/**
 * Open an admin connection to the target with its injected credentials and run
 * `KILL QUERY <connectionId>` (or, with `connection: true`, `KILL CONNECTION`: the thread itself,
 * for a connection that is being torn down — a compound statement whose CONTINUE HANDLER swallows
 * the interruption of KILL QUERY would loop on). Resolves when the server acknowledged it; rejects
 * with the server's refusal (CIPORT_E_MYSQL_UPSTREAM_REFUSED, e.g. 1094 unknown thread) or a
 * connect error.
 */
export async function killMysqlQuery(
  target: MysqlUpstreamTarget,
  connectionId: number,
  options: { timeoutMs?: number | undefined; connection?: boolean | undefined } = {},
): Promise<void> {
  if (!Number.isInteger(connectionId) || connectionId < 0 || connectionId >= 2 ** 32) {
    throw new RangeError('connectionId must be a uint32');
  }
  const timeoutMs = options.timeoutMs ?? 5000;
  const statement = `KILL ${options.connection ? 'CONNECTION' : 'QUERY'} ${connectionId}`;
  const conn = await connectMysqlUpstream({ ...target, database: undefined, timeoutMs });
  const socket = conn.socket;
  const reader = new PacketReader(
    socket,
    (_why, detail) =>
      new MysqlError('CIPORT_E_MYSQL_UPSTREAM_REFUSED', 1043, '08S01', `${statement}: ${detail}`),
  );
  try {
    socket.write(encodePacket(Buffer.concat([Buffer.from([Command.QUERY]), Buffer.from(statement)]), 0));
    const answer = await reader.read(64 * 1024, timeoutMs);
    if (answer.payload[0] === 0xff) {
      const e = parseErr(answer.payload);
      throw new MysqlError(
        'CIPORT_E_MYSQL_UPSTREAM_REFUSED',
        e.errno,
        e.sqlState,
        `upstream ${target.address} refused ${statement}: ${e.message}`,
        { details: { errno: e.errno, sqlState: e.sqlState } },
      );
    }
    socket.write(encodePacket(Buffer.from([Command.QUIT]), 0));
  } finally {
    reader.release();
    socket.end();
    socket.destroy();
  }
}
