// Exit side: open the connection to the real MySQL/MariaDB with the injected credentials.
// Optional TLS (SSLRequest, then verify-full by default), a HandshakeResponse41 with
// capabilities compatible with what the application negotiated locally, and authentication by
// mysql_native_password, caching_sha2_password (fast path; full authentication over TLS or with
// the server's RSA key), sha256_password, MariaDB's client_ed25519 or cleartext over TLS.
import { isIP, type Socket } from 'node:net';
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from 'node:tls';
import { CiportError } from '../../errors/index.js';
import { dialTcp, splitHostPort } from '../tcp/exit.js';
import type { MysqlConnectRequest } from './connect-wire.js';
import { MysqlError } from './errors.js';
import { LOCAL_CAPABILITIES } from './frontend.js';
import {
  encodeHandshakeResponse,
  encodeSslRequest,
  parseServerHandshake,
  type ServerHandshake,
} from './handshake.js';
import {
  Cap,
  capNames,
  DEFAULT_COLLATION,
  encodePacket,
  PacketReader,
  parseErr,
  TruncatedPayload,
} from './packets.js';
import { UpstreamAuth } from './upstream-auth.js';

export type MysqlTlsMode = 'require' | 'verify-ca' | 'verify-full';

export interface MysqlUpstreamTls {
  /** `verify-full` (CA + host name) is what a target with TLS gets; like MySQL's --ssl-mode. */
  mode: MysqlTlsMode;
  /** PEM bundle that replaces the system roots. */
  ca?: string | undefined;
  /** Name to verify and to send as SNI (default: the host, when it is not an IP address). */
  servername?: string | undefined;
}

/** Everything about the upstream the exit knows from its configuration (the lead maps it). */
export interface MysqlUpstreamTarget {
  /** host:port */
  address: string;
  user: string;
  password?: string | undefined;
  /** The target's schema; when unset, the application's choice. */
  database?: string | undefined;
  tls?: MysqlUpstreamTls | undefined;
  /**
   * The server's RSA public key (PEM) for caching_sha2_password / sha256_password full
   * authentication without TLS. Without it (and without TLS) that path is refused, unless
   * allowPublicKeyRetrieval: a key fetched over plaintext can be a man in the middle's.
   */
  serverPublicKey?: string | undefined;
  allowPublicKeyRetrieval?: boolean | undefined;
  /** Connect + TLS + authentication must finish within this (default 10 s). */
  timeoutMs?: number | undefined;
}

export interface ConnectMysqlUpstreamOptions extends MysqlUpstreamTarget {
  /** What the application negotiated locally; absent for the exit's own connections (KILL). */
  request?: MysqlConnectRequest | undefined;
  signal?: AbortSignal | undefined;
}

export interface MysqlUpstreamConnection {
  /** Plain or TLS socket, paused, positioned right after the OK packet. */
  socket: Socket | TLSSocket;
  /** The OK packet's payload, relayed to the application. */
  ok: Buffer;
  /** The server's thread id (for KILL QUERY). */
  connectionId: number;
  serverVersion: string;
  /** Capabilities sent upstream. */
  capabilities: number;
  /** The plugin that completed authentication (after any switch). */
  auth: string;
  /** How caching_sha2_password / sha256_password ended: 'fast', 'tls', 'rsa', or undefined. */
  fullAuth: 'tls' | 'rsa' | undefined;
  tls: boolean;
}

/** Flags the application negotiated that change the wire format: the upstream must have them. */
const FORWARDED =
  (LOCAL_CAPABILITIES &
    ~(
      Cap.LONG_PASSWORD |
      Cap.RESERVED |
      Cap.SECURE_CONNECTION |
      Cap.PLUGIN_AUTH |
      Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA |
      Cap.CONNECT_ATTRS |
      Cap.CONNECT_WITH_DB
    )) >>>
  0;

/** For the exit's own connections (no application): plain results, no multi-statements. */
const OWN_DEFAULT = (Cap.PROTOCOL_41 | Cap.TRANSACTIONS | Cap.MULTI_RESULTS | Cap.LONG_FLAG) >>> 0;

