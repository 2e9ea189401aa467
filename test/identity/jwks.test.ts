// Where keys come from and how they are kept: discovery, pinned jwks_uri, jwks_file, rotation,
// rate-limited refetches, and an endpoint that goes away. All over real HTTP on loopback.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { issuerSchema } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors/index.js';
import { DevSigner } from '../../src/identity/dev-signer.js';
import { TokenVerifier } from '../../src/identity/verify.js';
import { FixtureIssuer, TestClock } from '../fixtures/oidc-issuer.js';
import { expectRejected } from './helpers.js';

const COOLDOWN = 30_000;
const MAX_AGE = 600_000;

let issuer: FixtureIssuer;
let clock: TestClock;
let stranger: DevSigner;

beforeAll(async () => {
  stranger = await DevSigner.ephemeral({ alg: 'ES256' });
});
beforeEach(async () => {
  // ES256 keys generate in a millisecond; these tests are about fetching, not key types.
  issuer = await FixtureIssuer.start({ alg: 'ES256' });
  clock = new TestClock();
});
afterEach(async () => {
  await issuer.close();
});

const verifierFor = (overrides: Record<string, unknown> = {}, options: { fetchTimeoutMs?: number } = {}) =>
  new TokenVerifier([issuer.issuerConfig({ jwks_cooldown: '30s', jwks_max_age: '10m', ...overrides })], {
    now: clock.now,
    ...options,
  });
const mint = (options: Parameters<FixtureIssuer['mint']>[1] = {}) =>
  issuer.mint({}, { preset: 'gitlab-main', now: clock.ms, ...options });

/** A token signed by a key the issuer never published, under a kid of its own. */
function unknownKidToken(n = 0): Promise<string> {
  const s = Math.floor(clock.ms / 1000);
  return stranger.sign(
    { iss: issuer.url, aud: 'ciport', iat: s, exp: s + 600 },
    { header: { kid: `unknown-${n}` } },
  );
}

describe('key sources', () => {
  it('finds the JWKS through OIDC discovery', async () => {
    await verifierFor().verify(await mint());
    expect(issuer.discoveryFetches).toBe(1);
    expect(issuer.jwksFetches).toBe(1);
  });

  it('uses a pinned jwks_uri without discovery', async () => {
    await verifierFor({ jwks_uri: issuer.jwksUri }).verify(await mint());
    expect(issuer.discoveryFetches).toBe(0);
    expect(issuer.jwksFetches).toBe(1);
  });

  describe('jwks_file', () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'ciport-jwks-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it('verifies from a static file and never fetches', async () => {
      const file = join(dir, 'jwks.json');
      writeFileSync(file, JSON.stringify(issuer.signer.jwks()));
      const noNetwork = (() => {
        throw new Error('fetch must not be called');
      }) as unknown as typeof fetch;
      const verifier = new TokenVerifier([issuer.issuerConfig({ jwks_file: file })], {
        now: clock.now,
        fetch: noNetwork,
      });
      await issuer.down('closed');
      await expect(verifier.verify(await mint())).resolves.toBeDefined();
      await expectRejected(verifier.verify(await unknownKidToken()), 'CIPORT_E_TOKEN_UNKNOWN_KEY');
    });

    it('reports a missing file at construction', () => {
      const config = issuer.issuerConfig({ jwks_file: join(dir, 'absent.json') });
      expect(() => new TokenVerifier([config])).toThrow(
        expect.objectContaining({ code: 'CIPORT_E_CONFIG_UNREADABLE' }),
      );
    });

    it('reports a file that is not a key set at construction', () => {
      const file = join(dir, 'bad.json');
      writeFileSync(file, JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] }));
      expect(() => new TokenVerifier([issuer.issuerConfig({ jwks_file: file })])).toThrow(
        expect.objectContaining({ code: 'CIPORT_E_CONFIG_INVALID' }),
      );
    });

    it('refuses jwks_uri and jwks_file together', () => {
      const file = join(dir, 'jwks.json');
      writeFileSync(file, JSON.stringify(issuer.signer.jwks()));
      expect(
        () => new TokenVerifier([issuer.issuerConfig({ jwks_file: file, jwks_uri: issuer.jwksUri })]),
      ).toThrow(ConfigError);
    });
  });
});

