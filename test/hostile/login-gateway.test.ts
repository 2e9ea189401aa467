// HOSTILE: the gateway's `ciport login` endpoints (docs/login.md) against someone holding pieces
// of a sign-in: a code replayed (to the same gateway, and after a restart when only the provider
// remembers it), a wrong PKCE verifier, a wrong nonce, a redirect URI other than the loopback
// one, oversized and malformed bodies, concurrent redemptions of one code, guessed device
// handles and fast polls. Each is refused with a stable code, no operator session is made, the
// provider is not asked where it need not be, and failures are rate limited without growing
// the audit log past the limit.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashSecret } from '../../src/session/secret.js';
import type { CodeRedemption } from '../../src/transport/operator-login.js';
import { signInWithoutBrowser } from '../fixtures/sso-idp.js';
import { api, type Json } from '../gateway/helpers.js';
import { CLI_CLIENT, type LoginHarness, startLoginHarness } from '../sso/login-harness.js';

let lh: LoginHarness;

beforeAll(async () => {
  lh = await startLoginHarness();
}, 120_000);
afterAll(async () => {
  await lh?.stop();
});

/** What `ciport login` would send for `user`: a real code from the provider, with its verifier. */
async function authorize(user: string, port = 51_234): Promise<CodeRedemption> {
  const config = await oidc.discovery(new URL(lh.idp.issuer), CLI_CLIENT, undefined, oidc.None(), {
    execute: [oidc.allowInsecureRequests],
  });
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const redirect_uri = `http://127.0.0.1:${port}/callback`;
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri,
    scope: 'openid email profile groups',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  const back = new URL(await signInWithoutBrowser(lh.idp, url.href, user));
  const iss = back.searchParams.get('iss');
  return {
    code: back.searchParams.get('code') as string,
    state,
    ...(iss ? { iss } : {}),
    code_verifier: verifier,
    nonce,
    redirect_uri,
  };
}

async function redeem(body: unknown, raw?: Buffer) {
  const c = await lh.h.client();
  return api(c, 'POST', '/v1/operator/sessions', raw ? { rawBody: raw } : { body });
}

const tokenHits = () => lh.idp.hits.get('/token') ?? 0;

async function failures(): Promise<Json[]> {
  return (await lh.h.gateway.store.auditEvents({ limit: 10_000 })).filter(
    (e) => e.type === 'operator.sign_in_failed',
  );
}