const MAX_HANDSHAKE_PACKET = 64 * 1024;
const MAX_ATTRIBUTE_BYTES = 8 * 1024;

const protocolError = (where: string, message: string) =>
  new MysqlError('CIPORT_E_MYSQL_PROTOCOL', 1043, '08S01', `upstream ${where}: ${message}`);

/** The server's ERR during the connection phase, as the error the application will see. */
function upstreamRefusal(where: string, user: string, payload: Buffer): MysqlError {
  const e = parseErr(payload);
  const details = { errno: e.errno, sqlState: e.sqlState };
  // 1045 access denied, 1698 (MariaDB unix_socket etc.), 1251 auth method, 1862 expired password
  if ([1045, 1698, 1251, 1862].includes(e.errno)) {
    return new MysqlError(
      'CIPORT_E_MYSQL_UPSTREAM_AUTH',
      e.errno,
      e.sqlState,
      `upstream ${where} refused ${JSON.stringify(user)}: ${e.message}; the credentials of this target at the exit (gateway or agent) are wrong, ask the operator`,
      { details },
    );
  }
  return new MysqlError(
    'CIPORT_E_MYSQL_UPSTREAM_REFUSED',
    e.errno,
    e.sqlState,
    `upstream ${where} refused the connection: ${e.message}`,
    { details },
  );
}

async function startTls(
  plain: Socket,
  o: ConnectMysqlUpstreamOptions,
  host: string,
  left: () => number,
): Promise<TLSSocket> {
  const tls = o.tls as MysqlUpstreamTls;
  const name = tls.servername ?? host;
  // Only set what applies: an explicit `undefined` would override tls.connect's defaults.
  const options: ConnectionOptions = {
    socket: plain,
    host: name,
    rejectUnauthorized: tls.mode !== 'require',
  };
  if (!isIP(name)) options.servername = name;
  if (tls.ca) options.ca = [tls.ca];
  if (tls.mode !== 'verify-full') options.checkServerIdentity = () => undefined;
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
    throw new CiportError(
      'CIPORT_E_TLS',
      `TLS to upstream ${o.address} failed (${tls.mode}): ${err.message}`,
      {
        cause: err,
      },
    );
  });
  socket.pause();
  return socket;
}

/**
 * Open an authenticated upstream connection. Rejects with a CiportError — never containing the
 * password — on unreachable upstreams, TLS failures (CIPORT_E_TLS), authentication failures
 * (CIPORT_E_MYSQL_UPSTREAM_AUTH), other refusals or missing capabilities
 * (CIPORT_E_MYSQL_UPSTREAM_REFUSED), malformed packets (CIPORT_E_MYSQL_PROTOCOL) or the deadline.
 */
