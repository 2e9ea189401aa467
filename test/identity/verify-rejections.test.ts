// Every way a token can be refused, each with its own code, against a real issuer on loopback.
import {
  type CryptoKey,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  importJWK,
  SignJWT,
  UnsecuredJWT,
} from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DevSigner } from '../../src/identity/dev-signer.js';
import { MAX_TOKEN_BYTES, TokenVerifier } from '../../src/identity/verify.js';
import { FixtureIssuer, TestClock } from '../fixtures/oidc-issuer.js';
import { expectRejected } from './helpers.js';

let issuer: FixtureIssuer;
let attacker: FixtureIssuer;
let clock: TestClock;
let verifier: TokenVerifier;

beforeAll(async () => {
  issuer = await FixtureIssuer.start();
  attacker = await FixtureIssuer.start();
});
afterAll(async () => {
  await issuer.close();
  await attacker.close();
});
beforeEach(() => {
  clock = new TestClock();
  verifier = new TokenVerifier([issuer.issuerConfig({ leeway: '30s' })], { now: clock.now });
});

const mint = (claims: Record<string, unknown> = {}, options: Parameters<FixtureIssuer['mint']>[1] = {}) =>
  issuer.mint(claims, { preset: 'gitlab-main', now: clock.ms, ...options });
const seconds = () => Math.floor(clock.ms / 1000);
const requestsTo = (server: FixtureIssuer) => [...server.hits.values()].reduce((a, b) => a + b, 0);

describe('a valid token', () => {
  it('verifies and yields claims, principal and facts', async () => {
    const result = await verifier.verify(await mint());
    expect(result.issuer.name).toBe('fixture');
    expect(result.claims.project_id).toBe('61577203');
    expect(result.principal.project).toEqual({ id: '61577203', path: 'acme/ledger' });
    expect(result.facts).toMatchObject({ fork: false, trusted_event: true, ref_protected: 'true' });
  });

  it('tolerates surrounding whitespace (a token file with a newline)', async () => {
    await expect(verifier.verify(`${await mint()}\n`)).resolves.toBeDefined();
  });

  it('accepts any configured audience', async () => {
    const multi = new TokenVerifier([issuer.issuerConfig({ audience: ['other', 'ciport'] })], {
      now: clock.now,
    });
    await expect(multi.verify(await mint())).resolves.toBeDefined();
  });
});

describe('algorithm', () => {
  it('refuses alg "none"', async () => {
    const token = new UnsecuredJWT({
      iss: issuer.url,
      aud: 'ciport',
      iat: seconds(),
      exp: seconds() + 60,
    }).encode();
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_ALG_NOT_ALLOWED', token);
  });

  it('refuses HS256 signed with the issuer public key as HMAC secret', async () => {
    const [jwk] = issuer.signer.jwks().keys;
    const publicPem = await exportSPKI((await importJWK(jwk!, 'RS256')) as CryptoKey);
    const token = await new SignJWT({ iss: issuer.url, aud: 'ciport', iat: seconds(), exp: seconds() + 60 })
      .setProtectedHeader({ alg: 'HS256', kid: jwk!.kid })
      .sign(new TextEncoder().encode(publicPem));
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_ALG_NOT_ALLOWED', token);
  });

  it('refuses an algorithm outside the issuer allowlist', async () => {
    const es = await FixtureIssuer.start({ alg: 'ES256' });
    try {
      const rsOnly = new TokenVerifier([es.issuerConfig({ algorithms: ['RS256'] })], { now: clock.now });
      const token = await es.mint({}, { now: clock.ms });
      await expectRejected(rsOnly.verify(token), 'CIPORT_E_TOKEN_ALG_NOT_ALLOWED', token);
      expect(es.jwksFetches).toBe(0);
    } finally {
      await es.close();
    }
  });
});

