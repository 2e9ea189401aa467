// The client side of the upstream's authentication exchange, as a small state machine: the
// answer for the plugin the handshake names, then one step per packet the server sends (auth
// switch, caching_sha2_password's "fast auth success" / "perform full authentication", the RSA
// key we asked for) until OK or ERR. Which answers are allowed depends on the connection: the
// password leaves in cleartext only inside TLS, and RSA-encrypted only with a key we trust.
import {
  CACHING_SHA2,
  CLEAR,
  cachingSha2Token,
  ED25519,
  ed25519Token,
  NATIVE,
  nativeToken,
  rsaEncryptPassword,
  SHA256_PASSWORD,
} from './auth.js';
import { MysqlError } from './errors.js';

export interface UpstreamAuthOptions {
  /** host:port, for messages. */
  where: string;
  user: string;
  password: string;
  tls: boolean;
  serverPublicKey?: string | undefined;
  allowPublicKeyRetrieval?: boolean | undefined;
}

export type AuthStep = { send: Buffer } | { done: true };

export class UpstreamAuth {
  readonly #o: UpstreamAuthOptions;
  plugin: string;
  #nonce: Buffer;
  #switches = 0;
  #awaitingKey = false;
  /** How caching_sha2_password / sha256_password sent the password, when they did. */
  fullAuth: 'tls' | 'rsa' | undefined;

  constructor(options: UpstreamAuthOptions, handshakePlugin: string, nonce: Buffer) {
    this.#o = options;
    // Start with the server's plugin when it is one that needs no extra round trip.
    this.plugin = handshakePlugin === CACHING_SHA2 ? CACHING_SHA2 : NATIVE;
    this.#nonce = nonce;
  }

  /** The auth response of the HandshakeResponse41. */
  first(): Buffer {
    return this.#answer();
  }

  /** What to do with a packet the server sent during authentication (not OK or ERR). */
  step(p: Buffer): Buffer {
    if (p[0] === 0xfe) {
      if (++this.#switches > 2 || p.length < 2)
        throw this.#protocol('invalid or repeated auth switch request');
      const end = p.indexOf(0, 1);
      if (end < 0) throw this.#protocol('malformed auth switch request');
      this.plugin = p.toString('utf8', 1, end);
      const data = p.subarray(end + 1);
      // The 20-byte scrambles come NUL-terminated; ed25519's 32-byte nonce is sent as is.
      this.#nonce =
        this.plugin !== ED25519 && data.length === 21 && data[20] === 0 ? data.subarray(0, 20) : data;
      this.#awaitingKey = false;
      return this.#answer();
    }
    if (p[0] === 0x01 && (this.plugin === CACHING_SHA2 || this.plugin === SHA256_PASSWORD)) {
      if (this.#awaitingKey) {
        // The server's public key (PEM), which we asked for because allowPublicKeyRetrieval.
        this.#awaitingKey = false;
        return this.#rsa(p.toString('latin1', 1));
      }
      if (this.plugin === CACHING_SHA2 && p.length === 2 && p[1] === 0x04) {
        // Full authentication: the server has no cached verifier for this account.
        return this.#fullAuth(0x02);
      }
    }
    throw this.#protocol(`unexpected packet 0x${(p[0] ?? 0).toString(16)} during authentication`);
  }

  /** caching_sha2_password's "fast auth success": nothing to send, the OK follows. */
  isFastAuthSuccess(p: Buffer): boolean {
    return this.plugin === CACHING_SHA2 && p.length === 2 && p[0] === 0x01 && p[1] === 0x03;
  }

  #answer(): Buffer {
    const { password } = this.#o;
    switch (this.plugin) {
      case NATIVE:
        return nativeToken(password, this.#nonce);
      case CACHING_SHA2:
        return cachingSha2Token(password, this.#nonce);
      case SHA256_PASSWORD:
        // sha256_password asks for its public key with 0x01 (caching_sha2_password: 0x02).
        return this.#fullAuth(0x01);
      case ED25519: {
        const sig = ed25519Token(password, this.#nonce);
        if (!sig) {
          throw this.#auth(
            'client_ed25519 is supported for 32-byte passwords only (node:crypto signs with a 32-byte seed; docs/mysql.md)',
          );
        }
        return sig;
      }
      case CLEAR:
        if (!this.#o.tls)
          throw this.#auth('the server asks for the password in cleartext but the connection is not TLS');
        return Buffer.from(`${password}\0`);
      default:
        throw this.#auth(
          `the server asks for auth plugin ${JSON.stringify(this.plugin)}, which ciport does not support`,
        );
    }
  }

  /** The password for caching_sha2 / sha256 full authentication: inside TLS, or RSA-encrypted. */
  #fullAuth(requestKey: number): Buffer {
    if (this.#o.tls) {
      this.fullAuth = 'tls';
      return Buffer.from(`${this.#o.password}\0`);
    }
    if (this.#o.serverPublicKey) return this.#rsa(this.#o.serverPublicKey);
    if (this.#o.allowPublicKeyRetrieval) {
      this.#awaitingKey = true;
      return Buffer.from([requestKey]);
    }
    throw this.#auth(
      `${this.plugin} full authentication needs TLS or the server public key (serverPublicKey)`,
    );
  }

  #rsa(pem: string): Buffer {
    this.fullAuth = 'rsa';
    try {
      return rsaEncryptPassword(this.#o.password, this.#nonce, pem);
    } catch (err) {
      throw this.#protocol(`unusable RSA public key: ${(err as Error).message}`);
    }
  }

  #auth(message: string): MysqlError {
    return new MysqlError(
      'CIPORT_E_MYSQL_UPSTREAM_AUTH',
      1045,
      '28000',
      `upstream ${this.#o.where} refused ${JSON.stringify(this.#o.user)}: ${message}`,
    );
  }

  #protocol(message: string): MysqlError {
    return new MysqlError('CIPORT_E_MYSQL_PROTOCOL', 1043, '08S01', `upstream ${this.#o.where}: ${message}`);
  }
}
