// Client side (`ciport exec`): the local listener plays the MySQL server towards the application
// up to the end of its authentication. It sends a HandshakeV10 offering mysql_native_password
// (docs/mysql.md, "The local hop"), verifies the application's proof of the one-time password —
// also a caching_sha2_password fast-path proof, which MySQL 8 clients send first — and switches
// any other plugin to mysql_native_password. It does not send the final OK: that comes from the
// real server through the exit, once the upstream accepted the injected credentials.
import type { Duplex } from 'node:stream';
import { asCiportError } from '../../errors/index.js';
import { CACHING_SHA2, makeNonce, NATIVE, verifyToken } from './auth.js';
import type { MysqlConnectRequest } from './connect-wire.js';
import { MysqlError, sendErrorAndClose } from './errors.js';
import { encodeServerHandshake, isSslRequest, parseHandshakeResponse } from './handshake.js';
import {
  Cap,
  DEFAULT_COLLATION,
  encodePacket,
  PacketReader,
  SERVER_STATUS_AUTOCOMMIT,
  TruncatedPayload,
} from './packets.js';

/**
 * What the listener offers. Every flag here must be one the exit can get from any supported
 * upstream (MySQL ≥ 5.7, MariaDB ≥ 10.2) or the relayed protocol would differ from what the
 * application negotiated. Left out on purpose: SSL (loopback), COMPRESS and ZSTD (would change
 * the framing the relay observes), LOCAL_FILES (LOAD DATA LOCAL: its file content travels as
 * packets the observer cannot tell from commands without following the server's replies, so a
 * job could plant statements in the audit; security review, session 6), QUERY_ATTRIBUTES and OPTIONAL_RESULTSET_METADATA (MySQL 8
 * only: a MariaDB upstream could not honour them), MULTI_FACTOR_AUTHENTICATION,
 * CAN_HANDLE_EXPIRED_PASSWORDS (the password is the exit's), CAPABILITY_EXTENSION. LONG_PASSWORD
 * doubles as MariaDB's CLIENT_MYSQL bit: with it set, MariaDB's extended capabilities stay off.
 */
export const LOCAL_CAPABILITIES =
  (Cap.LONG_PASSWORD |
    Cap.FOUND_ROWS |
    Cap.LONG_FLAG |
    Cap.CONNECT_WITH_DB |
    Cap.IGNORE_SPACE |
    Cap.PROTOCOL_41 |
    Cap.INTERACTIVE |
    Cap.TRANSACTIONS |
    Cap.RESERVED |
    Cap.SECURE_CONNECTION |
    Cap.MULTI_STATEMENTS |
    Cap.MULTI_RESULTS |
    Cap.PS_MULTI_RESULTS |
    Cap.PLUGIN_AUTH |
    Cap.CONNECT_ATTRS |
    Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA |
    Cap.SESSION_TRACK |
    Cap.DEPRECATE_EOF) >>>
  0;

export const DEFAULT_SERVER_VERSION = '8.0.0-ciport';

export interface AcceptMysqlClientOptions {
  /** The session's one-time password the application must present. */
  password: string;
  /** When set, the handshake's user must be this name. */
  user?: string | undefined;
  /** Deadline of every read from the application, ms (default 10 000). */
  timeoutMs?: number | undefined;
  /** Version string in the handshake (default "8.0.0-ciport"). */
  serverVersion?: string | undefined;
  /** Connection id shown to the application (not the upstream's; default random). */
  connectionId?: number | undefined;
}

export interface AcceptedMysqlClient {
  request: MysqlConnectRequest;
  /** Sequence id the final OK (or ERR) to the application must carry. */
  nextSeq: number;
  /** The plugin the application authenticated with. */
  plugin: string;
}

/** Connection attributes forwarded to the exit, in bytes of names and values. */
const MAX_FORWARDED_ATTRIBUTES = 4096;

/** The application's attributes up to the bound (what does not fit is dropped, not cut). */
function boundedAttributes(all: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  let bytes = 0;
  for (const [k, v] of Object.entries(all)) {
    bytes += Buffer.byteLength(k) + Buffer.byteLength(v);
    if (bytes > MAX_FORWARDED_ATTRIBUTES) break;
    out[k] = v;
  }
  return out;
}

/** Handshake responses are small: attributes included, well under this. */
const MAX_RESPONSE = 16 * 1024;

const protocolError = (message: string) => new MysqlError('CIPORT_E_MYSQL_PROTOCOL', 1043, '08S01', message);