describe('time', () => {
  it('accepts a token expired within the leeway', async () => {
    const token = await mint({ iat: seconds() - 600, nbf: seconds() - 600, exp: seconds() - 20 });
    await expect(verifier.verify(token)).resolves.toBeDefined();
  });

  it('refuses a token expired beyond the leeway', async () => {
    const token = await mint({ iat: seconds() - 600, nbf: seconds() - 600, exp: seconds() - 31 });
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_EXPIRED', token);
  });

  it('accepts nbf in the future within the leeway', async () => {
    await expect(verifier.verify(await mint({ nbf: seconds() + 20 }))).resolves.toBeDefined();
  });

  it('refuses nbf in the future beyond the leeway', async () => {
    const token = await mint({ nbf: seconds() + 60 });
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_NOT_YET_VALID', token);
  });

  it('refuses iat in the future beyond the leeway', async () => {
    const token = await mint({ iat: seconds() + 120, nbf: seconds() - 5 });
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_NOT_YET_VALID', token);
  });

  it('accepts iat in the future within the leeway', async () => {
    await expect(
      verifier.verify(await mint({ iat: seconds() + 20, nbf: seconds() - 5 })),
    ).resolves.toBeDefined();
  });

  it('honours a zero leeway', async () => {
    const strict = new TokenVerifier([issuer.issuerConfig({ leeway: '0s' })], { now: clock.now });
    const token = await mint({ exp: seconds() - 1 });
    await expectRejected(strict.verify(token), 'CIPORT_E_TOKEN_EXPIRED', token);
  });
});

describe('issuer and audience', () => {
  it('refuses a wrong audience', async () => {
    const token = await mint({}, { audience: 'https://someone-else.example.com' });
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_WRONG_AUDIENCE', token);
  });

  it('refuses an issuer that is not configured', async () => {
    const token = await mint({ iss: 'https://gitlab.evil.example' });
    const before = requestsTo(issuer);
    const err = await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_UNKNOWN_ISSUER', token);
    expect(err.message).toContain('https://gitlab.evil.example');
    expect(requestsTo(issuer)).toBe(before);
  });

  it('tolerates a trailing slash on the configured issuer only', async () => {
    const slashed = new TokenVerifier([issuer.issuerConfig({ issuer: `${issuer.url}/` })], {
      now: clock.now,
    });
    await expect(slashed.verify(await mint())).resolves.toBeDefined();
    await expectRejected(
      verifier.verify(await mint({ iss: `${issuer.url}/x` })),
      'CIPORT_E_TOKEN_UNKNOWN_ISSUER',
    );
  });

  it('picks among issuers sharing an iss by audience', async () => {
    const two = new TokenVerifier(
      [
        issuer.issuerConfig({ name: 'a', audience: 'aud-a' }),
        issuer.issuerConfig({ name: 'b', audience: 'aud-b' }),
      ],
      { now: clock.now },
    );
    expect((await two.verify(await mint({}, { audience: 'aud-b' }))).issuer.name).toBe('b');
    expect((await two.verify(await mint({}, { audience: 'aud-a' }))).issuer.name).toBe('a');
    await expectRejected(two.verify(await mint({}, { audience: 'aud-c' })), 'CIPORT_E_TOKEN_WRONG_AUDIENCE');
  });
});

