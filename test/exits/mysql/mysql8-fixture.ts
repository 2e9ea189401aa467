// A small stand-in for a MySQL 8 server, for what the MariaDB on this machine cannot do:
// caching_sha2_password (fast path when the account is "cached", otherwise full authentication
// over TLS or with RSA), TLS, and hostile handshakes. Proofs are checked with mysql2's own
// implementation and node's RSA decryption, not with the code under test.
import { constants as cryptoConstants, generateKeyPairSync, privateDecrypt, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { TLSSocket } from 'node:tls';
import { CiportError } from '../../../src/errors/index.js';
import {
  encodeServerHandshake,
  isSslRequest,
  parseHandshakeResponse,
} from '../../../src/exits/mysql/handshake.js';
import { Cap, encodePacket, errPayload, PacketReader } from '../../../src/exits/mysql/packets.js';

const require = createRequire(import.meta.url);
// Not in mysql2's package exports: load the file by path.
const mysql2Dir = dirname(require.resolve('mysql2'));
const sha2 = require(join(mysql2Dir, 'lib/auth_plugins/caching_sha2_password.js')) as {
  calculateToken: (password: string, scramble: Buffer) => Buffer;
};

/** What a MySQL 8.0 server offers (incl. QUERY_ATTRIBUTES, which ciport never negotiates). */
export const MYSQL8_CAPS =
  (0xffffffff &
    ~(
      Cap.SSL |
      Cap.SSL_VERIFY_SERVER_CERT |
      Cap.REMEMBER_OPTIONS |
      Cap.CAPABILITY_EXTENSION |
      Cap.MULTI_FACTOR_AUTHENTICATION
    )) >>>
  0;

export interface FixtureOptions {
  user: string;
  password: string;
  /** The fast path succeeds (the server has the account in its cache). */
  cached: boolean;
  tls?: { key: string; cert: string } | undefined;
  capabilities?: number | undefined;
  /** After the handshake response, switch to this plugin (sha256_password, cleartext, dialog). */
  switchTo?: 'sha256_password' | 'mysql_clear_password' | 'dialog' | undefined;
  /** Replace the whole handshake (hostile server). */
  rawHandshake?: Buffer | undefined;
}

export interface Seen {
  auth: 'fast' | 'tls' | 'rsa' | 'cleartext' | 'refused';
  capabilities: number;
  attributes: Record<string, string>;
  commands: number[];
}

export interface Mysql8Fixture {
  port: number;
  publicKey: string;
  seen: Seen[];
  close(): Promise<void>;
}

const ok = () => Buffer.from([0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]);

export async function startMysql8Fixture(opts: FixtureOptions): Promise<Mysql8Fixture> {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const seen: Seen[] = [];
  const sockets = new Set<Socket>();
  const fail = (why: string, detail: string) =>
    new CiportError('CIPORT_E_INTERNAL', `fixture ${why}: ${detail}`);

  async function serve(plain: Socket): Promise<void> {
    let socket: Socket = plain;
    let reader = new PacketReader(socket, fail);
    const nonce = Buffer.from(randomBytes(20).map((b) => (b % 94) + 33));
    const caps = ((opts.capabilities ?? MYSQL8_CAPS) | (opts.tls ? Cap.SSL : 0)) >>> 0;
    socket.write(
      opts.rawHandshake ??
        encodePacket(
          encodeServerHandshake({
            serverVersion: '8.0.36-fixture',
            connectionId: 4242,
            nonce,
            capabilities: caps,
            collation: 255,
            status: 2,
            authPlugin: 'caching_sha2_password',
          }),
          0,
        ),
    );
    let packet = await reader.read(1 << 20, 5000);
    if (opts.tls && isSslRequest(packet.payload)) {
      reader.release();
      const secure = new TLSSocket(socket, { isServer: true, key: opts.tls.key, cert: opts.tls.cert });
      await new Promise<void>((resolve, reject) => {
        secure.once('secure', resolve);
        secure.once('error', reject);
      });
      socket = secure;
      reader = new PacketReader(socket, fail);
      packet = await reader.read(1 << 20, 5000);
    }
    const response = parseHandshakeResponse(packet.payload);
    const entry: Seen = {
      auth: 'refused',
      capabilities: response.capabilities,
      attributes: response.attributes,
      commands: [],
    };
    seen.push(entry);
    let seq = packet.seq + 1;
    const send = (b: Buffer) => socket.write(encodePacket(b, seq++));
    const deny = () => {
      send(
        errPayload(
          1045,
          '28000',
          `Access denied for user '${response.user}'@'localhost' (using password: YES)`,
        ),
      );
      socket.end();
    };
    if (opts.switchTo) {
      await switched(opts.switchTo, entry, response.user);
      return;
    }
    const expected = sha2.calculateToken(opts.password, nonce);
    if (
      response.user !== opts.user ||
      response.authPlugin !== 'caching_sha2_password' ||
      !response.authResponse.equals(expected)
    ) {
      deny();
      return;
    }
    if (opts.cached) {
      send(Buffer.from([0x01, 0x03]));
      entry.auth = 'fast';
    } else {
      send(Buffer.from([0x01, 0x04]));
      let answer = await reader.read(4096, 5000);
      seq = answer.seq + 1;
      let password: string;
      if (socket !== plain) {
        password = answer.payload.toString('utf8', 0, answer.payload.length - 1);
        entry.auth = 'tls';
      } else {
        if (answer.payload.length === 1 && answer.payload[0] === 0x02) {
          send(Buffer.concat([Buffer.from([0x01]), Buffer.from(publicKey)]));
          answer = await reader.read(4096, 5000);
          seq = answer.seq + 1;
        }
        const plainText = privateDecrypt(
          { key: privateKey, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING },
          answer.payload,
        );
        for (let i = 0; i < plainText.length; i++)
          plainText[i] = (plainText[i] as number) ^ (nonce[i % 20] as number);
        password = plainText.toString('utf8', 0, plainText.length - 1);
        entry.auth = 'rsa';
      }
      if (password !== opts.password) {
        entry.auth = 'refused';
        deny();
        return;
      }
    }
    send(ok());
    await commands(entry);

    /** The plugin-switch variants: the password arrives in clear (TLS) or RSA-encrypted. */
    async function switched(plugin: string, into: Seen, user: string): Promise<void> {
      const fresh = Buffer.from(randomBytes(20).map((b) => (b % 94) + 33));
      send(Buffer.concat([Buffer.from([0xfe]), Buffer.from(`${plugin}\0`), fresh, Buffer.from([0])]));
      let answer = await reader.read(4096, 5000);
      seq = answer.seq + 1;
      let password: string;
      if (plugin === 'sha256_password' && socket === plain) {
        if (answer.payload.length === 1 && answer.payload[0] === 0x01) {
          send(Buffer.concat([Buffer.from([0x01]), Buffer.from(publicKey)]));
          answer = await reader.read(4096, 5000);
          seq = answer.seq + 1;
        }
        const clear = privateDecrypt(
          { key: privateKey, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING },
          answer.payload,
        );
        for (let i = 0; i < clear.length; i++) clear[i] = (clear[i] as number) ^ (fresh[i % 20] as number);
        password = clear.toString('utf8', 0, clear.length - 1);
        into.auth = 'rsa';
      } else {
        password = answer.payload.toString('utf8', 0, answer.payload.length - 1);
        into.auth = socket === plain ? 'cleartext' : 'tls';
      }
      if (password !== opts.password || user !== opts.user) {
        into.auth = 'refused';
        deny();
        return;
      }
      send(ok());
      await commands(into);
    }

    /** After the OK: every command gets an OK, COM_QUIT closes. */
    async function commands(into: Seen): Promise<void> {
      for (;;) {
        const cmd = await reader.read(1 << 20, 60_000);
        into.commands.push(cmd.payload[0] as number);
        if (cmd.payload[0] === 0x01) {
          socket.end();
          return;
        }
        socket.write(encodePacket(ok(), cmd.seq + 1));
      }
    }
  }

  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    serve(socket).catch(() => socket.destroy());
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
  return {
    port,
    publicKey,
    seen,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
