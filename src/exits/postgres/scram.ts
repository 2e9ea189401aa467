// SCRAM-SHA-256 (RFC 5802 / RFC 7677) for both ends: the client side authenticates the exit to
// the upstream PostgreSQL (optionally with tls-server-end-point channel binding, RFC 5929), the
// server side checks the application's one-time password on the local listener. All primitives
// come from node:crypto; this file only strings them together.
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import forge from 'node-forge';

export const SCRAM = 'SCRAM-SHA-256';
export const SCRAM_PLUS = 'SCRAM-SHA-256-PLUS';
/** PostgreSQL's default `scram_iterations`. */
export const DEFAULT_ITERATIONS = 4096;
/** Refuse absurd iteration counts from a peer (a CPU-exhaustion lever). */
const MAX_ITERATIONS = 10_000_000;

/** A SCRAM exchange the peer got wrong; the message never contains a secret. */
export class ScramError extends Error {}

const sha256 = (data: Buffer | string): Buffer => createHash('sha256').update(data).digest();
const hmac = (key: Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (a[i] as number) ^ (b[i] as number);
  return out;
}

function equal(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

const NONCE_RE = /^[\x21-\x2b\x2d-\x7e]+$/; // printable ASCII except ','

function attributes(message: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of message.split(',')) {
    if (!/^[A-Za-z]=/.test(part)) throw new ScramError(`malformed SCRAM attribute "${part.slice(0, 20)}"`);
    if (!out.has(part[0] as string)) out.set(part[0] as string, part.slice(2));
  }
  return out;
}

// RFC 3454 tables C.1.2 (non-ASCII spaces) and B.1 (commonly mapped to nothing).
const NON_ASCII_SPACE = new Set([
  0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x202f, 0x205f, 0x3000,
]);
const MAPPED_TO_NOTHING = new Set([
  0xad, 0x34f, 0x1806, 0x180b, 0x180c, 0x180d, 0x200b, 0x200c, 0x200d, 0x2060, 0xfeff,
]);

/**
 * SASLprep (RFC 4013) as PostgreSQL applies it to passwords: ASCII passes unchanged; otherwise
 * non-ASCII spaces become U+0020, "mapped to nothing" characters vanish and the result is NFKC.
 * A password with prohibited characters is used as-is, which is also what PostgreSQL does.
 */
export function saslPrep(password: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: ASCII range check
  if (/^[\x00-\x7f]*$/.test(password)) return password;
  const mapped = Array.from(password, (ch) => {
    const c = ch.codePointAt(0) as number;
    if (NON_ASCII_SPACE.has(c)) return ' ';
    return MAPPED_TO_NOTHING.has(c) || (c >= 0xfe00 && c <= 0xfe0f) ? '' : ch;
  })
    .join('')
    .normalize('NFKC');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: prohibited output per RFC 4013
  if (/[\x00-\x1f\x7f\u0080-\u009f\ufff9-\ufffd\ud800-\udfff]/.test(mapped)) return password;
  return mapped;
}

// ---- salted password cache -----------------------------------------------------------------

/** A small LRU: Map keeps insertion order, so the first key is the least recently used. */
class Lru<V> {
  readonly #max: number;
  readonly #map = new Map<string, V>();
  constructor(max: number) {
    this.#max = max;
  }
  get(key: string): V | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }
  set(key: string, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    while (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value as string);
  }
  delete(key: string): void {
    this.#map.delete(key);
  }
  get size(): number {
    return this.#map.size;
  }
  clear(): void {
    this.#map.clear();
  }
}

const saltedCache = new Lru<Promise<Buffer>>(256);
const cacheStats = { hits: 0, misses: 0 };

/**
 * Hi(password, salt, i) = PBKDF2-HMAC-SHA-256, cached per (password, salt, iterations) so that
 * repeated connections to the same upstream skip the key derivation. The cache key is a hash:
 * the password itself is not kept as a map key. Derivation runs on libuv's thread pool.
 */
export function saltedPassword(password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  const key = createHash('sha256')
    .update(`${iterations}\0${salt.toString('base64')}\0`)
    .update(password)
    .digest('base64');
  const hit = saltedCache.get(key);
  if (hit) {
    cacheStats.hits++;
    return hit;
  }
  cacheStats.misses++;
  const derived = new Promise<Buffer>((resolve, reject) => {
    pbkdf2(saslPrep(password), salt, iterations, 32, 'sha256', (err, out) =>
      err ? reject(err) : resolve(out),
    );
  });
  saltedCache.set(key, derived);
  derived.catch(() => saltedCache.delete(key));
  return derived;
}