describe('keys and signatures', () => {
  it('refuses a kid the issuer does not publish', async () => {
    const stranger = await DevSigner.ephemeral();
    const token = await stranger.sign({
      iss: issuer.url,
      aud: 'ciport',
      iat: seconds(),
      exp: seconds() + 60,
    });
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_UNKNOWN_KEY', token);
  });

  it('refuses the right kid with the wrong key', async () => {
    const stranger = await DevSigner.ephemeral();
    const token = await stranger.sign(
      { iss: issuer.url, aud: 'ciport', iat: seconds(), exp: seconds() + 60 },
      { header: { kid: issuer.signer.current.kid } },
    );
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_BAD_SIGNATURE', token);
  });

  it('refuses a tampered payload', async () => {
    const [header, , signature] = (await mint()).split('.');
    const forged = Buffer.from(
      JSON.stringify({
        iss: issuer.url,
        aud: 'ciport',
        iat: seconds(),
        exp: seconds() + 60,
        project_id: '1',
      }),
    ).toString('base64url');
    const token = `${header}.${forged}.${signature}`;
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_BAD_SIGNATURE', token);
  });

  it('ignores a jwk header carrying the attacker key (same kid as the issuer)', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256');
    const token = await new SignJWT({ iss: issuer.url, aud: 'ciport', iat: seconds(), exp: seconds() + 60 })
      .setProtectedHeader({ alg: 'RS256', kid: issuer.signer.current.kid, jwk: await exportJWK(publicKey) })
      .sign(privateKey);
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_BAD_SIGNATURE', token);
  });

  it('ignores a jwk header carrying the attacker key (no kid)', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256');
    const token = await new SignJWT({ iss: issuer.url, aud: 'ciport', iat: seconds(), exp: seconds() + 60 })
      .setProtectedHeader({ alg: 'RS256', jwk: await exportJWK(publicKey) })
      .sign(privateKey);
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_BAD_SIGNATURE', token);
  });

  it('never follows jku or x5u headers', async () => {
    const token = await attacker.signer.sign(
      { iss: issuer.url, aud: 'ciport', iat: seconds(), exp: seconds() + 60 },
      { header: { jku: attacker.jwksUri, x5u: `${attacker.url}/cert.pem` } },
    );
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_UNKNOWN_KEY', token);
    expect(requestsTo(attacker)).toBe(0);
  });
});

describe('required claims', () => {
  for (const claim of ['exp', 'iat', 'aud']) {
    it(`refuses a token without ${claim}`, async () => {
      const token = await mint({}, { unset: [claim] });
      const err = await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_MISSING_CLAIM', token);
      expect(err.message).toContain(`"${claim}"`);
    });
  }

  it('refuses a token without iss', async () => {
    const token = await mint({}, { unset: ['iss'] });
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_MISSING_CLAIM', token);
  });

  it('refuses a non-numeric exp as malformed', async () => {
    const token = await mint({ exp: 'tomorrow' });
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_MALFORMED', token);
  });
});

describe('size and shape', () => {
  it('refuses a 9 KiB token before parsing it', async () => {
    const token = await mint({ padding: 'x'.repeat(9 * 1024) });
    expect(token.length).toBeGreaterThan(MAX_TOKEN_BYTES);
    const before = requestsTo(issuer);
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_TOO_LARGE', token);
    expect(requestsTo(issuer)).toBe(before);
  });

  it('refuses 9 KiB of garbage as too large, not malformed', async () => {
    await expectRejected(verifier.verify('a'.repeat(9 * 1024)), 'CIPORT_E_TOKEN_TOO_LARGE');
  });

  it('counts bytes, not characters', async () => {
    await expectRejected(verifier.verify('é'.repeat(MAX_TOKEN_BYTES / 2 + 1)), 'CIPORT_E_TOKEN_TOO_LARGE');
  });

  const garbage = [
    '',
    'not a token',
    'abc',
    'a.b',
    'a.b.c.d',
    '...',
    'Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln',
    '{"alg":"RS256"}',
    'eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln',
    'bm90IGpzb24.e30.c2ln',
    'W10.W10.c2ln',
    '\u0000\u0001.\u0002.\u0003',
    'ünïcödé.ünïcödé.ünïcödé',
  ];
  for (const input of garbage) {
    it(`refuses ${JSON.stringify(input)} as malformed`, async () => {
      await expectRejected(verifier.verify(input), 'CIPORT_E_TOKEN_MALFORMED');
    });
  }

  it('refuses a non-string kid as malformed', async () => {
    const token = await issuer.signer.sign(
      { iss: issuer.url, aud: 'ciport', iat: seconds(), exp: seconds() + 60 },
      { header: { kid: 42 as unknown as string } },
    );
    await expectRejected(verifier.verify(token), 'CIPORT_E_TOKEN_MALFORMED', token);
  });
});
