// Password proofs of the MySQL authentication plugins, with node:crypto only. The local side
// verifies the application's proof against the one-time password (it knows the password, so
// both mysql_native_password and the caching_sha2_password fast path can be checked); the exit
// computes proofs for the upstream with the injected password.
import {
  constants,
  createHash,
  createPrivateKey,
  publicEncrypt,
  randomBytes,
  sign,
  timingSafeEqual,
} from 'node:crypto';

export const NATIVE = 'mysql_native_password';
export const CACHING_SHA2 = 'caching_sha2_password';
export const SHA256_PASSWORD = 'sha256_password';
export const ED25519 = 'client_ed25519';
export const CLEAR = 'mysql_clear_password';

const hash = (alg: string, ...parts: Buffer[]) => {
  const h = createHash(alg);
  for (const p of parts) h.update(p);
  return h.digest();
};

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (a[i] as number) ^ (b[i % b.length] as number);
  return out;
}

/** A 20-byte scramble without NUL bytes (it is NUL-terminated on the wire), 7-bit like MySQL's. */
export function makeNonce(): Buffer {
  const b = randomBytes(20);
  for (let i = 0; i < b.length; i++) b[i] = ((b[i] as number) % 94) + 33;
  return b;
}

/** mysql_native_password: SHA1(pw) XOR SHA1(nonce ‖ SHA1(SHA1(pw))); empty for no password. */
export function nativeToken(password: string, nonce: Buffer): Buffer {
  if (password === '') return Buffer.alloc(0);
  const stage1 = hash('sha1', Buffer.from(password));
  return xor(stage1, hash('sha1', nonce.subarray(0, 20), hash('sha1', stage1)));
}

/** caching_sha2_password scramble: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) ‖ nonce). */
export function cachingSha2Token(password: string, nonce: Buffer): Buffer {
  if (password === '') return Buffer.alloc(0);
  const stage1 = hash('sha256', Buffer.from(password));
  return xor(stage1, hash('sha256', hash('sha256', stage1), nonce.subarray(0, 20)));
}

/** Constant-time check of an application's proof for `plugin` (native or caching_sha2 fast path). */
export function verifyToken(plugin: string, password: string, nonce: Buffer, token: Buffer): boolean {
  const expected =
    plugin === NATIVE
      ? nativeToken(password, nonce)
      : plugin === CACHING_SHA2
        ? cachingSha2Token(password, nonce)
        : undefined;
  if (!expected || expected.length === 0 || expected.length !== token.length) return false;
  return timingSafeEqual(expected, token);
}

/** PKCS#8 DER prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows it. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/**
 * MariaDB's client_ed25519 signs the server's nonce with a key derived as
 * clamp(SHA512(password)) — standard Ed25519 with the *password* in place of the 32-byte seed.
 * node:crypto only takes a 32-byte seed (it hashes it itself), so a password of exactly 32
 * bytes is the seed and the signature is MariaDB's; any other length would need the scalar
 * arithmetic done by hand, which we do not do (docs/mysql.md). Returns undefined then.
 */
export function ed25519Token(password: string, nonce: Buffer): Buffer | undefined {
  const seed = Buffer.from(password);
  if (seed.length !== 32) return undefined;
  const key = createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  return sign(null, nonce, key);
}

/**
 * caching_sha2_password / sha256_password full authentication without TLS: the NUL-terminated
 * password XOR the nonce, RSA-OAEP encrypted with the server's public key.
 */
export function rsaEncryptPassword(password: string, nonce: Buffer, publicKeyPem: string): Buffer {
  const plain = xor(Buffer.concat([Buffer.from(password), Buffer.from([0])]), nonce.subarray(0, 20));
  return publicEncrypt({ key: publicKeyPem, padding: constants.RSA_PKCS1_OAEP_PADDING }, plain);
}