describe('hostile: code redemption', () => {
  it('a replayed code is refused by the gateway, and after a restart by the provider', async () => {
    const r = await authorize('ana');
    const first = await redeem(r);
    expect(first.status).toBe(201);
    const again = await redeem(r);
    expect(again.status).toBe(401);
    expect(again.body.error).toMatchObject({
      code: 'CIPORT_E_SSO_FAILED',
      message: expect.stringContaining('presented before'),
    });
    await lh.h.restart();
    const afterRestart = await redeem(r);
    expect(afterRestart.status).toBe(401);
    expect(afterRestart.body.error.code).toBe('CIPORT_E_SSO_FAILED');
    expect(afterRestart.body.error.message).toContain('invalid_grant');
    expect(JSON.stringify([again.body, afterRestart.body])).not.toMatch(/cpo_/);
    // The first sign-in still works; the replays made none.
    const c = await lh.h.client();
    expect((await api(c, 'GET', '/v1/sessions', { bearer: first.body.token })).status).toBe(200);
    const signedIn = (await lh.h.gateway.store.auditEvents({ limit: 10_000 })).filter(
      (e) => e.type === 'operator.signed_in',
    );
    expect(signedIn).toHaveLength(1);
    expect(
      (await failures()).filter((e) => e.data.code === 'CIPORT_E_SSO_FAILED').length,
    ).toBeGreaterThanOrEqual(2);
  }, 120_000);

  it('two concurrent redemptions of one code: exactly one signs in', async () => {
    const r = await authorize('ana');
    const answers = await Promise.all([redeem(r), redeem(r), redeem(r)]);
    expect(answers.map((a) => a.status).sort()).toEqual([201, 401, 401]);
  }, 60_000);

  it('a wrong code_verifier, a wrong nonce, another loopback port: refused by the provider or openid-client', async () => {
    const wrongVerifier = await authorize('carla');
    const v = await redeem({ ...wrongVerifier, code_verifier: oidc.randomPKCECodeVerifier() });
    expect(v.status).toBe(401);
    expect(v.body.error.code).toBe('CIPORT_E_SSO_FAILED');
    expect(v.body.error.message).toContain('invalid_grant');

    const wrongNonce = await authorize('carla');
    const n = await redeem({ ...wrongNonce, nonce: oidc.randomNonce() });
    expect(n.status).toBe(401);
    expect(n.body.error.message).toMatch(/nonce/i);

    const otherPort = await authorize('carla', 51_235);
    const p = await redeem({ ...otherPort, redirect_uri: 'http://127.0.0.1:51236/callback' });
    expect(p.status).toBe(401);
    expect(p.body.error.message).toContain('invalid_grant');

    const failed = (await failures()).filter((e) => e.data.code === 'CIPORT_E_SSO_FAILED');
    expect(failed.length).toBeGreaterThanOrEqual(3);
    // A failure names no person (the ID token never verified) and holds no code.
    const codes = [wrongVerifier.code, wrongNonce.code, otherPort.code];
    for (const e of failed) for (const code of codes) expect(JSON.stringify(e)).not.toContain(code);
  }, 120_000);

  it('malformed requests are refused before the provider is asked (400/413), and not audited', async () => {
    const r = await authorize('dave');
    const before = tokenHits();
    const auditedBefore = (await failures()).length;
    const cases: Array<[unknown, number]> = [
      [{ ...r, redirect_uri: 'https://evil.example/callback' }, 400],
      [{ ...r, redirect_uri: 'http://127.0.0.1:8080/other' }, 400],
      [{ ...r, redirect_uri: 'http://localhost:8080/callback' }, 400],
      [{ ...r, code_verifier: 'short' }, 400],
      [{ ...r, code: 'a\nb' }, 400],
      [{ ...r, code: { $ne: '' } }, 400],
      [{ ...r, id_token: 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbmEifQ.' }, 400],
      [{ ...r, state: 'x'.repeat(513) }, 400],
      [[r], 400],
      ['code', 400],
    ];
    for (const [body, status] of cases) {
      const res = await redeem(body);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(status);
      expect(res.body.error.code).toBe('CIPORT_E_USAGE');
    }
    const big = await redeem(undefined, Buffer.from(JSON.stringify({ ...r, nonce: 'n'.repeat(20_000) })));
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('CIPORT_E_BODY_TOO_LARGE');
    const notJson = await redeem(undefined, Buffer.from('{"code": '));
    expect(notJson.status).toBe(400);
    expect(tokenHits()).toBe(before);
    expect((await failures()).length).toBe(auditedBefore);
    // The code is still good: nothing above spent it.
    expect((await redeem(r)).status).toBe(201);
  }, 60_000);

  it('GET|DELETE /v1/operator/sessions/current with junk tokens: 401 / signed_out false, nothing audited', async () => {
    const c = await lh.h.client();
    const head = (await lh.h.gateway.store.auditHead())?.seq;
    for (const bearer of ['', 'cpo_x', `cpo_${'A'.repeat(43)}`, hashSecret('cpo_x')]) {
      const get = await api(c, 'GET', '/v1/operator/sessions/current', bearer ? { bearer } : {});
      expect(get.status).toBe(401);
      const del = await api(c, 'DELETE', '/v1/operator/sessions/current', bearer ? { bearer } : {});
      expect(del.status).toBe(200);
      expect(del.body).toEqual({ signed_out: false });
    }
    expect((await lh.h.gateway.store.auditHead())?.seq).toBe(head);
  });
});

describe('hostile: device grant', () => {
  it('guessed handles are refused; a fast poll does not reach the provider', async () => {
    const c = await lh.h.client();
    const bad = await api(c, 'POST', '/v1/operator/device/token', {
      body: { handle: `cpd_${'A'.repeat(43)}` },
    });
    expect(bad.status).toBe(401);
    expect(bad.body.error.code).toBe('CIPORT_E_SSO_FAILED');
    const malformed = await api(c, 'POST', '/v1/operator/device/token', { body: { handle: 'x', extra: 1 } });
    expect(malformed.status).toBe(400);
    const start = await api(c, 'POST', '/v1/operator/device', { body: {} });
    expect(start.status).toBe(200);
    expect(start.body).toMatchObject({
      handle: expect.stringMatching(/^cpd_/),
      user_code: expect.any(String),
    });
    expect(JSON.stringify(start.body)).not.toMatch(/device_code/);
    const before = tokenHits();
    for (let i = 0; i < 5; i++) {
      const poll = await api(c, 'POST', '/v1/operator/device/token', { body: { handle: start.body.handle } });
      expect(poll.status).toBe(200);
      expect(poll.body).toEqual({ status: 'pending', interval: start.body.interval });
    }
    expect(tokenHits()).toBe(before);
    const withBody = await api(c, 'POST', '/v1/operator/device', { body: { client_id: 'console' } });
    expect(withBody.status).toBe(400);
  }, 60_000);
});

describe('hostile: failed sign-ins are rate limited (default limits)', () => {
  let strict: LoginHarness;
  beforeAll(async () => {
    strict = await startLoginHarness({ gateway: { signInLimits: {} } });
  }, 120_000);
  afterAll(async () => {
    await strict?.stop();
  });

  it('after 10 failures from one address the 11th attempt is 429 with Retry-After, unaudited, and even a good code waits', async () => {
    const saved = lh;
    lh = strict;
    try {
      const c = await strict.h.client();
      const r = await authorize('ana');
      const good = await authorize('ana', 51_240);
      for (let i = 0; i < 10; i++) {
        const res = await api(c, 'POST', '/v1/operator/sessions', {
          body: { ...r, code_verifier: oidc.randomPKCECodeVerifier() },
        });
        expect(res.status, `attempt ${i + 1}`).toBe(401);
      }
      const audited = (await failures()).length;
      expect(audited).toBe(10);
      const limited = await api(c, 'POST', '/v1/operator/sessions', { body: r });
      expect(limited.status).toBe(429);
      expect(limited.body.error.code).toBe('CIPORT_E_RATE_LIMITED');
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
      const hits = tokenHits();
      expect((await api(c, 'POST', '/v1/operator/sessions', { body: good })).status).toBe(429);
      expect(tokenHits()).toBe(hits);
      expect((await failures()).length).toBe(audited);
    } finally {
      lh = saved;
    }
  }, 120_000);
});
