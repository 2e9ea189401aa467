// The two packets of the connection phase both sides build or parse: the server's
// HandshakeV10 and the client's HandshakeResponse41 (and its SSLRequest prefix). Parsing is
// strict and bounded (Cursor): anything malformed throws TruncatedPayload, which the callers
// turn into CIPORT_E_MYSQL_PROTOCOL.
import { Cap, Cursor, lenencBytes, lenencInt, TruncatedPayload } from './packets.js';

export interface ServerHandshake {
  serverVersion: string;
  connectionId: number;
  /** The scramble: 20 bytes (auth-plugin-data parts 1 and 2 without the trailing NUL). */
  nonce: Buffer;
  capabilities: number;
  collation: number;
  status: number;
  authPlugin: string;
}

export function encodeServerHandshake(h: ServerHandshake): Buffer {
  const head = Buffer.alloc(1);
  head[0] = 10;
  const fixed = Buffer.alloc(4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10);
  let o = 0;
  o = fixed.writeUInt32LE(h.connectionId, o);
  h.nonce.copy(fixed, o, 0, 8);
  o += 8;
  o = fixed.writeUInt8(0, o);
  o = fixed.writeUInt16LE(h.capabilities & 0xffff, o);
  o = fixed.writeUInt8(h.collation, o);
  o = fixed.writeUInt16LE(h.status, o);
  o = fixed.writeUInt16LE((h.capabilities >>> 16) & 0xffff, o);
  fixed.writeUInt8(h.nonce.length + 1, o);
  return Buffer.concat([
    head,
    Buffer.from(`${h.serverVersion}\0`),
    fixed,
    h.nonce.subarray(8),
    Buffer.from([0]),
    Buffer.from(`${h.authPlugin}\0`),
  ]);
}

export function parseServerHandshake(payload: Buffer): ServerHandshake {
  const c = new Cursor(payload);
  const protocol = c.u8();
  if (protocol !== 10) throw new TruncatedPayload(`unsupported handshake protocol version ${protocol}`);
  const serverVersion = c.nulTerminated().toString('utf8');
  const connectionId = c.u32();
  const part1 = c.bytes(8);
  c.u8();
  let capabilities = c.u16();
  let collation = 0;
  let status = 0;
  let authPlugin = '';
  let nonce = part1;
  if (c.left > 0) {
    collation = c.u8();
    status = c.u16();
    capabilities = (capabilities | (c.u16() << 16)) >>> 0;
    const dataLength = c.u8();
    c.bytes(10); // reserved (MariaDB: 6 filler + 4 bytes of its extended capabilities)
    if (capabilities & Cap.SECURE_CONNECTION) {
      const n = Math.max(13, dataLength - 8);
      const part2 = c.bytes(Math.min(n, c.left));
      // part 2 ends with a NUL that is not part of the scramble
      nonce = Buffer.concat([part1, part2[part2.length - 1] === 0 ? part2.subarray(0, -1) : part2]);
    }
    if (capabilities & Cap.PLUGIN_AUTH) authPlugin = c.nulTerminated(true).toString('utf8');
  }
  if (!(capabilities & Cap.PROTOCOL_41)) throw new TruncatedPayload('server does not speak protocol 4.1');
  return { serverVersion, connectionId, nonce, capabilities, collation, status, authPlugin };
}

export interface HandshakeResponse {
  capabilities: number;
  maxPacketSize: number;
  collation: number;
  user: string;
  authResponse: Buffer;
  database: string | undefined;
  /** Plugin the client used for authResponse; '' when it did not say (pre-PLUGIN_AUTH). */
  authPlugin: string;
  attributes: Record<string, string>;
}

/** Bounds on what the application may send in its handshake response. */
const MAX_ATTRS = 64;

/** The first 32 bytes alone form an SSLRequest; they are also the response's fixed part. */
export function isSslRequest(payload: Buffer): boolean {
  return payload.length === 32 && (payload.readUInt32LE(0) & Cap.SSL) !== 0;
}

export function encodeSslRequest(capabilities: number, maxPacketSize: number, collation: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(capabilities >>> 0, 0);
  b.writeUInt32LE(maxPacketSize, 4);
  b.writeUInt8(collation, 8);
  return b;
}

export function parseHandshakeResponse(payload: Buffer): HandshakeResponse {
  const c = new Cursor(payload);
  const capabilities = c.u32();
  if (!(capabilities & Cap.PROTOCOL_41)) throw new TruncatedPayload('client does not speak protocol 4.1');
  const maxPacketSize = c.u32();
  const collation = c.u8();
  c.bytes(23);
  const user = c.nulTerminated().toString('utf8');
  let authResponse: Buffer;
  if (capabilities & Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA) authResponse = c.lenencBytes();
  else if (capabilities & Cap.SECURE_CONNECTION) authResponse = c.bytes(c.u8());
  else authResponse = c.nulTerminated(true);
  let database: string | undefined;
  if (capabilities & Cap.CONNECT_WITH_DB && c.left > 0) database = c.nulTerminated(true).toString('utf8');
  let authPlugin = '';
  if (capabilities & Cap.PLUGIN_AUTH && c.left > 0) authPlugin = c.nulTerminated(true).toString('utf8');
  const attributes: Record<string, string> = Object.create(null);
  if (capabilities & Cap.CONNECT_ATTRS && c.left > 0) {
    const all = new Cursor(c.lenencBytes());
    let n = 0;
    while (all.left > 0) {
      const k = all.lenencBytes().toString('utf8');
      const v = all.lenencBytes().toString('utf8');
      if (++n > MAX_ATTRS) throw new TruncatedPayload(`more than ${MAX_ATTRS} connection attributes`);
      attributes[k] = v;
    }
  }
  return { capabilities, maxPacketSize, collation, user, authResponse, database, authPlugin, attributes };
}

export function encodeHandshakeResponse(r: HandshakeResponse): Buffer {
  const parts: Buffer[] = [encodeSslRequest(r.capabilities, r.maxPacketSize, r.collation)];
  parts.push(Buffer.from(`${r.user}\0`));
  if (r.capabilities & Cap.PLUGIN_AUTH_LENENC_CLIENT_DATA) parts.push(lenencBytes(r.authResponse));
  else parts.push(Buffer.from([r.authResponse.length]), r.authResponse);
  if (r.capabilities & Cap.CONNECT_WITH_DB) parts.push(Buffer.from(`${r.database ?? ''}\0`));
  if (r.capabilities & Cap.PLUGIN_AUTH) parts.push(Buffer.from(`${r.authPlugin}\0`));
  if (r.capabilities & Cap.CONNECT_ATTRS) {
    const kv = Object.entries(r.attributes).flatMap(([k, v]) => [lenencBytes(k), lenencBytes(v)]);
    const body = Buffer.concat(kv);
    parts.push(lenencInt(body.length), body);
  }
  return Buffer.concat(parts);
}
