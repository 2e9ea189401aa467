// A hand-driven MySQL client for the local listener: it sends exactly the packets a test says,
// so that the listener's answers to unusual or hostile clients can be checked byte by byte.
import { connect, type Socket } from 'node:net';
import { CiportError } from '../../../src/errors/index.js';
import { parseServerHandshake, type ServerHandshake } from '../../../src/exits/mysql/handshake.js';
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
