// The exit's whole job for one postgres tunnel stream (gateway or agent): read the startup
// frame, then either forward a cancel or open the upstream with injected credentials, relay its
// AuthenticationOk…ReadyForQuery, and relay the connection with query events.
import type { Duplex } from 'node:stream';
import type { TargetOf } from '../../config/targets/index.js';
import { ConfigError } from '../../errors/index.js';
import { splitHostPort } from '../tcp/exit.js';
import { type CancelRegistry, forwardCancel, sendCancelRequest } from './cancel.js';
import { sendErrorAndClose } from './errors.js';
import { type QueryEvent, type RelayResult, relayPg } from './relay.js';
import { readStartupFrame } from './startup-wire.js';
import {
  type ConnectUpstreamOptions,
  connectUpstream,
  type PgAuthMethod,
  type UpstreamTlsOptions,
} from './upstream.js';

/** Everything about the upstream except what the application forwards. */
export type PgUpstreamTarget = Omit<ConnectUpstreamOptions, 'params' | 'signal'>;

/**
 * Upstream options for a `protocol: postgres` target of the config: `tls: true` or an object
 * means verify-full (with the object's CA bundle and server name).
 */
export function pgUpstreamFromTarget(target: TargetOf<'postgres'>): PgUpstreamTarget {
  // With per-session credentials the user is the session's own, filled in per connection.
  const perSession = target.credentials?.dynamic || target.credentials?.vault_database;
  const user =
    target.credentials?.user ?? target.credentials?.aws_rds_iam?.user ?? (perSession ? '' : undefined);
  if (user === undefined) {
    throw new ConfigError(
      'CIPORT_E_CONFIG_INVALID',
      `target ${target.name}: postgres needs credentials.user (or credentials.dynamic, vault_database or aws_rds_iam)`,
    );
  }
  const { host, port } = splitHostPort(target.address);
  const tlsObj = target.tls && typeof target.tls === 'object' ? target.tls : undefined;
  const mode = target.sslmode ?? (target.tls ? 'verify-full' : 'disable');
  const tls: UpstreamTlsOptions | undefined =
    mode === 'disable' ? undefined : { mode, ca: tlsObj?.ca?.reveal(), servername: tlsObj?.servername };
  return {
    host,
    port,
    tls,
    user,
    password: target.credentials?.password?.reveal(),
    database: target.database,
  };
}

export interface PgExitOptions {
  sessionId: string;
  /** Read per attempt: a provider secret rotated meanwhile is used at once. */
  upstream: PgUpstreamTarget | (() => PgUpstreamTarget);
  /**
   * The upstream refused the credential (28xxx): re-read it (Secret.refused()); true: it
   * changed, and the login is tried once more before the app sees an error.
   */
  onAuthRefused?: (() => Promise<boolean>) | undefined;
  cancelRegistry: CancelRegistry;
  /** Per-target switch for query events (default on when onQuery is given). */
  queryEvents?: boolean | undefined;
  maxQueryLength?: number | undefined;
  onQuery?: ((event: QueryEvent) => void) | undefined;
  /** Called once the upstream is authenticated, before any byte reaches the application. */
  onConnected?:
    | ((info: { auth: PgAuthMethod; tls: boolean; processId: number | undefined }) => void)
    | undefined;
  /** Audit backpressure (relay.ts): reading from the app pauses while this returns a promise. */
  room?: (() => Promise<void> | undefined) | undefined;
  /** Deadline for the startup frame (default 10 s); the upstream handshake has its own. */
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export type PgExitResult =
  | { kind: 'cancel'; forwarded: boolean }
  | ({
      kind: 'session';
      /**
       * The connection ended abnormally (session ended, stream reset) while the server had not
       * closed it: a CancelRequest for its backend was sent (this promise settles when done).
       */
      cancelled?: Promise<boolean> | undefined;
    } & RelayResult);

/**
 * Serve one stream. Failures before ReadyForQuery are written to the stream as an ErrorResponse
 * (SQLSTATE + CIPORT_E_ code), the stream is closed, and the promise rejects with the error so
 * the caller can log and audit it. After that, it resolves when the connection is over.
 */
export async function servePgExitStream(stream: Duplex, opts: PgExitOptions): Promise<PgExitResult> {
  let startup: Awaited<ReturnType<typeof readStartupFrame>>;
  try {
    startup = await readStartupFrame(stream, opts.timeoutMs);
  } catch (err) {
    await sendErrorAndClose(stream, err);
    throw err;
  }
  if (startup.kind === 'cancel') {
    const forwarded = await forwardCancel(opts.cancelRegistry, opts.sessionId, startup).catch(() => false);
    stream.on('error', () => {});
    stream.end();
    return { kind: 'cancel', forwarded };
  }
  let upstream: Awaited<ReturnType<typeof connectUpstream>>;
  const target = () => (typeof opts.upstream === 'function' ? opts.upstream() : opts.upstream);
  const upstreamTarget = target();
  try {
    upstream = await connectUpstream({
      ...upstreamTarget,
      params: startup.params,
      signal: opts.signal,
    }).catch(async (err: unknown) => {
      const refused = (err as { code?: unknown }).code === 'CIPORT_E_PG_UPSTREAM_AUTH';
      if (!refused || !opts.onAuthRefused || !(await opts.onAuthRefused())) throw err;
      return connectUpstream({ ...target(), params: startup.params, signal: opts.signal });
    });
  } catch (err) {
    await sendErrorAndClose(stream, err);
    throw err;
  }
  if (stream.destroyed) {
    upstream.socket.destroy();
    return {
      kind: 'session',
      bytesFromApp: 0,
      bytesFromUpstream: 0,
      error: new Error('stream closed during startup'),
    };
  }
  const cancelTarget = { host: upstreamTarget.host, port: upstreamTarget.port, tls: upstreamTarget.tls };
  const backendKey = upstream.backendKey;
  const unregister = backendKey
    ? opts.cancelRegistry.register(opts.sessionId, backendKey, cancelTarget)
    : () => {};
  // When the app side goes away abnormally (the session ended, the stream was reset) the server
  // would go on running the statement in progress until it next writes to the closed socket:
  // `pg_sleep(60)` or a long report keeps its backend and locks. A CancelRequest on a new
  // connection stops it; the backend then finds its client gone and exits. A clean close never
  // needs it: the app's last message was Terminate, or the server ended its side first.
  let serverEnded = false;
  upstream.socket.once('end', () => {
    serverEnded = true;
  });
  let cancelled: Promise<boolean> | undefined;
  const onTeardown = (_err: Error, info: { appTerminated: boolean }) => {
    if (serverEnded || info.appTerminated || !backendKey || cancelled) return;
    cancelled = sendCancelRequest(cancelTarget, backendKey, { timeoutMs: 5000 }).then(
      () => true,
      () => false,
    );
  };
  try {
    opts.onConnected?.({ auth: upstream.auth, tls: upstream.tls, processId: upstream.backendKey?.processId });
    for (const m of upstream.relayFromAuthOk) stream.write(m);
    const result = await relayPg(stream, upstream.socket, {
      queryEvents: opts.queryEvents,
      onQuery: opts.onQuery,
      maxQueryLength: opts.maxQueryLength,
      signal: opts.signal,
      room: opts.room,
      onTeardown,
    });
    for (const m of upstream.relayFromAuthOk) result.bytesFromUpstream += m.length;
    return { kind: 'session', ...result, cancelled };
  } finally {
    unregister();
  }
}
