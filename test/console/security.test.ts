// The console's sign-in and its defences, over real HTTPS against a real gateway and a real
// OpenID provider (no browser: test/console/browser.test.ts drives Chromium). Each role signs in
// through the provider's form; a person without a mapped group is refused and audited; the
// return path cannot leave /ui; a callback with another sign-in's state, a replayed callback and
// a reused code are refused; tampered cookies get nobody in; every POST needs the sign-in's CSRF
// token from the same origin; signing out ends the sign-in server-side; every /ui response
// carries the security headers.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { safeReturn } from '../../src/web/console.js';
import { CONTENT_SECURITY_POLICY } from '../../src/web/respond.js';
import { signInWithoutBrowser } from '../fixtures/sso-idp.js';
import { auditOf, ConsoleClient, type ConsoleWorld, type Reply, startConsoleWorld } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-console-sec-'));
let world: ConsoleWorld;
/** Every /ui reply seen by any test: each must carry the security headers. */
const seen: Array<{ what: string; reply: Reply }> = [];

function track(client: ConsoleClient): ConsoleClient {
  const original = client.request.bind(client);
  client.request = async (method, path, options) => {
    const reply = await original(method, path, options);
    // 431: Node's HTTP parser refuses an oversized header block before any handler runs.
    if (new URL(path, world.url).pathname.startsWith('/ui') && reply.status !== 431) {
      seen.push({ what: `${method} ${path}`.slice(0, 120), reply });
    }
    return reply;
  };
  return client;
}

const client = () => track(new ConsoleClient(world));

beforeAll(async () => {
  world = await startConsoleWorld({ dir });
}, 120_000);