describe('plain http only on loopback', () => {
  const config = (fields: Record<string, unknown>) =>
    issuerSchema.parse({ name: 'x', kind: 'gitlab', audience: 'ciport', ...fields });

  for (const url of [
    'http://gitlab.example.com',
    'http://10.0.0.7:8080',
    'http://128.0.0.1',
    'http://[::2]:80',
  ]) {
    it(`rejects issuer ${url}`, () => {
      expect(() => new TokenVerifier([config({ issuer: url })])).toThrow(
        expect.objectContaining({ code: 'CIPORT_E_CONFIG_INVALID' }),
      );
    });
  }

  it('rejects a non-loopback http jwks_uri', () => {
    const err = (() => {
      try {
        new TokenVerifier([
          config({ issuer: 'https://gitlab.com', jwks_uri: 'http://gitlab.com/oauth/discovery/keys' }),
        ]);
      } catch (e) {
        return e as ConfigError;
      }
    })();
    expect(err?.code).toBe('CIPORT_E_CONFIG_INVALID');
    expect(err?.message).toContain('jwks_uri');
  });

  for (const url of [
    'http://127.0.0.1:9',
    'http://127.8.9.10',
    'http://localhost:8473',
    'http://[::1]:9',
    'https://gitlab.com',
  ]) {
    it(`accepts issuer ${url}`, () => {
      expect(() => new TokenVerifier([config({ issuer: url })])).not.toThrow();
    });
  }

  it('refuses a discovered jwks_uri that is plain http off loopback', async () => {
    issuer.patchDiscovery({ jwks_uri: 'http://keys.example.com/jwks' });
    const err = await expectRejected(verifierFor().verify(await mint()), 'CIPORT_E_JWKS_UNAVAILABLE');
    expect(err.message).toContain('loopback');
  });

  it('refuses discovery that names another issuer', async () => {
    issuer.patchDiscovery({ issuer: 'https://gitlab.com' });
    const err = await expectRejected(verifierFor().verify(await mint()), 'CIPORT_E_JWKS_UNAVAILABLE');
    expect(err.message).toContain('discovery names issuer');
  });
});

describe('rotation', () => {
  it('picks up a new kid after a refetch', async () => {
    const verifier = verifierFor();
    await verifier.verify(await mint());
    const newKid = await issuer.addKey();
    const rotated = await mint({ kid: newKid });
    clock.advance(COOLDOWN + 1);
    const result = await verifier.verify(rotated);
    expect(result.claims.iss).toBe(issuer.url);
    expect(issuer.jwksFetches).toBe(2);
    expect(verifier.keyStatus().fixture?.kids).toContain(newKid);
  });

  it('within the cooldown a new kid is unknown until the next allowed refetch', async () => {
    const verifier = verifierFor();
    await verifier.verify(await mint());
    const newKid = await issuer.addKey();
    const rotated = await mint({ kid: newKid });
    const err = await expectRejected(verifier.verify(rotated), 'CIPORT_E_TOKEN_UNKNOWN_KEY');
    expect(err.message).toContain('cooldown');
    expect(issuer.jwksFetches).toBe(1);
    clock.advance(COOLDOWN);
    await expect(verifier.verify(rotated)).resolves.toBeDefined();
  });

  it('drops a removed kid after a refetch', async () => {
    const verifier = verifierFor();
    const oldKid = issuer.signer.current.kid;
    const old = await mint();
    await verifier.verify(old);
    await issuer.addKey();
    issuer.removeKey(oldKid);

    // Past max age the cached set still answers while the refresh runs in the background …
    clock.advance(MAX_AGE);
    await expect(verifier.verify(old)).resolves.toBeDefined();
    await verifier.idle();
    expect(issuer.jwksFetches).toBe(2);
    // … and once it has landed, the removed key is gone.
    await expectRejected(verifier.verify(old), 'CIPORT_E_TOKEN_UNKNOWN_KEY', old);
    expect(verifier.keyStatus().fixture?.kids).not.toContain(oldKid);
  });

  it('refreshKeys() refetches on demand', async () => {
    const verifier = verifierFor();
    await verifier.verify(await mint());
    const newKid = await issuer.addKey();
    expect(await verifier.refreshKeys()).toEqual({ fixture: true });
    await expect(verifier.verify(await mint({ kid: newKid }))).resolves.toBeDefined();
  });
});

