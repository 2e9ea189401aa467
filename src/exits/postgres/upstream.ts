// Exit side: open the connection to the real PostgreSQL with the injected credentials. Optional
// TLS (SSLRequest, then verify-full by default), authentication by SCRAM-SHA-256 (-PLUS with
// tls-server-end-point binding on TLS), MD5 or cleartext, then collect AuthenticationOk …
// ReadyForQuery for the exit to relay to the application.
import { createHash } from 'node:crypto';
import { isIP, type Socket } from 'node:net';
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from 'node:tls';
import { serialize } from 'pg-protocol';
import type {
  BackendKeyDataMessage,
  DatabaseError,
  ParameterStatusMessage,
} from 'pg-protocol/dist/messages.js';
import { CiportError } from '../../errors/index.js';
import { dialTcp } from '../tcp/exit.js';
import { PgError } from './errors.js';
import {
  decodeBackend,
  MessageReader,
  type RawMessage,
  type ReadFailure,
  startupMessage,
} from './messages.js';
import { SCRAM, SCRAM_PLUS, ScramClient, ScramError, tlsServerEndPoint } from './scram.js';

export type UpstreamTlsMode = 'disable' | 'require' | 'verify-ca' | 'verify-full';

export interface UpstreamTlsOptions {
  /** Like libpq's sslmode; `verify-full` (CA + host name) is what a target with TLS gets. */
  mode: UpstreamTlsMode;
  /** PEM bundle that replaces the system roots. */
  ca?: string | undefined;
  /** Name to verify and to send as SNI (default: the host, when it is not an IP address). */
  servername?: string | undefined;
}

export type PgAuthMethod = 'SCRAM-SHA-256-PLUS' | 'SCRAM-SHA-256' | 'md5' | 'password' | 'trust';