export async function connectMysqlUpstream(o: ConnectMysqlUpstreamOptions): Promise<MysqlUpstreamConnection> {
  const deadline = Date.now() + (o.timeoutMs ?? 10_000);
  const left = () => Math.max(1, deadline - Date.now());
  const where = o.address;
  const { host } = splitHostPort(o.address);
  const fail = (why: string, detail: string) =>
    why === 'too-large'
      ? protocolError(where, `sent an oversized ${detail}`)
      : new CiportError(
          'CIPORT_E_UPSTREAM_UNREACHABLE',
          `upstream ${where} did not complete the MySQL handshake: ${detail}`,
        );
  let socket: Socket | TLSSocket = await dialTcp(o.address, { timeoutMs: left(), signal: o.signal });
  const onAbort = () => socket.destroy(new Error('aborted'));
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let reader = new PacketReader(socket, fail);
  try {
    const first = await reader.read(MAX_HANDSHAKE_PACKET, left());
    if (first.payload[0] === 0xff) throw upstreamRefusal(where, o.user, first.payload);
    let hello: ServerHandshake;
    try {
      hello = parseServerHandshake(first.payload);
    } catch (err) {
      if (err instanceof TruncatedPayload) throw protocolError(where, `malformed handshake: ${err.message}`);
      throw err;
    }
    const server = hello.capabilities;
    if (!(server & Cap.PLUGIN_AUTH) || !(server & Cap.SECURE_CONNECTION)) {
      throw protocolError(where, 'the server does not support pluggable 4.1 authentication');
    }
    const wanted = o.request ? (o.request.capabilities & FORWARDED) >>> 0 : OWN_DEFAULT;
    const missing = (wanted & ~server) >>> 0;
    if (missing !== 0) {
      throw new MysqlError(
        'CIPORT_E_MYSQL_UPSTREAM_REFUSED',
        1043,
        '08004',
        `upstream ${where} (${hello.serverVersion}) lacks capabilities the application negotiated: ${capNames(missing).join(', ')}`,
      );
    }
    const database = o.database ?? o.request?.database;
    let capabilities =
      (wanted |
        Cap.LONG_PASSWORD |
        Cap.PROTOCOL_41 |
        Cap.SECURE_CONNECTION |
        Cap.PLUGIN_AUTH |
        (server & (Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA | Cap.CONNECT_ATTRS)) |
        (database ? Cap.CONNECT_WITH_DB : 0)) >>>
      0;
    const collation = o.request?.collation ?? DEFAULT_COLLATION;
    const maxPacketSize = o.request?.maxPacketSize || 16 * 1024 * 1024;
    let seq = first.seq + 1;
    if (o.tls) {
      if (!(server & Cap.SSL)) {
        throw new CiportError(
          'CIPORT_E_TLS',
          `upstream ${where} does not offer TLS but the target requires it`,
        );
      }
      capabilities = (capabilities | Cap.SSL) >>> 0;
      socket.write(encodePacket(encodeSslRequest(capabilities, maxPacketSize, collation), seq++));
      // Bytes after the handshake were not protected by TLS: refuse them.
      const injected = reader.buffered > 0;
      reader.release();
      if (injected) throw protocolError(where, 'sent unencrypted data before the TLS handshake');
      const plain = socket;
      socket = await startTls(plain as Socket, o, host, left);
      reader = new PacketReader(socket, fail);
    }
    const isTls = o.tls !== undefined;
    const auth = new UpstreamAuth(
      {
        where,
        user: o.user,
        password: o.password ?? '',
        tls: isTls,
        serverPublicKey: o.serverPublicKey,
        allowPublicKeyRetrieval: o.allowPublicKeyRetrieval,
      },
      hello.authPlugin,
      hello.nonce,
    );
    const attributes: Record<string, string> = {};
    let attrBytes = 0;
    for (const [k, v] of Object.entries(o.request?.attributes ?? {})) {
      attrBytes += k.length + v.length + 2;
      if (attrBytes > MAX_ATTRIBUTE_BYTES) break;
      attributes[k] = v;
    }
    socket.write(
      encodePacket(
        encodeHandshakeResponse({
          capabilities,
          maxPacketSize,
          collation,
          user: o.user,
          authResponse: auth.first(),
          database,
          authPlugin: auth.plugin,
          attributes,
        }),
        seq++,
      ),
    );
    for (;;) {
      const packet = await reader.read(MAX_HANDSHAKE_PACKET, left());
      const p = packet.payload;
      if (p[0] === 0x00) {
        reader.release();
        o.signal?.removeEventListener('abort', onAbort);
        return {
          socket,
          ok: p,
          connectionId: hello.connectionId,
          serverVersion: hello.serverVersion,
          capabilities,
          auth: auth.plugin,
          fullAuth: auth.fullAuth,
          tls: isTls,
        };
      }
      if (p[0] === 0xff) throw upstreamRefusal(where, o.user, p);
      if (auth.isFastAuthSuccess(p)) continue;
      socket.write(encodePacket(auth.step(p), packet.seq + 1));
    }
  } catch (err) {
    reader.release();
    o.signal?.removeEventListener('abort', onAbort);
    socket.destroy();
    throw err;
  }
}
