// The exit contract (docs/architecture.md, "Exits"): what one protocol does at the far end of a
// tunnel, whoever hosts it. The gateway (for the targets in its own config) and an agent (for the
// targets it serves) both build their exits from src/exits/registry.ts and serve every tunnel
// stream through the same two shapes; neither knows a protocol by name.
//
//   dial    the exit connects to the target and hands the host a socket; the host answers the
//           stream's CONNECT with 200 and relays raw bytes (tcp, redis with AUTH injected).
//   stream  the host answers 200 at once and gives the exit the stream: the protocol speaks
//           in-band from there, its errors included (postgres, http).
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Protocol, TargetConfig, TargetOf } from '../config/targets/index.js';
import type { HttpRequestEvent } from './http/exit.js';
import type { QueryEvent } from './query-event.js';

/** What the host gives every exit it builds. */
export interface ExitHost {
  /** TCP connect (and handshake, where the protocol has one) to the target. */
  connectTimeoutMs: number;
  /** The gateway's `sessions.connection_idle_timeout` (exits with their own idle handling). */
  idleTimeoutMs?: number | undefined;
}

/** Credentials made for one session (per-session database roles); the exit's own otherwise. */
export interface SessionCredential {
  user: string;
  password: string;
}

/** One tunnel stream as the host sees it: who it is for, and where its events go. */
export interface ExitConnection {
  session: { id: string };
  /** Aborted when the tunnel is cut (its session ended, the byte limit, the client went away). */
  signal: AbortSignal;
  /** Per-session credentials, when the host makes them for this target (else undefined). */
  credential?: (() => Promise<SessionCredential | undefined>) | undefined;
  /** Statements seen on the connection; absent: not audited by this host. */
  onQuery?: ((event: QueryEvent) => void) | undefined;
  /** Requests proxied on the connection (http). */
  onRequest?: ((event: HttpRequestEvent) => void) | undefined;
  /** The upstream accepted the injected credential; nothing has reached the app yet. */
  onConnected?: ((info: Readonly<Record<string, string | number | boolean | undefined>>) => void) | undefined;
  /** Audit backpressure: reading from the app pauses while this returns a promise. */
  room?: (() => Promise<void> | undefined) | undefined;
}

/** How a `stream` exit's connection ended. */
export interface ExitOutcome {
  /** Why it ended abnormally (no secrets). */
  error?: string | undefined;
  /** An out-of-band request (postgres CancelRequest), not an application connection. */
  outOfBand?: boolean | undefined;
  /**
   * Work the exit started on the way out (a statement cancelled upstream): the host logs `note`
   * with the other fields once it settles.
   */
  after?: Promise<ExitNote> | undefined;
}

/** A log line an exit asks its host to write (no secrets), prefixed with the protocol. */
export interface ExitNote {
  note: string;
  [field: string]: string | number | boolean;
}

interface ExitBase {
  readonly target: TargetConfig;
  /** A session ended: forget what the exit kept for it (cancel keys). */
  sessionEnded?(sessionId: string): void;
  /** Release what the exit holds (pools, sockets). */
  close(): void;
}

export interface DialExit extends ExitBase {
  readonly mode: 'dial';
  /** Connect; rejects with a CiportError (CIPORT_E_UPSTREAM_UNREACHABLE, …) before any byte. */
  dial(options: { timeoutMs: number; signal: AbortSignal }): Promise<Socket>;
}

export interface StreamExit extends ExitBase {
  readonly mode: 'stream';
  /**
   * Serve one stream to its end. A failure is first told to the app in the protocol's own terms
   * (ErrorResponse, an HTTP status), then the promise rejects with it for the host to record.
   */
  serve(stream: Duplex, connection: ExitConnection): Promise<ExitOutcome>;
}

export type Exit = DialExit | StreamExit;

/** What an agent tells the gateway about a target it serves (never a credential). */
export interface ExitAdvertisement {
  name: string;
  protocol: string;
  /** postgres: the database the exit connects to, the user the local listener accepts. */
  database?: string | undefined;
  user?: string | undefined;
  /** postgres: a role per session, created and dropped by the agent. */
  dynamic?: boolean | undefined;
  /**
   * postgres: `query` events and their bound. The gateway never takes `query_audit: false` from an
   * agent (the events are the gateway's, docs/agent.md "Query audit"): it drops the field.
   */
  query_audit?: boolean | undefined;
  query_max_length?: number | undefined;
  /** ssh: what the gateway signs certificates for and the job's ssh verifies (docs/ssh.md). */
  ssh?: SshTargetInfo | undefined;
}

/** An ssh target's public facts: no secret (the user CA stays on the gateway). */
export interface SshTargetInfo {
  /** Login names a certificate for the target may carry. */
  principals: string[];
  /** Pinned host keys, or the host CA (one of the two). */
  host_keys?: string[] | undefined;
  host_ca?: string | undefined;
  /** The name the host key is checked under (HostKeyAlias). */
  host_key_alias: string;
  /** The certificate's `source-address` (the exit's egress as the host sees it). */
  source_address?: string[] | undefined;
}

/** Watches a stream the gateway relays to an agent (query events). */
export interface StreamObserver {
  /** Bytes from the app towards the target. */
  push(chunk: Buffer): void;
  /** Bytes from the target back (protocols that need the answers: mysql reports on replies). */
  pushFromTarget?(chunk: Buffer): void;
  /**
   * Backpressure of the observer itself (mysql: commands waiting for their reply): while this
   * returns a promise, the host stops reading from the app.
   */
  room?(): Promise<void> | undefined;
  /** The stream is over (before the host's `connection.closed`): report what is left. */
  end?(): void;
  /** The stream carried an out-of-band request (postgres CancelRequest). */
  readonly outOfBand: boolean;
}

/**
 * One protocol, registered once in src/exits/registry.ts. Its targets are the protocol's member
 * of the target schema (src/config/targets/<protocol>.ts): the exit reads only their keys.
 */
export interface ExitDefinition<P extends Protocol = Protocol> {
  readonly protocol: P;
  /**
   * The exit of one target of this process's config, built at start (a bad secret fails the
   * start). `{ skip }`: this process does not exit to it, and why (e.g. no credentials).
   */
  build(target: TargetOf<P>, host: ExitHost): Exit | { skip: string };
  /** What an agent advertises for the target (default: name and protocol). */
  advertise?(target: TargetOf<P>): ExitAdvertisement;
  /** The gateway's observer of a stream it relays to an agent for this protocol. */
  observe?(advertised: ExitAdvertisement, onQuery: (event: QueryEvent) => void): StreamObserver;
}

/**
 * What a database exit (postgres, mysql) takes from the host for its query audit and lifetime:
 * events only when the host audits them and the target did not switch them off.
 */
export function databaseAudit(target: TargetOf<'postgres' | 'mysql'>, connection: ExitConnection) {
  return {
    queryEvents: connection.onQuery !== undefined && (target.query_audit ?? true),
    maxQueryLength: target.query_max_length,
    onQuery: connection.onQuery,
    room: connection.room,
    onConnected: (info: { auth: string; tls: boolean }) =>
      connection.onConnected?.({ auth: info.auth, tls: info.tls }),
    signal: connection.signal,
  };
}