describe('refetch rate limit', () => {
  it('50 unknown-kid tokens cause at most one fetch per cooldown', async () => {
    const verifier = verifierFor();
    await verifier.verify(await mint());
    expect(issuer.jwksFetches).toBe(1);
    const flood = await Promise.all(Array.from({ length: 50 }, (_, n) => unknownKidToken(n)));

    const burst = async () => {
      const results = await Promise.allSettled(flood.map((t) => verifier.verify(t)));
      for (const r of results) {
        expect(r.status).toBe('rejected');
        expect((r as PromiseRejectedResult).reason.code).toBe('CIPORT_E_TOKEN_UNKNOWN_KEY');
      }
    };

    await burst(); // inside the cooldown of the first fetch: no fetch at all
    expect(issuer.jwksFetches).toBe(1);
    clock.advance(COOLDOWN);
    await burst(); // one shared refetch
    expect(issuer.jwksFetches).toBe(2);
    await burst(); // same cooldown window: none
    clock.advance(COOLDOWN / 2);
    await burst();
    expect(issuer.jwksFetches).toBe(2);
    clock.advance(COOLDOWN / 2);
    await burst();
    expect(issuer.jwksFetches).toBe(3);
  });

  it('concurrent first requests share one in-flight fetch', async () => {
    const verifier = verifierFor();
    const tokens = await Promise.all(Array.from({ length: 20 }, () => mint()));
    await Promise.all(tokens.map((t) => verifier.verify(t)));
    expect(issuer.discoveryFetches).toBe(1);
    expect(issuer.jwksFetches).toBe(1);
  });
});

describe('endpoint down', () => {
  for (const mode of ['503', 'reset', 'closed'] as const) {
    it(`(${mode}) cached keys keep verifying; an unknown kid is JWKS_UNAVAILABLE`, async () => {
      const verifier = verifierFor();
      await verifier.verify(await mint());
      await issuer.down(mode);
      clock.advance(MAX_AGE + COOLDOWN); // stale, and the cooldown allows refetching

      await expect(verifier.verify(await mint())).resolves.toBeDefined();
      await verifier.idle();
      clock.advance(COOLDOWN);
      const err = await expectRejected(verifier.verify(await unknownKidToken()), 'CIPORT_E_JWKS_UNAVAILABLE');
      expect(err.message).toMatch(/JWKS endpoint unreachable/);
      expect(err.message).toMatch(/cached key\(s\) were used/);
      expect(verifier.keyStatus().fixture?.lastError).toBeDefined();
      // A known key still works while the endpoint stays down.
      await expect(verifier.verify(await mint())).resolves.toBeDefined();
    });
  }

  it('with no cached keys, verification is JWKS_UNAVAILABLE', async () => {
    await issuer.down('503');
    const verifier = verifierFor();
    const token = await mint();
    const err = await expectRejected(verifier.verify(token), 'CIPORT_E_JWKS_UNAVAILABLE', token);
    expect(err.message).toContain('no cached keys');
    expect(err.message).toContain('HTTP 503');
    // Within the cooldown we do not hammer the endpoint, and still say why.
    await expectRejected(verifier.verify(token), 'CIPORT_E_JWKS_UNAVAILABLE');
    expect(issuer.discoveryFetches).toBe(1);
  });

  it('recovers when the endpoint comes back', async () => {
    await issuer.down('closed');
    const verifier = verifierFor();
    await expectRejected(verifier.verify(await mint()), 'CIPORT_E_JWKS_UNAVAILABLE');
    await issuer.up();
    clock.advance(COOLDOWN);
    await expect(verifier.verify(await mint())).resolves.toBeDefined();
  });

  it('gives up on an endpoint that never answers', async () => {
    await issuer.down('hang');
    const verifier = verifierFor({}, { fetchTimeoutMs: 200 });
    const err = await expectRejected(verifier.verify(await mint()), 'CIPORT_E_JWKS_UNAVAILABLE');
    expect(err.message).toContain('no answer within 200 ms');
  });

  it('refuses an oversized key set and keeps the last good one', async () => {
    const verifier = verifierFor({ jwks_uri: issuer.jwksUri });
    await verifier.verify(await mint());
    issuer.overrideJwks(JSON.stringify({ keys: [], padding: 'x'.repeat(1024 * 1024 + 1) }));
    clock.advance(COOLDOWN);
    const err = await expectRejected(verifier.verify(await unknownKidToken()), 'CIPORT_E_JWKS_UNAVAILABLE');
    expect(err.message).toContain('exceeds');
    await expect(verifier.verify(await mint())).resolves.toBeDefined();
  });

  it('treats a response that is not a key set as a failed fetch', async () => {
    issuer.overrideJwks('<html>login</html>');
    const err = await expectRejected(verifierFor().verify(await mint()), 'CIPORT_E_JWKS_UNAVAILABLE');
    expect(err.message).toContain('not JSON');
  });
});
