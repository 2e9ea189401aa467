// The console in a real browser (Debian's Chromium driven by playwright-core), against a real
// gateway, a real OpenID provider on loopback and a real PostgreSQL (the machine's, as a
// `postgres` target): each role signs in through the provider's login page; a session opened by
// a real `ciport open` appears in the live table by itself; the admin revokes it and the app's
// connection is cut; an auditor sees no revoke button and a forged revoke gets 403; hostile
// project names and refs render as text; the explain box and the attest button work; signing out
// ends the sign-in for good. Screenshots of each page go to test-output/screenshots/.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleContext, launchChromium } from '../fixtures/chromium.js';
import { baseEnv, ensureBuilt, openedEnv, ROOT, spawnCli } from '../fixtures/cli.js';
import { waitFor } from '../fixtures/wait-for.js';
import { auditOf, type ConsoleWorld, startConsoleWorld } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-console-browser-'));
const SHOTS = join(ROOT, 'test-output', 'screenshots');
const HOSTILE_PROJECT = 'acme/<img src=x onerror="window.__xss=1">';
const HOSTILE_REF = '"><script>window.__xss=2</script>';
/** Generous: Chromium and the gateway share a loaded 2-core machine with other test runs. */
const UI_TIMEOUT = 60_000;

let world: ConsoleWorld;
let browser: Browser;
/** What the browser reported on the gateway's pages: CSP violations, script errors. */
const pageProblems: string[] = [];
let token: string;

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const built = ensureBuilt();
  world = await startConsoleWorld({
    dir,
    targets: [
      {
        name: 'pg',
        protocol: 'postgres',
        address: '127.0.0.1:5432',
        database: 'postgres',
        credentials: { user: 'postgres', password: { env: 'PG_PW' } },
      },
      { name: 'redis', protocol: 'tcp', address: '127.0.0.1:6379' },
    ],
    rules: [
      {
        name: 'ledger-main',
        issuer: 'gitlab',
        when: { project_id: '61577203', ref_protected: true },
        allow: ['pg', 'redis'],
        max_ttl: '30m',
      },
    ],
    env: { PG_PW: 'unused-with-trust-auth' },
  });
  token = await world.issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  browser = await launchChromium({ timeoutMs: 120_000 });
  await built;
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await world?.close();
  rmSync(dir, { recursive: true, force: true });
});

function newContext(): Promise<BrowserContext> {
  return consoleContext(browser, UI_TIMEOUT);
}