/**
 * Run the server side of the connection phase with an application. Resolves once it proved the
 * one-time password; on any failure the application gets an ERR packet, the socket is closed
 * and the promise rejects with the MysqlError. Leftover bytes stay in the (paused) socket.
 */
export async function acceptMysqlClient(
  socket: Duplex,
  opts: AcceptMysqlClientOptions,
): Promise<AcceptedMysqlClient> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const reader = new PacketReader(socket, (why, detail) =>
    why === 'timeout'
      ? protocolError(`the application did not complete the MySQL handshake: ${detail}`)
      : why === 'too-large'
        ? protocolError(`invalid handshake: ${detail}`)
        : protocolError(`the application went away during the handshake: ${detail}`),
  );
  let seq = 0;
  try {
    const nonce = makeNonce();
    // Not the upstream's thread id (unknown yet): a number from the top half of the range,
    // which no real server reaches, so a `KILL QUERY <this id>` the exit does not rewrite
    // (threads.ts) names no thread.
    const connectionId = opts.connectionId ?? 2 ** 31 + Math.floor(Math.random() * 2 ** 30);
    socket.write(
      encodePacket(
        encodeServerHandshake({
          serverVersion: opts.serverVersion ?? DEFAULT_SERVER_VERSION,
          connectionId,
          nonce,
          capabilities: LOCAL_CAPABILITIES,
          collation: DEFAULT_COLLATION,
          status: SERVER_STATUS_AUTOCOMMIT,
          authPlugin: NATIVE,
        }),
        seq++,
      ),
    );
    const packet = await reader.read(MAX_RESPONSE, timeoutMs);
    seq = packet.seq + 1;
    if (isSslRequest(packet.payload)) {
      throw protocolError('TLS was requested, but a ciport port is a loopback listener without TLS');
    }
    let response: ReturnType<typeof parseHandshakeResponse>;
    try {
      response = parseHandshakeResponse(packet.payload);
    } catch (err) {
      if (err instanceof TruncatedPayload)
        throw protocolError(`malformed handshake response: ${err.message}`);
      throw err;
    }
    if (!(response.capabilities & Cap.SECURE_CONNECTION)) {
      throw protocolError('the client does not support 4.1 authentication (CLIENT_SECURE_CONNECTION)');
    }
    const capabilities = (response.capabilities & LOCAL_CAPABILITIES) >>> 0;
    const denied = (why: string) =>
      new MysqlError(
        'CIPORT_E_MYSQL_AUTH',
        1045,
        '28000',
        `Access denied for user '${response.user}': ${why}; use the one-time password ciport exec exported (MYSQL_PWD, DATABASE_URL)`,
      );
    if (opts.user !== undefined && response.user !== opts.user) {
      throw denied(`this port accepts user '${opts.user}' only`);
    }
    let plugin = response.authPlugin || NATIVE;
    let token = response.authResponse;
    if (plugin !== NATIVE && plugin !== CACHING_SHA2) {
      if (!(capabilities & Cap.PLUGIN_AUTH)) throw protocolError(`unsupported auth plugin ${plugin}`);
      // AuthSwitchRequest: 0xfe, plugin name, NUL, scramble (the same one), NUL.
      socket.write(
        encodePacket(
          Buffer.concat([Buffer.from([0xfe]), Buffer.from(`${NATIVE}\0`), nonce, Buffer.from([0])]),
          seq++,
        ),
      );
      const answer = await reader.read(MAX_RESPONSE, timeoutMs);
      seq = answer.seq + 1;
      plugin = NATIVE;
      token = answer.payload;
    }
    if (!verifyToken(plugin, opts.password, nonce, token)) {
      throw denied(`wrong password (using password: ${token.length > 0 ? 'YES' : 'NO'})`);
    }
    // caching_sha2_password: "fast auth success"; the OK follows.
    if (plugin === CACHING_SHA2) socket.write(encodePacket(Buffer.from([0x01, 0x03]), seq++));
    reader.release();
    return {
      plugin,
      nextSeq: seq,
      request: {
        kind: 'connect',
        user: response.user,
        database: capabilities & Cap.CONNECT_WITH_DB && response.database ? response.database : undefined,
        collation: response.collation || DEFAULT_COLLATION,
        capabilities,
        maxPacketSize: response.maxPacketSize,
        attributes: boundedAttributes(response.attributes),
        connectionId,
      },
    };
  } catch (err) {
    reader.release();
    const e = err instanceof MysqlError ? err : asCiportError(err);
    await sendErrorAndClose(socket, e, seq);
    throw e;
  }
}
