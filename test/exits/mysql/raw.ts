// A hand-driven MySQL client for the local listener: it sends exactly the packets a test says,
// so that the listener's answers to unusual or hostile clients can be checked byte by byte.
import { connect, type Socket } from 'node:net';
import { CiportError } from '../../../src/errors/index.js';
import { NATIVE, nativeToken } from '../../../src/exits/mysql/auth.js';
import {
  encodeHandshakeResponse,
  parseServerHandshake,
  type ServerHandshake,
} from '../../../src/exits/mysql/handshake.js';
import { encodePacket, type Packet, PacketReader, parseErr } from '../../../src/exits/mysql/packets.js';

export class RawClient {
  readonly socket: Socket;
  readonly reader: PacketReader;
  handshake: ServerHandshake | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    this.reader = new PacketReader(
      socket,
      (why, detail) => new CiportError('CIPORT_E_INTERNAL', `${why}: ${detail}`),
    );
  }

  static async open(port: number): Promise<RawClient> {
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.on('error', () => {});
    return new RawClient(socket);
  }

  async hello(): Promise<ServerHandshake> {
    this.handshake = parseServerHandshake((await this.read()).payload);
    return this.handshake;
  }

  read(timeoutMs = 5000): Promise<Packet> {
    return this.reader.read(1024 * 1024, timeoutMs);
  }

  send(payload: Buffer, seq: number): void {
    this.socket.write(encodePacket(payload, seq));
  }

  /** Resolves when the listener closed the connection. */
  closed(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) resolve();
      this.socket.once('close', () => resolve());
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

export const errOf = (p: Packet) => parseErr(p.payload);

/** A HandshakeResponse41 that logs in with mysql_native_password and the given capabilities. */
export function loginResponse(
  otp: string,
  nonce: Buffer,
  capabilities: number,
  user = 'app',
  collation = 45,
): Buffer {
  return encodeHandshakeResponse({
    capabilities,
    maxPacketSize: 16 * 1024 * 1024,
    collation,
    user,
    authResponse: nativeToken(otp, nonce),
    database: undefined,
    authPlugin: NATIVE,
    attributes: {},
  });
}

/** Log in through a port; resolves with the client positioned after the OK. */
export async function rawLogin(
  port: number,
  otp: string,
  capabilities: number,
  collation = 45,
): Promise<RawClient> {
  const c = await RawClient.open(port);
  const hello = await c.hello();
  c.send(loginResponse(otp, hello.nonce, capabilities, 'app', collation), 1);
  const ok = await c.read();
  if (ok.payload[0] !== 0) throw new Error(`login failed: ${errOf(ok).message}`);
  return c;
}

/** Send one COM_QUERY and collect the payloads of its response until a terminating packet. */
export async function rawQuery(c: RawClient, sql: string, deprecateEof: boolean): Promise<Buffer[]> {
  c.send(Buffer.concat([Buffer.from([0x03]), Buffer.from(sql)]), 0);
  const out: Buffer[] = [];
  let eofs = 0;
  for (;;) {
    const p = (await c.read()).payload;
    out.push(p);
    if (out.length === 1 && (p[0] === 0x00 || p[0] === 0xff)) return out;
    if (p[0] === 0xfe && p.length < 0xffffff) {
      // Without DEPRECATE_EOF: an EOF after the column definitions and one after the rows.
      if (deprecateEof || ++eofs === 2) return out;
    }
  }
}
