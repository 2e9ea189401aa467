// The signature check (src/identity/signature.ts, node:crypto) for every algorithm the
// configuration allows, and the key/algorithm rules it shares with jose: a token verifies only
// with a key of its algorithm (hash, curve, RSA size) and only when its bytes are the signed ones.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { issuerSchema } from '../../src/config/schema.js';
import { TokenVerifier } from '../../src/identity/verify.js';
import { expectRejected } from './helpers.js';

const ISSUER = 'https://sig.issuer.invalid';
const dir = mkdtempSync(join(tmpdir(), 'ciport-sig-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Alg = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA';
const ALGS: Alg[] = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
];

let n = 0;
/** A verifier trusting exactly `jwks` (a jwks_file) for `algs`. */
function verifierFor(jwks: object, algs: Alg[]): TokenVerifier {
  const file = join(dir, `jwks-${n++}.json`);
  writeFileSync(file, JSON.stringify(jwks));
  const config = issuerSchema.parse({
    name: 'sig',
    kind: 'oidc',
    issuer: ISSUER,
    audience: 'ciport',
    jwks_file: file,
    algorithms: algs,
  });
  return new TokenVerifier([config]);
}

async function keyFor(alg: Alg, options: { modulusLength?: number; crv?: string } = {}) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, ...options });
  const jwk = { ...(await exportJWK(publicKey)), kid: `k-${alg}`, alg, use: 'sig' };
  return { privateKey, jwk };
}

function sign(privateKey: CryptoKey, alg: string, header: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: 'job', iat: now })
    .setProtectedHeader({ alg, kid: `k-${alg}`, ...header })
    .setIssuer(ISSUER)
    .setAudience('ciport')
    .setExpirationTime(now + 300)
    .sign(privateKey);
}

describe('signature check per algorithm', () => {
  for (const alg of ALGS) {
    it(`${alg}: verifies, and refuses a changed signature or payload`, async () => {
      const { privateKey, jwk } = await keyFor(alg);
      const verifier = verifierFor({ keys: [jwk] }, [alg]);
      const token = await sign(privateKey, alg);
      const ok = await verifier.verify(token);
      expect(ok.claims.sub).toBe('job');

      const [h, p, s] = token.split('.') as [string, string, string];
      const sig = Buffer.from(s, 'base64url');
      sig[sig.length - 1] = (sig[sig.length - 1] as number) ^ 1;
      await expectRejected(
        verifier.verify(`${h}.${p}.${sig.toString('base64url')}`),
        'CIPORT_E_TOKEN_BAD_SIGNATURE',
      );
      const other = Buffer.from(JSON.stringify({ ...ok.claims, sub: 'someone-else' })).toString('base64url');
      await expectRejected(verifier.verify(`${h}.${other}.${s}`), 'CIPORT_E_TOKEN_BAD_SIGNATURE');
      await expectRejected(verifier.verify(`${h}.${p}.`), 'CIPORT_E_TOKEN_BAD_SIGNATURE');
    });
  }
});

describe('key and algorithm must fit', () => {
  it('refuses an RSA key under 2048 bits', async () => {
    const { generateKeyPairSync, sign: nodeSign } = await import('node:crypto');
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'k-RS256', alg: 'RS256' };
    const verifier = verifierFor({ keys: [jwk] }, ['RS256']);
    const now = Math.floor(Date.now() / 1000);
    const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const input = `${part({ alg: 'RS256', kid: 'k-RS256' })}.${part({ iss: ISSUER, aud: 'ciport', iat: now, exp: now + 300 })}`;
    const sig = nodeSign('sha256', Buffer.from(input), privateKey).toString('base64url');
    await expectRejected(verifier.verify(`${input}.${sig}`), 'CIPORT_E_TOKEN_BAD_SIGNATURE');
  });

  it('refuses an ES256 token whose kid names a P-384 key', async () => {
    const { privateKey } = await keyFor('ES256');
    const { jwk } = await keyFor('ES384');
    const verifier = verifierFor({ keys: [{ ...jwk, kid: 'k-ES256', alg: undefined }] }, ['ES256', 'ES384']);
    const token = await sign(privateKey, 'ES256');
    const err = await verifier.verify(token).then(
      () => undefined,
      (e: { code: string }) => e.code,
    );
    expect(err).toBeDefined();
    expect(err).not.toBe('CIPORT_E_INTERNAL');
  });

  it('refuses an RS256 token signed with PS256 by the same key pair', async () => {
    const { privateKey, jwk } = await keyFor('RS256');
    const verifier = verifierFor({ keys: [jwk] }, ['RS256']);
    const token = await sign(privateKey, 'RS256');
    const [h, p] = token.split('.') as [string, string, string];
    // A PSS signature over the same bytes, presented as RS256.
    const { sign: nodeSign, constants, KeyObject } = await import('node:crypto');
    const forged = nodeSign('sha256', Buffer.from(`${h}.${p}`), {
      key: KeyObject.from(privateKey),
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: 32,
    });
    await expectRejected(
      verifier.verify(`${h}.${p}.${forged.toString('base64url')}`),
      'CIPORT_E_TOKEN_BAD_SIGNATURE',
    );
  });

  it('refuses a token with a "crit" header as malformed', async () => {
    const { privateKey, jwk } = await keyFor('ES256');
    const verifier = verifierFor({ keys: [jwk] }, ['ES256']);
    const token = await sign(privateKey, 'ES256', { crit: ['b64'], b64: true });
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_MALFORMED');
  });
});