/** Sign `login` in through the provider's login page, starting from `path`. */
async function signIn(context: BrowserContext, login: string, path = '/ui'): Promise<Page> {
  const page = await context.newPage();
  page.on('dialog', (d) => void d.accept());
  page.on('console', (m) => {
    if (page.url().startsWith(world.url) && m.type() === 'error')
      pageProblems.push(`${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (err) => pageProblems.push(`${page.url()}: ${err.message}`));
  await page.goto(`${world.url}${path}`);
  await page.waitForURL((u) => u.toString().startsWith(world.idp.issuer));
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any-password');
  await Promise.all([
    page.waitForURL((u) => u.toString().startsWith(world.url)),
    page.click('button[type="submit"]'),
  ]);
  return page;
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** A session opened with the API directly, for a token with hostile claims. */
function openSession(bearer: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ targets: ['redis'] });
    const req = request(
      `${world.url}/v1/sessions`,
      {
        method: 'POST',
        ca: world.gateway.caPem,
        headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => {
          text += c.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('the console in Chromium', () => {
  it('admin: a live session from `ciport open` appears by itself, is revoked, and the app is cut off', async () => {
    const context = await newContext();
    const page = await signIn(context, 'ana');
    expect(new URL(page.url()).pathname).toBe('/ui/sessions');
    await expect(page.locator('header .who').textContent()).resolves.toContain('(admin)');

    const envFile = join(dir, 'open.env');
    const open = spawnCli(['open', 'pg', '--env-file', envFile, '--state', join(dir, 'open.json')], {
      env: baseEnv({
        CIPORT_GATEWAY: world.url,
        CIPORT_CA_FILE: world.gateway.caFile,
        CIPORT_ID_TOKEN: token,
      }),
      timeoutMs: 120_000,
    });
    const vars = await openedEnv(envFile, 60_000);
    const client = new pg.Client({ connectionString: vars.DATABASE_URL });
    const errors: Error[] = [];
    client.on('error', (err) => errors.push(err));
    let ended = false;
    client.on('end', () => {
      ended = true;
    });
    await client.connect();
    expect((await client.query('select 41 + 1 as answer')).rows[0]).toEqual({ answer: 42 });
    await client.query("select 'console-test' as marker");
    const [active] = await world.gateway.store.listSessions({ activeOnly: true });
    expect(active).toBeDefined();
    const id = active?.id as string;

    // No reload: console.js polls the rows and the new session shows up.
    const row = page.locator(`tr[data-session="${id}"]`);
    await row.waitFor({ state: 'visible', timeout: 60_000 });
    await expect(row.textContent()).resolves.toContain('acme/ledger');
    await expect(page.locator('#refresh-status').textContent()).resolves.toMatch(/Updated|Live/);
    await expect(row.locator('a[href*="/-/jobs/"]').count()).resolves.toBe(1);
    await shot(page, 'sessions-live');

    // Its detail, with the queries from the audit log.
    await page.click(`a[href="/ui/sessions/${id}"]`);
    await page.waitForURL(`**/ui/sessions/${id}`);
    await waitFor(
      async () =>
        (await auditOf(world, 'query')).some((e) => JSON.stringify(e.data).includes('console-test')),
      30_000,
      'the query events',
    );
    await page.reload();
    await expect(page.locator('main').textContent()).resolves.toContain("select 'console-test' as marker");
    await shot(page, 'session-detail');

    // Revoke from the detail page (the confirm dialog is accepted).
    await page.fill('form[action$="/revoke"] input[name="reason"]', 'console test: cut it');
    await Promise.all([
      page.waitForURL(`**/ui/sessions/${id}`),
      page.click('form[action$="/revoke"] button'),
    ]);
    await expect(page.locator('main').textContent()).resolves.toContain('revoked');
    await expect(page.locator('main').textContent()).resolves.toContain(`oidc:${world.idp.issuer}#ana`);
    await shot(page, 'session-revoked');

    const record = await world.gateway.store.getSession(id);
    expect(record).toMatchObject({
      state: 'ended',
      endReason: 'revoked',
      endedBy: `oidc:${world.idp.issuer}#ana`,
      endNote: 'console test: cut it',
    });
    // The app's connection is cut: the next query fails and the connection ends.
    await expect(client.query('select 1')).rejects.toThrow();
    await waitFor(() => ended || errors.length > 0, 30_000, 'the pg connection to be cut');
    const exit = await open.result;
    expect(exit.code).not.toBe(0);
    await client.end().catch(() => {});
    await context.close();
  }, 240_000);

  it('auditor: no revoke button, a forged revoke is refused with 403; the audit search and review work', async () => {
    // A live session to (not) revoke.
    const opened = await openSession(token);
    expect(opened.status).toBe(201);
    const id = (JSON.parse(opened.body) as { id: string }).id;
    const context = await newContext();
    const page = await signIn(context, 'carla');
    await page.locator(`tr[data-session="${id}"]`).waitFor();
    await expect(page.locator('button.danger').count()).resolves.toBe(0);
    await expect(page.locator('form[action$="/revoke"]').count()).resolves.toBe(0);
    await shot(page, 'sessions-auditor');

    // A forged revoke with the auditor's own valid CSRF token (from the sign-out form).
    const csrf = await page.locator('form[action="/ui/logout"] input[name="csrf"]').inputValue();
    const forged = await context.request.post(`${world.url}/ui/sessions/${id}/revoke`, {
      form: { csrf, reason: 'forged' },
      headers: { origin: world.url },
      maxRedirects: 0,
    });
    expect(forged.status()).toBe(403);
    expect(forged.headers()['ciport-error']).toBe('CIPORT_E_ADMIN_FORBIDDEN');
    expect((await world.gateway.store.getSession(id))?.state).toBe('active');
    // …and without the token, from a signed-in admin's browser, is refused as well.
    const admin = await newContext();
    await signIn(admin, 'ana');
    const noToken = await admin.request.post(`${world.url}/ui/sessions/${id}/revoke`, {
      form: { reason: 'no token' },
      maxRedirects: 0,
    });
    expect(noToken.status()).toBe(403);
    expect(noToken.headers()['ciport-error']).toBe('CIPORT_E_CSRF_REFUSED');
    expect((await world.gateway.store.getSession(id))?.state).toBe('active');
    await admin.close();

    await page.goto(`${world.url}/ui/audit?project=acme%2Fledger&type=session.opened`);
    await expect(page.locator('main table tbody tr').count()).resolves.toBeGreaterThan(0);
    await shot(page, 'audit-search');
    await page.goto(`${world.url}/ui/audit?decision=deny`);
    await shot(page, 'audit-denials');

    await page.goto(`${world.url}/ui/review?since=2h&until=now`);
    await expect(page.locator('.review h1').textContent()).resolves.toContain('Access review');
    await shot(page, 'review');
    // Printed, the review is the report alone: no navigation, no forms.
    await page.emulateMedia({ media: 'print' });
    await expect(page.locator('header.top').isVisible()).resolves.toBe(false);
    await expect(page.locator('form[action="/ui/review/attest"]').isVisible()).resolves.toBe(false);
    await expect(page.locator('.review h1').isVisible()).resolves.toBe(true);
    await shot(page, 'review-print');
    await page.emulateMedia({ media: 'screen' });
    await page.fill('input[name="comment"]', 'monthly review, all as expected');
    await Promise.all([page.waitForLoadState('load'), page.click('form[action="/ui/review/attest"] button')]);
    await expect(page.locator('h1').textContent()).resolves.toBe('Review attested');
    await shot(page, 'review-attested');
    const attested = (await auditOf(world, 'review.attested')).at(-1);
    expect(attested?.data).toMatchObject({
      reviewer: { issuer: world.idp.issuer, subject: 'carla', email: 'carla@example.com' },
      comment: 'monthly review, all as expected',
    });
    await context.close();
  }, 240_000);

  it('approver: policy and the explain box; agents page for the admin', async () => {
    const context = await newContext();
    const page = await signIn(context, 'dave', '/ui/policy');
    expect(new URL(page.url()).pathname).toBe('/ui/policy');
    await expect(page.locator('nav.main a[href="/ui/audit"]').count()).resolves.toBe(0);
    await page.fill(
      'textarea[name="claims"]',
      JSON.stringify({ iss: world.issuer.url, project_id: '61577203', ref_protected: 'true', ref: 'main' }),
    );
    await page.fill('input[name="targets"]', 'pg');
    await Promise.all([
      page.waitForLoadState('load'),
      page.click('form[action="/ui/policy/explain"] button'),
    ]);
    await expect(page.locator('main').textContent()).resolves.toContain('allowed by rule "ledger-main"');
    // the explanation keeps its lines
    await expect(page.locator('main pre').first().textContent()).resolves.toMatch(
      /\n {2}pg {2}rule "ledger-main"/,
    );
    await shot(page, 'policy-explain');
    await context.close();

    const admin = await newContext();
    const a = await signIn(admin, 'ana', '/ui/agents');
    await expect(a.locator('h1').textContent()).resolves.toBe('Agents');
    await shot(a, 'agents');
    await admin.close();
  }, 240_000);

  it('hostile project names and refs render as text and run nothing', async () => {
    const evil = await world.issuer.mint(
      { project_path: HOSTILE_PROJECT, ref: HOSTILE_REF },
      { preset: 'gitlab-main', audience: 'ciport' },
    );
    const opened = await openSession(evil);
    expect(opened.status, opened.body).toBe(201);
    const id = (JSON.parse(opened.body) as { id: string }).id;
    const context = await newContext();
    const page = await signIn(context, 'ana');
    const dialogs: string[] = [];
    page.on('dialog', (d) => dialogs.push(d.message()));
    for (const path of ['/ui/sessions', `/ui/sessions/${id}`, `/ui/audit?session=${id}`]) {
      await page.goto(`${world.url}${path}`);
      await expect(page.locator('main').textContent(), path).resolves.toContain(HOSTILE_PROJECT);
      await expect(page.locator('main').textContent(), path).resolves.toContain(HOSTILE_REF);
      await expect(page.evaluate('window.__xss'), path).resolves.toBeUndefined();
      await expect(page.locator('main img').count(), path).resolves.toBe(0);
      await expect(page.locator('main script').count(), path).resolves.toBe(0);
    }
    await shot(page, 'hostile-names');
    expect(dialogs).toEqual([]);
    await context.close();
  }, 240_000);

  it('without JavaScript: the pages work and the plain revoke form ends a session', async () => {
    const opened = await openSession(token);
    expect(opened.status).toBe(201);
    const id = (JSON.parse(opened.body) as { id: string }).id;
    const context = await browser.newContext({ ignoreHTTPSErrors: true, javaScriptEnabled: false });
    context.setDefaultTimeout(UI_TIMEOUT);
    const page = await signIn(context, 'ana');
    const row = page.locator(`tr[data-session="${id}"]`);
    await expect(row.count()).resolves.toBe(1);
    // no script: the page reloads itself instead (meta refresh in <noscript>)
    await expect(page.locator('noscript').count()).resolves.toBeGreaterThan(0);
    await Promise.all([page.waitForURL(`**/ui/sessions/${id}`), row.locator('button.danger').click()]);
    await expect(page.locator('main').textContent()).resolves.toContain('revoked');
    expect(await world.gateway.store.getSession(id)).toMatchObject({ state: 'ended', endReason: 'revoked' });
    await shot(page, 'no-script-revoked');
    await context.close();
  }, 240_000);

  it('a person without a mapped group is refused; signing out ends the sign-in server-side', async () => {
    const context = await newContext();
    const page = await signIn(context, 'nobody');
    await expect(page.locator('h1').textContent()).resolves.toBe('No ciport role');
    await shot(page, 'no-role');
    expect((await auditOf(world, 'operator.sign_in_failed')).at(-1)?.data).toMatchObject({
      code: 'CIPORT_E_SSO_NO_ROLE',
      subject: 'nobody',
    });
    await context.close();

    const admin = await newContext();
    const a = await signIn(admin, 'ana');
    const cookie = (await admin.cookies(world.url)).find((c) => c.name === '__Host-ciport_session');
    expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Lax', path: '/' });
    await Promise.all([a.waitForURL('**/ui/signed-out'), a.click('form[action="/ui/logout"] button')]);
    await shot(a, 'signed-out');
    expect((await admin.cookies(world.url)).some((c) => c.name === '__Host-ciport_session')).toBe(false);
    // The old cookie, replayed from another browser, is refused: the store ended the sign-in.
    const replay = await newContext();
    await replay.addCookies([{ ...(cookie as NonNullable<typeof cookie>) }]);
    const r = await replay.request.get(`${world.url}/ui/sessions`, { maxRedirects: 0 });
    expect(r.status()).toBe(303);
    expect(r.headers().location).toMatch(/^\/ui\/login/);
    await replay.close();
    await admin.close();
  }, 240_000);

  it("no console page violated its Content-Security-Policy or threw (the browser's own report)", () => {
    // the one refusal a test asked for: the no-role sign-in's 403 page
    const expected = (p: string) => p.includes('/ui/callback?') && p.includes('status of 403');
    expect(pageProblems.filter((p) => !expected(p))).toEqual([]);
  });
});
