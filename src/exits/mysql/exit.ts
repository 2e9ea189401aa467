// The exit's whole job for one mysql tunnel stream (gateway or agent): read the connect request,
// open the upstream with injected credentials and compatible capabilities, hand the server's OK
// to the local side (which completes the application's handshake with it), and relay with query
// events. A connection torn down while a statement may run gets a KILL CONNECTION.
import type { Duplex } from 'node:stream';
import { type MysqlConnectRequest, readConnectFrame } from './connect-wire.js';
import { sendErrorAndClose } from './errors.js';
import { killMysqlQuery } from './kill.js';
import type { MysqlQueryEvent } from './observe.js';
import { encodePacket } from './packets.js';
import { type RelayResult, relayMysql } from './relay.js';
import type { MysqlThreadRegistry } from './threads.js';
import { connectMysqlUpstream, type MysqlUpstreamConnection, type MysqlUpstreamTarget } from './upstream.js';

export interface MysqlConnectedInfo {
  auth: string;
  fullAuth: MysqlUpstreamConnection['fullAuth'];
  tls: boolean;
  connectionId: number;
  serverVersion: string;
  capabilities: number;
}

export interface MysqlExitOptions {
  /** Read per attempt: a provider secret rotated meanwhile is used at once. */
  upstream: MysqlUpstreamTarget | (() => MysqlUpstreamTarget);
  /**
   * The upstream refused the credential (1045…): re-read it (Secret.refused()); true: it
   * changed, and the login is tried once more before the app sees an error.
   */
  onAuthRefused?: (() => Promise<boolean>) | undefined;
  /**
   * The session's own user and password (per-session users), resolved once the connect request
   * is read: it replaces `upstream`'s; its failure reaches the app as an ERR packet.
   */
  credential?: (() => Promise<{ user: string; password: string }>) | undefined;
  /**
   * The credential expires (an RDS IAM token lives 15 minutes): the KILL that stops a statement
   * left running logs in with a fresh one from `credential` rather than the connection's own.
   */
  credentialExpires?: boolean | undefined;
  /**
   * With both: this connection is registered under the listener's id, and the application's
   * `KILL [QUERY] <listener id>` of a connection of the same session reaches the right thread.
   */
  sessionId?: string | undefined;
  threads?: MysqlThreadRegistry | undefined;
  /** Per-target switch for query events (default on when onQuery is given). */
  queryEvents?: boolean | undefined;
  maxQueryLength?: number | undefined;
  onQuery?: ((event: MysqlQueryEvent) => void) | undefined;
  /** Called once the upstream is authenticated, before any byte reaches the application. */
  onConnected?: ((info: MysqlConnectedInfo) => void) | undefined;
  /** Audit backpressure: reading from the app pauses while this returns a promise. */
  room?: (() => Promise<void> | undefined) | undefined;
  /** Deadline for the connect request (default 10 s); the upstream handshake has its own. */
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export type MysqlExitResult = RelayResult & {
  connectionId: number;
  /**
   * The connection ended abnormally (session ended, stream reset) while the server had not
   * closed it and the application had not sent COM_QUIT: a KILL CONNECTION for its thread was sent
   * (this promise settles with whether the server acknowledged it).
   */
  killed?: Promise<boolean> | undefined;
};

/**
 * Serve one stream. Failures before the OK are written to the stream as an ERR packet (its
 * message starts with the CIPORT_E_ code), the stream is closed, and the promise rejects with
 * the error. After that, it resolves when the connection is over.
 */
export async function serveMysqlExitStream(stream: Duplex, opts: MysqlExitOptions): Promise<MysqlExitResult> {
  let request: MysqlConnectRequest;
  try {
    request = await readConnectFrame(stream, opts.timeoutMs);
  } catch (err) {
    await sendErrorAndClose(stream, err, 0);
    throw err;
  }
  let upstream: MysqlUpstreamConnection;
  const current = () => (typeof opts.upstream === 'function' ? opts.upstream() : opts.upstream);
  // What the login used: the KILL of a statement left running logs in the same way.
  let target = current();
  try {
    const credential = opts.credential ? await opts.credential() : undefined;
    if (credential) target = { ...target, ...credential };
    upstream = await connectMysqlUpstream({ ...target, request, signal: opts.signal }).catch(
      async (err: unknown) => {
        const refused = (err as { code?: unknown }).code === 'CIPORT_E_MYSQL_UPSTREAM_AUTH';
        if (credential || !refused || !opts.onAuthRefused || !(await opts.onAuthRefused())) throw err;
        target = current();
        return connectMysqlUpstream({ ...target, request, signal: opts.signal });
      },
    );
  } catch (err) {
    await sendErrorAndClose(stream, err, 0);
    throw err;
  }
  const { connectionId } = upstream;
  if (stream.destroyed) {
    upstream.socket.destroy();
    return {
      bytesFromApp: 0,
      bytesFromUpstream: 0,
      error: new Error('stream closed during the handshake'),
      connectionId,
    };
  }
  // When the app side goes away abnormally (the session ended, the stream was reset, the client
  // was killed mid-query) the server would go on running the statement in progress until it
  // next writes to the closed socket: `SLEEP(60)`, a long report or a lock wait keeps its
  // thread. KILL CONNECTION on a new connection stops it — not KILL QUERY: a compound statement
  // (`BEGIN NOT ATOMIC … WHILE 1 DO … END WHILE; END`) with a CONTINUE HANDLER FOR SQLEXCEPTION
  // catches the interruption of its current statement and loops on, writing nothing, for ever
  // (test/hostile/mysql-teardown-loop.test.ts). A clean close (COM_QUIT) never needs it.
  let serverEnded = false;
  upstream.socket.once('end', () => {
    serverEnded = true;
  });
  let killed: Promise<boolean> | undefined;
  const onTeardown = (_err: Error, info: { appQuit: boolean }) => {
    if (serverEnded || info.appQuit || killed) return;
    const fresh = opts.credentialExpires ? opts.credential : undefined;
    killed = (async () => {
      const login = fresh ? { ...target, ...(await fresh()) } : target;
      await killMysqlQuery(login, connectionId, { connection: true });
    })().then(
      () => true,
      () => false,
    );
  };
  const { sessionId, threads } = opts;
  const unregister =
    sessionId !== undefined && threads && request.connectionId !== undefined
      ? threads.register(sessionId, request.connectionId, connectionId)
      : () => {};
  const killTarget =
    sessionId !== undefined && threads ? (localId: number) => threads.lookup(sessionId, localId) : undefined;
  try {
    opts.onConnected?.({
      auth: upstream.auth,
      fullAuth: upstream.fullAuth,
      tls: upstream.tls,
      connectionId,
      serverVersion: upstream.serverVersion,
      capabilities: upstream.capabilities,
    });
    // The local side rewrites the sequence id to continue the application's own handshake.
    const ok = encodePacket(upstream.ok, 0);
    stream.write(ok);
    const result = await relayMysql(stream, upstream.socket, {
      capabilities: upstream.capabilities,
      collation: request.collation,
      queryEvents: opts.queryEvents,
      onQuery: opts.onQuery,
      maxQueryLength: opts.maxQueryLength,
      signal: opts.signal,
      room: opts.room,
      killTarget,
      onTeardown,
    });
    result.bytesFromUpstream += ok.length;
    return { ...result, connectionId, killed };
  } catch (err) {
    upstream.socket.destroy();
    stream.destroy();
    throw err;
  } finally {
    unregister();
  }
}
