// Item 6 of issue 10: a token's lifetime (exp − iat) is bounded per issuer. Tokens come from a
// real issuer on loopback (signed, served JWKS); only their times differ.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { issuerSchema } from '../../src/config/schema.js';
import { maxTokenLifetimeMs } from '../../src/identity/lifetime.js';
import { TokenVerifier } from '../../src/identity/verify.js';
import { FixtureIssuer, TestClock } from '../fixtures/oidc-issuer.js';
import { expectRejected } from './helpers.js';

const HOUR = 3600;
let gitlab: FixtureIssuer;
let github: FixtureIssuer;
let clock: TestClock;

beforeAll(async () => {
  gitlab = await FixtureIssuer.start({ kind: 'gitlab' });
  github = await FixtureIssuer.start({ kind: 'github' });
});
afterAll(async () => {
  await gitlab.close();
  await github.close();
});
beforeEach(() => {
  clock = new TestClock();
});

const now = () => Math.floor(clock.ms / 1000);
const verifierFor = (issuer: FixtureIssuer, overrides: Record<string, unknown> = {}) =>
  new TokenVerifier([issuer.issuerConfig(overrides)], { now: clock.now });
const gitlabToken = (claims: Record<string, unknown>, unset: string[] = []) =>
  gitlab.mint(claims, { preset: 'gitlab-main', now: clock.ms, unset });
const githubToken = (claims: Record<string, unknown>) =>
  github.mint(claims, { preset: 'github-push', now: clock.ms });

describe('default maximum per kind', () => {
  it('gitlab: accepts a job token as long as a 24 h job timeout, refuses one second more', async () => {
    const v = verifierFor(gitlab);
    await expect(v.verify(await gitlabToken({ iat: now(), exp: now() + 24 * HOUR }))).resolves.toBeDefined();
    const token = await gitlabToken({ iat: now(), exp: now() + 24 * HOUR + 1 });
    const err = await expectRejected(v.verify(token), 'CIPORT_E_TOKEN_LIFETIME_TOO_LONG', token);
    expect(err.message).toContain('1d');
    expect(err.message).toContain('"fixture"');
  });

  it('gitlab: refuses exp: 1e20 (the issue report)', async () => {
    const token = await gitlabToken({ exp: 1e20 });
    await expectRejected(verifierFor(gitlab).verify(token), 'CIPORT_E_TOKEN_LIFETIME_TOO_LONG', token);
  });

  it('gitlab: an old iat with a far exp counts the whole span, not what is left', async () => {
    // Issued 23 h ago, valid 2 h more: 25 h of lifetime although only 2 h remain.
    const token = await gitlabToken({
      iat: now() - 23 * HOUR,
      nbf: now() - 23 * HOUR,
      exp: now() + 2 * HOUR,
    });
    await expectRejected(verifierFor(gitlab).verify(token), 'CIPORT_E_TOKEN_LIFETIME_TOO_LONG', token);
  });

  it('github: accepts the real 5-minute Actions token, refuses a 2 h one', async () => {
    const v = verifierFor(github);
    await expect(v.verify(await githubToken({ iat: now(), exp: now() + 300 }))).resolves.toBeDefined();
    await expect(v.verify(await githubToken({ iat: now(), exp: now() + HOUR }))).resolves.toBeDefined();
    const token = await githubToken({ iat: now(), exp: now() + 2 * HOUR });
    await expectRejected(v.verify(token), 'CIPORT_E_TOKEN_LIFETIME_TOO_LONG', token);
  });

  it('defaults: github 1 h, gitlab and oidc 24 h; an explicit value wins', () => {
    const parse = (o: Record<string, unknown>) =>
      issuerSchema.parse({ name: 'x', issuer: 'https://x.example', audience: 'a', ...o });
    expect(maxTokenLifetimeMs(parse({ kind: 'github' }))).toBe(HOUR * 1000);
    expect(maxTokenLifetimeMs(parse({ kind: 'gitlab' }))).toBe(24 * HOUR * 1000);
    expect(maxTokenLifetimeMs(parse({ kind: 'oidc' }))).toBe(24 * HOUR * 1000);
    expect(maxTokenLifetimeMs(parse({ kind: 'oidc', max_token_lifetime: '2d' }))).toBe(48 * HOUR * 1000);
    expect(() => parse({ kind: 'oidc', max_token_lifetime: 'forever' })).toThrow();
  });
});

describe('max_token_lifetime on the issuer', () => {
  it('tightens the bound: 10m accepts a 10-minute token and refuses a 15-minute one', async () => {
    const v = verifierFor(gitlab, { max_token_lifetime: '10m' });
    await expect(v.verify(await gitlabToken({ iat: now(), exp: now() + 600 }))).resolves.toBeDefined();
    const token = await gitlabToken({ iat: now(), exp: now() + 900 });
    const err = await expectRejected(v.verify(token), 'CIPORT_E_TOKEN_LIFETIME_TOO_LONG', token);
    expect(err.message).toContain('10m');
  });

  it('loosens it for self-managed GitLab with week-long jobs', async () => {
    const v = verifierFor(gitlab, { max_token_lifetime: '7d' });
    await expect(
      v.verify(await gitlabToken({ iat: now(), exp: now() + 6 * 24 * HOUR })),
    ).resolves.toBeDefined();
  });

  it('applies to a token that is otherwise perfectly valid and unexpired (checked after the signature)', async () => {
    const forged = `${(await gitlabToken({ exp: 1e20 })).slice(0, -4)}AAAA`;
    await expectRejected(verifierFor(gitlab).verify(forged), 'CIPORT_E_TOKEN_BAD_SIGNATURE', forged);
  });
});

describe('missing times stay "missing claim"', () => {
  it('iat missing: CIPORT_E_TOKEN_MISSING_CLAIM, however long exp is', async () => {
    const token = await gitlabToken({ exp: 1e20 }, ['iat']);
    const err = await expectRejected(
      verifierFor(gitlab).verify(token),
      'CIPORT_E_TOKEN_MISSING_CLAIM',
      token,
    );
    expect(err.message).toContain('"iat"');
  });

  it('exp missing: CIPORT_E_TOKEN_MISSING_CLAIM', async () => {
    const token = await gitlabToken({}, ['exp']);
    const err = await expectRejected(
      verifierFor(gitlab).verify(token),
      'CIPORT_E_TOKEN_MISSING_CLAIM',
      token,
    );
    expect(err.message).toContain('"exp"');
  });
});

describe('policy lint', () => {
  it('warns when an issuer accepts tokens valid for more than a week', async () => {
    const { lintPolicy } = await import('../../src/policy/index.js');
    const issuer = (max?: number) => [
      { name: 'gl', kind: 'gitlab', ...(max ? { max_token_lifetime: max } : {}) },
    ];
    expect(lintPolicy({ issuers: issuer(7 * 24 * HOUR * 1000) })).toEqual([]);
    expect(lintPolicy({ issuers: issuer() })).toEqual([]);
    expect(lintPolicy({ issuers: issuer(30 * 24 * HOUR * 1000) })).toEqual([
      {
        level: 'warning',
        code: 'long-token-lifetime',
        path: 'issuers[0].max_token_lifetime',
        message: 'issuer "gl" accepts tokens valid for up to 30d (over 7d)',
      },
    ]);
  });
});