/** Counters of the salted-password cache (for tests and metrics). */
export function saltedPasswordCacheStats(): { size: number; hits: number; misses: number } {
  return { size: saltedCache.size, ...cacheStats };
}

export function clearSaltedPasswordCache(): void {
  saltedCache.clear();
  cacheStats.hits = 0;
  cacheStats.misses = 0;
}

// ---- channel binding ------------------------------------------------------------------------

const SIGNATURE_HASH: Record<string, string> = {
  '1.2.840.113549.1.1.4': 'sha256', // md5WithRSA → SHA-256 per RFC 5929
  '1.2.840.113549.1.1.5': 'sha256', // sha1WithRSA → SHA-256
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.113549.1.1.14': 'sha224',
  '1.2.840.10045.4.1': 'sha256', // ecdsa-with-SHA1 → SHA-256
  '1.2.840.10045.4.3.1': 'sha224',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};

/**
 * tls-server-end-point channel binding data (RFC 5929): the server certificate's hash with
 * the hash function of its signature algorithm (MD5/SHA-1 upgraded to SHA-256). `undefined`
 * when the algorithm has no defined hash (Ed25519, RSASSA-PSS): then no channel binding.
 */
export function tlsServerEndPoint(certDer: Buffer): Buffer | undefined {
  try {
    const cert = forge.asn1.fromDer(forge.util.createBuffer(certDer.toString('binary')));
    const algId = (cert.value as forge.asn1.Asn1[])[1]?.value as forge.asn1.Asn1[] | undefined;
    const oidNode = algId?.[0];
    if (!oidNode || typeof oidNode.value !== 'string') return undefined;
    const hash = SIGNATURE_HASH[forge.asn1.derToOid(forge.util.createBuffer(oidNode.value))];
    return hash ? createHash(hash).update(certDer).digest() : undefined;
  } catch {
    return undefined;
  }
}

// ---- client ----------------------------------------------------------------------------------

export interface ScramClientOptions {
  password: string;
  /** tls-server-end-point data: present → SCRAM-SHA-256-PLUS. */
  channelBinding?: Buffer | undefined;
  /** The client could bind but the server offered no -PLUS ('y' flag, downgrade detection). */
  couldBind?: boolean;
  /** SCRAM user name; PostgreSQL ignores it (it uses the startup packet's), libpq sends ''. */
  username?: string;
  /** Fixed nonce, for test vectors only. */
  nonce?: string;
}

/** Client side of one SCRAM-SHA-256(-PLUS) exchange. */
export class ScramClient {
  readonly mechanism: string;
  readonly #password: string;
  readonly #nonce: string;
  readonly #username: string;
  readonly #gs2: string;
  readonly #cbind: Buffer;
  #clientFirstBare = '';
  #serverSignature: Buffer | undefined;

  constructor(options: ScramClientOptions) {
    this.#password = options.password;
    this.#nonce = options.nonce ?? randomBytes(18).toString('base64');
    this.#username = (options.username ?? '').replace(/=/g, '=3D').replace(/,/g, '=2C');
    if (options.channelBinding) {
      this.mechanism = SCRAM_PLUS;
      this.#gs2 = 'p=tls-server-end-point,,';
      this.#cbind = Buffer.concat([Buffer.from(this.#gs2), options.channelBinding]);
    } else {
      this.mechanism = SCRAM;
      this.#gs2 = options.couldBind ? 'y,,' : 'n,,';
      this.#cbind = Buffer.from(this.#gs2);
    }
  }

  /** client-first-message. */
  clientFirst(): string {
    this.#clientFirstBare = `n=${this.#username},r=${this.#nonce}`;
    return this.#gs2 + this.#clientFirstBare;
  }