export interface ConnectUpstreamOptions {
  host: string;
  port: number;
  tls?: UpstreamTlsOptions | undefined;
  user: string;
  password?: string | undefined;
  /** The target's database; when unset, the application's choice (default: the user name). */
  database?: string | undefined;
  /** Startup parameters forwarded from the application (filtered, see upstreamStartupParams). */
  params?: Readonly<Record<string, string>> | undefined;
  /** Methods the upstream may ask for (like libpq's require_auth). Default: all. */
  allowedAuth?: readonly PgAuthMethod[] | undefined;
  /** The whole connect + TLS + authentication + startup must finish within this (default 10 s). */
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export interface BackendKey {
  processId: number;
  secretKey: number;
}

export interface UpstreamConnection {
  /** Plain or TLS socket, paused, positioned right after the first ReadyForQuery. */
  socket: Socket | TLSSocket;
  /** AuthenticationOk, ParameterStatus…, BackendKeyData, NoticeResponse…, ReadyForQuery: raw. */
  relayFromAuthOk: Buffer[];
  backendKey: BackendKey | undefined;
  parameters: Record<string, string>;
  auth: PgAuthMethod;
  tls: boolean;
}

/** Parameters the application may not choose: identity, replication mode, protocol extensions. */
const RESERVED = new Set(['user', 'database', 'replication']);

/**
 * The startup parameters sent upstream: the application's (application_name, options,
 * client_encoding, DateStyle, any GUC…) minus user/database/replication/_pq_.*, plus the
 * target's user and database. GUCs set this way are checked with the target user's privileges,
 * exactly as a SET would be.
 */
export function upstreamStartupParams(
  appParams: Readonly<Record<string, string>> | undefined,
  identity: { user: string; database?: string | undefined },
): Record<string, string> {
  const out: Record<string, string> = { user: identity.user };
  const database = identity.database ?? appParams?.database;
  if (database) out.database = database;
  for (const [k, v] of Object.entries(appParams ?? {})) {
    if (!RESERVED.has(k) && !k.startsWith('_pq_.')) out[k] = v;
  }
  return out;
}

const MAX_HANDSHAKE_MESSAGE = 64 * 1024;

function where(o: { host: string; port: number }): string {
  return `${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`;
}

function readFailure(o: { host: string; port: number }) {
  return (why: ReadFailure, detail: string): CiportError =>
    why === 'too-large'
      ? new PgError('CIPORT_E_PG_PROTOCOL', '08P01', `upstream ${where(o)} sent an oversized ${detail}`)
      : new CiportError(
          'CIPORT_E_UPSTREAM_UNREACHABLE',
          `upstream ${where(o)} did not complete the PostgreSQL handshake: ${detail}`,
        );
}

/**
 * Connect to `host:port`, negotiate TLS when `tls.mode` is not `disable`. Used for sessions and
 * for cancel requests. The returned socket is paused with nothing read ahead.
 */
export async function openUpstreamSocket(
  o: Pick<ConnectUpstreamOptions, 'host' | 'port' | 'tls' | 'signal'>,
  deadline: number,
): Promise<Socket | TLSSocket> {
  const left = () => Math.max(1, deadline - Date.now());
  const plain = await dialTcp(where(o), { timeoutMs: left(), signal: o.signal });
  const mode = o.tls?.mode ?? 'disable';
  if (mode === 'disable') return plain;
  try {
    const reader = new MessageReader(plain, readFailure(o));
    plain.write(serialize.requestSsl());
    const answer = (await reader.read(1, left())).toString('latin1');
    // Bytes after the single-byte answer were not protected by TLS: a man in the middle may have
    // injected them (CVE-2021-23222). Refuse.
    const injected = reader.buffered > 0;
    reader.release();
    if (answer !== 'S') {
      throw new CiportError(
        'CIPORT_E_TLS',
        `upstream ${where(o)} refused TLS (SSLRequest answered '${answer === 'N' ? 'N' : 'other'}') but the target requires it`,
      );
    }
    if (injected) {
      throw new PgError(
        'CIPORT_E_PG_PROTOCOL',
        '08P01',
        `upstream ${where(o)} sent unencrypted data after accepting TLS`,
      );
    }
    const tls = o.tls as UpstreamTlsOptions;
    const name = tls.servername ?? o.host;
    // Only set what applies: an explicit `undefined` would override tls.connect's defaults.
    const options: ConnectionOptions = { socket: plain, host: name, rejectUnauthorized: mode !== 'require' };
    if (!isIP(name)) options.servername = name;
    if (tls.ca) options.ca = [tls.ca];
    if (mode !== 'verify-full') options.checkServerIdentity = () => undefined;
    const socket = tlsConnect(options);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no TLS handshake within ${left()} ms`)), left());
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        socket.removeListener('error', reject);
        resolve();
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    }).catch((err: Error) => {
      socket.destroy();
      throw new CiportError('CIPORT_E_TLS', `TLS to upstream ${where(o)} failed (${mode}): ${err.message}`, {
        cause: err,
      });
    });
    socket.pause();
    return socket;
  } catch (err) {
    plain.destroy();
    throw err;
  }
}

function upstreamError(o: { host: string; port: number; user: string }, err: DatabaseError) {
  const sqlState = err.code ?? 'XX000';
  const text = `upstream ${where(o)} refused ${JSON.stringify(o.user)}: ${err.message}`;
  if (sqlState.startsWith('28')) {
    return new PgError('CIPORT_E_PG_UPSTREAM_AUTH', '28000', text, {
      details: { sqlState },
      hint: 'the credentials of this target at the exit (gateway or agent) are wrong or lack LOGIN/CONNECT; ask the operator',
    });
  }
  return new PgError('CIPORT_E_PG_UPSTREAM_REFUSED', sqlState, text, { details: { sqlState } });
}

/**
 * Open an authenticated upstream connection. Rejects with a CiportError — never containing the
 * password — on unreachable upstreams, TLS failures (CIPORT_E_TLS), authentication failures
 * (CIPORT_E_PG_UPSTREAM_AUTH, any 28xxx), another refusal (CIPORT_E_PG_UPSTREAM_REFUSED, the
 * upstream's SQLSTATE) or the deadline.
 */
export async function connectUpstream(o: ConnectUpstreamOptions): Promise<UpstreamConnection> {
  const deadline = Date.now() + (o.timeoutMs ?? 10_000);
  const left = () => Math.max(1, deadline - Date.now());
  const socket = await openUpstreamSocket(o, deadline);
  const isTls = 'encrypted' in socket && socket.encrypted === true;
  const reader = new MessageReader(socket, readFailure(o));
  const onAbort = () => socket.destroy(new Error('aborted'));
  o.signal?.addEventListener('abort', onAbort, { once: true });
  const password = o.password ?? '';
  const allowed = (m: PgAuthMethod): PgAuthMethod => {
    if (o.allowedAuth && !o.allowedAuth.includes(m)) {
      throw new PgError(
        'CIPORT_E_PG_UPSTREAM_AUTH',
        '28000',
        `upstream ${where(o)} asked for ${m} authentication, which this target does not allow`,
      );
    }
    if (m !== 'trust' && o.password === undefined) {
      throw new PgError(
        'CIPORT_E_PG_UPSTREAM_AUTH',
        '28000',
        `upstream ${where(o)} wants a password and the target has none`,
      );
    }
    return m;
  };
  try {
    socket.write(startupMessage(upstreamStartupParams(o.params, o)));
    let scram: ScramClient | undefined;
    let scramDone = false;
    let auth: PgAuthMethod | undefined;
    let authOk: RawMessage | undefined;
    while (!authOk) {
      const m = await reader.readMessage(MAX_HANDSHAKE_MESSAGE, left());
      if (m.type === 'E') throw upstreamError(o, decodeBackend(m) as DatabaseError);
      if (m.type === 'v' || m.type === 'N') continue; // NegotiateProtocolVersion, notices
      if (m.type !== 'R' || m.body.length < 4) throw protocolViolation(o, `unexpected message '${m.type}'`);
      const code = m.body.readInt32BE(0);
      const data = () => m.body.toString('utf8', 4);
      switch (code) {
        case 0:
          if (scram && !scramDone) {
            throw protocolViolation(o, 'AuthenticationOk before the SCRAM exchange completed');
          }
          auth ??= 'trust';
          allowed(auth);
          authOk = m;
          break;
        case 3:
          auth = allowed('password');
          socket.write(serialize.password(password));
          break;
        case 5: {
          auth = allowed('md5');
          const salt = m.body.subarray(4, 8);
          const inner = createHash('md5').update(password).update(o.user).digest('hex');
          socket.write(
            serialize.password(`md5${createHash('md5').update(inner).update(salt).digest('hex')}`),
          );
          break;
        }
        case 10: {
          const offered = m.body
            .toString('utf8', 4)
            .split('\0')
            .filter((s) => s !== '');
          const binding = isTls
            ? tlsServerEndPoint((socket as TLSSocket).getPeerCertificate().raw)
            : undefined;
          if (binding && offered.includes(SCRAM_PLUS)) {
            auth = allowed(SCRAM_PLUS);
            scram = new ScramClient({ password, channelBinding: binding });
          } else if (offered.includes(SCRAM)) {
            auth = allowed(SCRAM);
            // 'y': we could bind but the server offered no -PLUS; a server that did offer it
            // detects the downgrade. Without usable binding data, 'n'.
            scram = new ScramClient({ password, couldBind: isTls && binding !== undefined });
          } else {
            throw new PgError(
              'CIPORT_E_PG_UPSTREAM_AUTH',
              '28000',
              `upstream ${where(o)} offers no supported SASL mechanism (${offered.join(', ') || 'none'})`,
            );
          }
          socket.write(serialize.sendSASLInitialResponseMessage(scram.mechanism, scram.clientFirst()));
          break;
        }
        case 11:
          if (!scram) throw protocolViolation(o, 'SASLContinue without SASL');
          socket.write(serialize.sendSCRAMClientFinalMessage(await scram.clientFinal(data())));
          break;
        case 12:
          if (!scram) throw protocolViolation(o, 'SASLFinal without SASL');
          scram.verifyServerFinal(data());
          scramDone = true;
          break;
        default:
          throw new PgError(
            'CIPORT_E_PG_UPSTREAM_AUTH',
            '28000',
            `upstream ${where(o)} asked for an unsupported authentication method (code ${code}: Kerberos/GSSAPI/SSPI)`,
          );
      }
    }

    const relayFromAuthOk: Buffer[] = [authOk.raw];
    const parameters: Record<string, string> = {};
    let backendKey: BackendKey | undefined;
    for (;;) {
      const m = await reader.readMessage(MAX_HANDSHAKE_MESSAGE, left());
      if (m.type === 'E') throw upstreamError(o, decodeBackend(m) as DatabaseError);
      if (m.type === 'S') {
        const p = decodeBackend(m) as ParameterStatusMessage;
        parameters[p.parameterName] = p.parameterValue;
      } else if (m.type === 'K') {
        const k = decodeBackend(m) as BackendKeyDataMessage;
        backendKey = { processId: k.processID, secretKey: k.secretKey };
      } else if (m.type !== 'N' && m.type !== 'Z') {
        throw protocolViolation(o, `unexpected message '${m.type}' before ReadyForQuery`);
      }
      relayFromAuthOk.push(m.raw);
      if (m.type === 'Z') break;
    }
    reader.release();
    o.signal?.removeEventListener('abort', onAbort);
    return { socket, relayFromAuthOk, backendKey, parameters, auth: auth ?? 'trust', tls: isTls };
  } catch (err) {
    reader.release();
    o.signal?.removeEventListener('abort', onAbort);
    socket.destroy();
    if (err instanceof ScramError) {
      throw new PgError(
        'CIPORT_E_PG_UPSTREAM_AUTH',
        '28000',
        `SCRAM with upstream ${where(o)} failed: ${err.message}`,
      );
    }
    throw err;
  }
}

function protocolViolation(o: { host: string; port: number }, what: string): PgError {
  return new PgError('CIPORT_E_PG_PROTOCOL', '08P01', `upstream ${where(o)} violated the protocol: ${what}`);
}