afterAll(async () => {
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('sign-in', { timeout: 120_000 }, () => {
  it('each role signs in through the provider; cookies are __Host-, Secure, HttpOnly, SameSite=Lax', async () => {
    for (const [login, role, home] of [
      ['ana', 'admin', '/ui/sessions'],
      ['dave', 'approver', '/ui/sessions'],
      ['carla', 'auditor', '/ui/sessions'],
    ] as const) {
      const c = client();
      const start = await c.get('/ui/login');
      expect(start.status).toBe(302);
      expect(start.location).toMatch(new RegExp(`^${world.idp.issuer}/`));
      const auth = new URL(start.location as string);
      expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
      expect(auth.searchParams.get('redirect_uri')).toBe(`${world.url}/ui/callback`);
      const loginCookie = ([] as string[]).concat(start.headers['set-cookie'] ?? []).join('\n');
      expect(loginCookie).toMatch(
        /^__Host-ciport_login=[A-Za-z0-9_-]+; Path=\/; Secure; HttpOnly; SameSite=Lax; Max-Age=600$/,
      );
      const back = await c.get(await signInWithoutBrowser(world.idp, start.location as string, login));
      expect(back.status, back.body).toBe(303);
      expect(back.location).toBe(home);
      const cookies = ([] as string[]).concat(back.headers['set-cookie'] ?? []);
      expect(cookies).toContain('__Host-ciport_login=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0');
      expect(cookies.find((l) => l.startsWith('__Host-ciport_session='))).toMatch(
        /^__Host-ciport_session=cpo_[A-Za-z0-9_-]{43}; Path=\/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600$/,
      );
      const home_ = await c.get(home);
      expect(home_.status).toBe(200);
      expect(home_.body).toContain(`(${role})`);
    }
    const signedIn = await auditOf(world, 'operator.signed_in');
    expect(signedIn.map((e) => [e.data.by, e.data.roles, e.data.via])).toEqual([
      [`oidc:${world.idp.issuer}#ana`, ['admin'], 'browser'],
      [`oidc:${world.idp.issuer}#dave`, ['approver'], 'browser'],
      [`oidc:${world.idp.issuer}#carla`, ['auditor'], 'browser'],
    ]);
    // the secret never reaches the log
    expect(JSON.stringify(signedIn)).not.toMatch(/cpo_/);
  });

  it('a person without a mapped group is refused, and the refusal is audited', async () => {
    const c = client();
    const back = await c.signIn('nobody');
    expect(back.status).toBe(403);
    expect(back.headers['ciport-error']).toBe('CIPORT_E_SSO_NO_ROLE');
    expect(back.body).toContain('none of their groups');
    expect(c.cookies.has('__Host-ciport_session')).toBe(false);
    const failed = await auditOf(world, 'operator.sign_in_failed');
    expect(failed.at(-1)?.data).toMatchObject({
      code: 'CIPORT_E_SSO_NO_ROLE',
      via: 'browser',
      subject: 'nobody',
    });
    expect((await c.get('/ui/sessions')).status).toBe(303);
  });

  it('the return path stays under /ui of this gateway', async () => {
    for (const evil of [
      'https://evil.example/ui',
      '//evil.example/ui',
      '/\\evil.example',
      '/ui/../v1/sessions',
      '/ui/%2e%2e/evil',
      '/ui//evil.example',
      'javascript:alert(1)',
      '/ui/x\nLocation: https://evil.example',
      '/uievil',
      '/ui/login?return=//evil.example',
      `/ui/${'a'.repeat(2000)}`,
    ]) {
      expect(safeReturn(evil), evil).toBeUndefined();
      const c = client();
      const back = await c.signIn('ana', evil);
      expect(back.status, evil).toBe(303);
      expect(back.location, evil).toBe('/ui/sessions');
    }
    expect(safeReturn('/ui/audit?project=a%2Fb&type=query')).toBe('/ui/audit?project=a%2Fb&type=query');
    const c = client();
    const back = await c.signIn('carla', '/ui/audit?type=query');
    expect(back.location).toBe('/ui/audit?type=query');
    // a signed-out visit keeps where it was going
    const fresh = client();
    const r = await fresh.get('/ui/audit?type=query');
    expect(r.status).toBe(303);
    expect(r.location).toBe(`/ui/login?return=${encodeURIComponent('/ui/audit?type=query')}`);
  });

  it("a callback with another sign-in's state is refused and audited", async () => {
    const a = client();
    const b = client();
    const authA = await a.startSignIn();
    await b.startSignIn();
    const callbackA = await signInWithoutBrowser(world.idp, authA, 'ana');
    const before = (await auditOf(world, 'operator.sign_in_failed')).length;
    const r = await b.get(callbackA);
    expect(r.status).toBe(401);
    expect(r.headers['ciport-error']).toBe('CIPORT_E_SSO_FAILED');
    expect(r.body).toContain('state mismatch');
    expect(b.cookies.has('__Host-ciport_session')).toBe(false);
    const failed = await auditOf(world, 'operator.sign_in_failed');
    expect(failed).toHaveLength(before + 1);
    expect(failed.at(-1)?.data).toMatchObject({ code: 'CIPORT_E_SSO_FAILED', via: 'browser' });
    // the callback is not usable afterwards either: b's sign-in was used up by the attempt
    expect((await b.get(callbackA)).status).toBe(401);
  });

  it('a replayed callback finds no sign-in; a reused code is refused by the provider', async () => {
    const c = client();
    const auth = await c.startSignIn();
    const loginCookie = c.cookies.get('__Host-ciport_login') as string;
    const callback = await signInWithoutBrowser(world.idp, auth, 'ana');
    expect((await c.get(callback)).status).toBe(303);
    const sessions = (await auditOf(world, 'operator.signed_in')).length;
    // the browser replays it: the login cookie is gone
    const replay = await c.get(callback);
    expect(replay.status).toBe(401);
    expect(replay.body).toContain('no sign-in is in progress');
    // an attacker holding the whole request (login cookie too) replays it: the code is spent
    const thief = client();
    thief.cookies.set('__Host-ciport_login', loginCookie);
    const reuse = await thief.get(callback);
    expect(reuse.status).toBe(401);
    expect(reuse.headers['ciport-error']).toBe('CIPORT_E_SSO_FAILED');
    expect(thief.cookies.has('__Host-ciport_session')).toBe(false);
    expect(await auditOf(world, 'operator.signed_in')).toHaveLength(sessions);
  });

  it('a flood of failed callbacks is audited up to a bound, then only logged', async () => {
    const before = (await auditOf(world, 'operator.sign_in_failed')).length;
    for (let i = 0; i < 40; i++) {
      const c = client();
      await c.startSignIn();
      const r = await c.get('/ui/callback?code=forged&state=not-this-one');
      expect(r.status).toBe(401);
    }
    const audited = (await auditOf(world, 'operator.sign_in_failed')).length - before;
    expect(audited).toBeGreaterThan(0);
    expect(audited).toBeLessThanOrEqual(30);
    expect(world.logLines.some((l) => l.includes('sign-in failure not audited'))).toBe(true);
  });

  it('tampered cookies get nobody in', async () => {
    const c = client();
    await c.signIn('ana');
    const secret = c.cookies.get('__Host-ciport_session') as string;
    const flipped = secret.slice(0, -1) + (secret.endsWith('A') ? 'B' : 'A');
    for (const value of [flipped, `${secret}x`, 'cpo_', 'admin', '', secret.toUpperCase()]) {
      const t = client();
      t.cookies.set('__Host-ciport_session', value);
      const r = await t.get('/ui/sessions');
      expect(r.status, value).toBe(303);
      expect(r.location).toMatch(/^\/ui\/login/);
      t.cookies.set('__Host-ciport_session', value);
      const p = await t.request('POST', '/ui/sessions/ses_x/revoke', { form: { csrf: 'x' } });
      expect(p.status, value).toBe(401);
    }
    // a tampered sign-in transaction is no sign-in at all
    const d = client();
    const auth = await d.startSignIn();
    const sealed = d.cookies.get('__Host-ciport_login') as string;
    d.cookies.set(
      '__Host-ciport_login',
      `${sealed.slice(0, 20)}${sealed[20] === 'A' ? 'B' : 'A'}${sealed.slice(21)}`,
    );
    const r = await d.get(await signInWithoutBrowser(world.idp, auth, 'ana'));
    expect(r.status).toBe(401);
    expect(r.body).toContain('no sign-in is in progress');
    // a `ciport login` (cli) sign-in's token is not a console cookie
    const { newOperatorSecret } = await import('../../src/identity/operator-secret.js');
    const { hashSecret } = await import('../../src/session/secret.js');
    const cli = newOperatorSecret();
    await world.gateway.store.createOperatorSession({
      secretHash: hashSecret(cli),
      kind: 'cli',
      issuer: world.idp.issuer,
      subject: 'ana',
      email: null,
      name: null,
      username: null,
      roles: ['admin'],
      groups: ['platform'],
      createdAt: Date.now(),
      expiresAt: Date.now() + 60_000,
    });
    const e = client();
    e.cookies.set('__Host-ciport_session', cli);
    expect((await e.get('/ui/sessions')).status).toBe(303);
  });
});

describe('CSRF and roles', { timeout: 120_000 }, () => {
  it('a POST without, with a wrong, or with another sign-in’s token, or from another origin, is refused', async () => {
    const ana = client();
    await ana.signIn('ana');
    const other = client();
    await other.signIn('ana');
    const good = await ana.csrf();
    const cases: Array<[string, Record<string, string>, Record<string, string>]> = [
      ['no token', {}, {}],
      ['wrong token', { csrf: 'x'.repeat(good.length) }, {}],
      ['short token', { csrf: good.slice(1) }, {}],
      ['another sign-in', { csrf: await other.csrf() }, {}],
      ['two tokens', { csrf: good }, {}],
      ['other origin', { csrf: good }, { origin: 'https://evil.example' }],
      ['opaque origin (sandboxed frame)', { csrf: good }, { origin: 'null', 'sec-fetch-site': 'cross-site' }],
      ['cross-site fetch', { csrf: good }, { 'sec-fetch-site': 'cross-site' }],
      ['same-site fetch', { csrf: good }, { 'sec-fetch-site': 'same-site' }],
    ];
    for (const [what, form, headers] of cases) {
      const body = new URLSearchParams(form);
      if (what === 'two tokens') body.append('csrf', good);
      const r = await ana.request('POST', '/ui/logout', { form: body, headers });
      expect(r.status, what).toBe(403);
      expect(r.headers['ciport-error'], what).toBe('CIPORT_E_CSRF_REFUSED');
    }
    // still signed in: none of them signed out
    expect((await ana.get('/ui/sessions')).status).toBe(200);
    // a JSON body is no form
    const json = await ana.request('POST', '/ui/logout', {
      form: JSON.stringify({ csrf: good }),
      headers: { 'content-type': 'application/json' },
    });
    expect(json.status).toBe(400);
  });

  it('an auditor sees no revoke button and a forged revoke is refused with 403; an approver cannot search the log', async () => {
    const carla = client();
    await carla.signIn('carla');
    const page = await carla.get('/ui/sessions');
    expect(page.status).toBe(200);
    expect(page.body).not.toContain('/revoke');
    const forged = await carla.post('/ui/sessions/ses_abcdef/revoke', { reason: 'x' });
    expect(forged.status).toBe(403);
    expect(forged.headers['ciport-error']).toBe('CIPORT_E_ADMIN_FORBIDDEN');
    expect(forged.body).toContain('may not sessions.revoke');
    const agent = await carla.post('/ui/agents/agt_abc/revoke');
    expect(agent.status).toBe(403);
    const dave = client();
    await dave.signIn('dave');
    const audit = await dave.get('/ui/audit');
    expect(audit.status).toBe(403);
    expect(audit.body).not.toContain('<table');
    const nav = await dave.get('/ui/policy');
    expect(nav.body).not.toContain('href="/ui/audit"');
    expect(nav.body).toContain('href="/ui/sessions"');
  });
});

describe('sign-out', { timeout: 120_000 }, () => {
  it('ends the sign-in in the store: the old cookie no longer works', async () => {
    const c = client();
    await c.signIn('ana');
    const old = c.cookies.get('__Host-ciport_session') as string;
    const token = await c.csrf();
    const out = await c.request('POST', '/ui/logout', { form: { csrf: token } });
    expect(out.status).toBe(303);
    expect(out.location).toBe('/ui/signed-out');
    expect(([] as string[]).concat(out.headers['set-cookie'] ?? [])).toContain(
      '__Host-ciport_session=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0',
    );
    expect((await auditOf(world, 'operator.signed_out')).at(-1)?.data).toMatchObject({
      by: `oidc:${world.idp.issuer}#ana`,
      via: 'browser',
    });
    const replay = client();
    replay.cookies.set('__Host-ciport_session', old);
    expect((await replay.get('/ui/sessions')).status).toBe(303);
    replay.cookies.set('__Host-ciport_session', old);
    const post = await replay.request('POST', '/ui/logout', { form: { csrf: token } });
    expect(post.status).toBe(401);
    expect((await c.get('/ui/signed-out')).body).toContain('Signed out');
  });
});

describe('audit search input', { timeout: 120_000 }, () => {
  it('malformed or oversized parameters get a bounded 400 naming the parameter; values are escaped', async () => {
    const c = client();
    await c.signIn('carla');
    const cases: Array<[string, RegExp]> = [
      [`project=${'p'.repeat(10_000)}`, /project: longer than 256/],
      ['since=yesterday', /since: expected an ISO 8601/],
      ['until=2026-13-45T99:99', /until: expected/],
      ['since=2026-11-02&until=2026-11-01', /since must be before until/],
      ['target=DB%3Cscript%3E', /target: not a target name/],
      ['type=nope', /type: not an audit event type/],
      ['decision=maybe', /decision: allow or deny/],
      ['before=-1', /before: a sequence number/],
      ['after=1e9', /after: a sequence number/],
      ['limit=100000', /limit: between 1 and 200/],
      ['session=../../etc', /session: not a session id/],
      ['project=a&project=b', /project: given 2 times/],
      [Array.from({ length: 40 }, (_, i) => `x${i}=1`).join('&'), /too many query parameters/],
    ];
    for (const [query, message] of cases) {
      const r = await c.get(`/ui/audit?${query}`);
      expect(r.status, query).toBe(400);
      expect(r.headers['ciport-error'], query).toBe('CIPORT_E_USAGE');
      expect(r.body, query).toMatch(message);
      expect(r.body.length, query).toBeLessThan(40_000);
    }
    const xss = await c.get(`/ui/audit?project=${encodeURIComponent('"><script>alert(1)</script>')}`);
    expect(xss.status).toBe(200);
    expect(xss.body).not.toContain('<script>alert(1)');
    expect(xss.body).toContain('value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"');
    // a URL too long for the header limit is refused before the console sees it
    const huge = await c.get(`/ui/audit?project=${'p'.repeat(20_000)}`);
    expect(huge.status).toBe(431);
  });
});

describe('headers', { timeout: 120_000 }, () => {
  it('every /ui response carries the CSP and the other security headers', async () => {
    const c = client();
    await c.get('/ui');
    await c.get('/ui/nowhere');
    await c.get('/ui/assets/console.css');
    await c.get('/ui/assets/console.js');
    await c.get('/ui/assets/nope.js');
    await c.request('PUT', '/ui/login');
    await c.signIn('ana');
    for (const path of [
      '/ui',
      '/ui/sessions',
      '/ui/sessions/rows',
      '/ui/audit',
      '/ui/agents',
      '/ui/policy',
      '/ui/review',
      '/ui/sessions/ses_none',
    ]) {
      await c.get(path);
    }
    expect(seen.length).toBeGreaterThan(40);
    for (const { what, reply } of seen) {
      expect(reply.headers['content-security-policy'], what).toBe(CONTENT_SECURITY_POLICY);
      expect(reply.headers['x-content-type-options'], what).toBe('nosniff');
      expect(reply.headers['referrer-policy'], what).toBe('no-referrer');
      expect(reply.headers['x-frame-options'], what).toBe('DENY');
      if (!what.includes('/ui/assets/console')) expect(reply.headers['cache-control'], what).toBe('no-store');
    }
    expect(CONTENT_SECURITY_POLICY).toBe(
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
  });
});

describe('HTTP/2', { timeout: 120_000 }, () => {
  it('serves the console over h2 too (what browsers negotiate)', async () => {
    const { connect } = await import('node:http2');
    const session = connect(world.url, { ca: world.gateway.caPem });
    const reply = await new Promise<{ status: number; csp: unknown }>((resolve, reject) => {
      const stream = session.request({ ':path': '/ui/sessions' });
      stream.on('response', (h) =>
        resolve({ status: Number(h[':status']), csp: h['content-security-policy'] }),
      );
      stream.on('error', reject);
      stream.resume();
    });
    session.close();
    expect(reply).toEqual({ status: 303, csp: CONTENT_SECURITY_POLICY });
  });
});