  /** client-final-message for the server-first-message. */
  async clientFinal(serverFirst: string): Promise<string> {
    const attrs = attributes(serverFirst);
    if (attrs.has('m')) throw new ScramError('server requires an unsupported SCRAM extension');
    const nonce = attrs.get('r');
    const saltB64 = attrs.get('s');
    const iterText = attrs.get('i');
    if (!nonce || !saltB64 || !iterText) throw new ScramError('server-first-message lacks r, s or i');
    if (!nonce.startsWith(this.#nonce) || nonce.length === this.#nonce.length || !NONCE_RE.test(nonce)) {
      throw new ScramError('server nonce does not extend the client nonce');
    }
    const iterations = Number(iterText);
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
      throw new ScramError(`unacceptable SCRAM iteration count ${iterText.slice(0, 12)}`);
    }
    const salt = Buffer.from(saltB64, 'base64');
    if (salt.length === 0) throw new ScramError('empty SCRAM salt');
    const salted = await saltedPassword(this.#password, salt, iterations);
    const clientKey = hmac(salted, 'Client Key');
    const serverKey = hmac(salted, 'Server Key');
    const withoutProof = `c=${this.#cbind.toString('base64')},r=${nonce}`;
    const authMessage = `${this.#clientFirstBare},${serverFirst},${withoutProof}`;
    const proof = xor(clientKey, hmac(sha256(clientKey), authMessage));
    this.#serverSignature = hmac(serverKey, authMessage);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Check the server-final-message: the server proves it knows the password too. */
  verifyServerFinal(serverFinal: string): void {
    const attrs = attributes(serverFinal);
    const error = attrs.get('e');
    if (error !== undefined) throw new ScramError(`server rejected the SCRAM exchange: ${error}`);
    const v = attrs.get('v');
    if (!v || !this.#serverSignature || !equal(Buffer.from(v, 'base64'), this.#serverSignature)) {
      throw new ScramError('server signature does not match: the server does not know the password');
    }
  }
}

// ---- server ----------------------------------------------------------------------------------

/** What a server stores instead of the password. */
export interface ScramVerifier {
  salt: Buffer;
  iterations: number;
  storedKey: Buffer;
  serverKey: Buffer;
}

export async function makeScramVerifier(
  password: string,
  options: { salt?: Buffer; iterations?: number } = {},
): Promise<ScramVerifier> {
  const salt = options.salt ?? randomBytes(16);
  const iterations = options.iterations ?? DEFAULT_ITERATIONS;
  const salted = await saltedPassword(password, salt, iterations);
  return {
    salt,
    iterations,
    storedKey: sha256(hmac(salted, 'Client Key')),
    serverKey: hmac(salted, 'Server Key'),
  };
}

/**
 * Server side of one SCRAM-SHA-256 exchange without channel binding (the local listener is a
 * plaintext loopback socket: there is no TLS channel to bind to).
 */
export class ScramServer {
  readonly #verifier: ScramVerifier;
  readonly #serverNonce: string;
  #gs2 = '';
  #clientFirstBare = '';
  #serverFirst = '';
  #nonce = '';

  constructor(verifier: ScramVerifier, options: { nonce?: string } = {}) {
    this.#verifier = verifier;
    this.#serverNonce = options.nonce ?? randomBytes(18).toString('base64');
  }

  /** Take the client-first-message, answer the server-first-message. */
  serverFirst(clientFirst: string): string {
    const m = /^(n|y|p=[^,]*),(a=[^,]*)?,(.*)$/s.exec(clientFirst);
    if (!m) throw new ScramError('malformed client-first-message');
    if ((m[1] as string).startsWith('p=')) {
      throw new ScramError('channel binding is not supported on this listener (plaintext loopback)');
    }
    if (m[2]) throw new ScramError('authorization identities are not supported');
    this.#gs2 = `${m[1]},,`;
    this.#clientFirstBare = m[3] as string;
    const attrs = attributes(this.#clientFirstBare);
    if (this.#clientFirstBare.startsWith('m=')) throw new ScramError('unsupported SCRAM extension');
    const nonce = attrs.get('r');
    if (!nonce || !NONCE_RE.test(nonce)) throw new ScramError('missing or malformed client nonce');
    this.#nonce = nonce + this.#serverNonce;
    this.#serverFirst = `r=${this.#nonce},s=${this.#verifier.salt.toString('base64')},i=${this.#verifier.iterations}`;
    return this.#serverFirst;
  }

  /**
   * Take the client-final-message. Returns the server-final-message when the proof is right,
   * `undefined` when the password is wrong; throws on a malformed message.
   */
  serverFinal(clientFinal: string): string | undefined {
    const at = clientFinal.lastIndexOf(',p=');
    if (at < 0) throw new ScramError('client-final-message has no proof');
    const withoutProof = clientFinal.slice(0, at);
    const attrs = attributes(withoutProof);
    const cbind = attrs.get('c');
    if (cbind === undefined || Buffer.from(cbind, 'base64').toString('latin1') !== this.#gs2) {
      throw new ScramError('channel binding data does not match the GS2 header');
    }
    if (attrs.get('r') !== this.#nonce) throw new ScramError('nonce mismatch');
    const proof = Buffer.from(clientFinal.slice(at + 3), 'base64');
    const authMessage = `${this.#clientFirstBare},${this.#serverFirst},${withoutProof}`;
    const clientSignature = hmac(this.#verifier.storedKey, authMessage);
    if (proof.length !== clientSignature.length) return undefined;
    const clientKey = xor(proof, clientSignature);
    if (!equal(sha256(clientKey), this.#verifier.storedKey)) return undefined;
    return `v=${hmac(this.#verifier.serverKey, authMessage).toString('base64')}`;
  }
}
