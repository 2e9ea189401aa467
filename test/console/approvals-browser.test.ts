// Pending approvals in the console, in a real browser (Debian's Chromium driven by
// playwright-core), against a real gateway, the OpenID provider fixture on loopback and the
// machine's PostgreSQL: a job's real `ciport exec` waits on a rule with `approval: {groups: [dba]}`
// and prints its console link; dave (group dba at the provider → approver) signs in through the
// provider from that very link and approves, and the job's psql runs. carla (auditor) sees no
// buttons and a forged POST gets 403; ana (admin, not in dba) is refused by the group check, so
// the SSO groups claim is what the check reads; a job of dave's own is refused as self-approval;
// a deny in the console makes the waiting exec exit 3 with the reason; a POST without the CSRF
// token is refused; a request that timed out says so. Screenshots go to test-output/screenshots/.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleContext, launchChromium } from '../fixtures/chromium.js';
import { baseEnv, ensureBuilt, ROOT, spawnCli } from '../fixtures/cli.js';
import { waitFor } from '../fixtures/wait-for.js';
import { auditOf, type ConsoleWorld, startConsoleWorld } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-console-approvals-'));
const SHOTS = join(ROOT, 'test-output', 'screenshots');
const PSQL = `psql -h "$CIPORT_PG_HOST" -p "$CIPORT_PG_PORT" -U postgres -tAc 'select 1'`;
/** Generous: Chromium and the gateway share a loaded 2-core machine with other test runs. */
const UI_TIMEOUT = 60_000;

let world: ConsoleWorld;
let browser: Browser;
let jobs = 0;

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const built = ensureBuilt();
  const rule = (name: string, allow: string[], timeout: string) => ({
    name,
    issuer: 'gitlab',
    when: { project_id: '61577203', ref_protected: true },
    allow,
    max_ttl: '30m',
    approval: { groups: ['dba'], count: 1, timeout },
  });
  world = await startConsoleWorld({
    dir,
    targets: [
      { name: 'pg', protocol: 'tcp', address: '127.0.0.1:5432' },
      { name: 'pgquick', protocol: 'tcp', address: '127.0.0.1:5432' },
    ],
    rules: [rule('prod-db', ['pg'], '5m'), rule('prod-db-quick', ['pgquick'], '5s')],
  });
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

/** Sign `login` in through the provider's login page, starting from `url` (a console URL). */
async function signIn(context: BrowserContext, login: string, url: string): Promise<Page> {
  const page = await context.newPage();
  page.on('dialog', (d) => void d.accept());
  await page.goto(url);
  await page.waitForURL((u) => u.toString().startsWith(world.idp.issuer));
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any-password');
  await Promise.all([
    page.waitForURL((u) => u.toString().startsWith(world.url)),
    page.click('button[type="submit"]'),
  ]);
  return page;
}

const shot = (page: Page, name: string) =>
  page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

/** A waiting `ciport exec` of its own CI job; `claims` override the token's. */
async function waitingJob(target: string, command: string, claims: Record<string, unknown> = {}) {
  const token = await world.issuer.mint(
    { job_id: String(7_000_000 + ++jobs), ...claims },
    { preset: 'gitlab-main', audience: 'ciport' },
  );
  const job = spawnCli(['exec', target, '--', 'sh', '-c', command], {
    env: baseEnv({ CIPORT_GATEWAY: world.url, CIPORT_CA_FILE: world.gateway.caFile, CIPORT_ID_TOKEN: token }),
    timeoutMs: 180_000,
  });
  const [id, link] = await waitFor(
    () => {
      const m = /session (ses_[A-Za-z0-9_-]+) waits for approval \([^)]*\): (\S+)\n/.exec(job.stderr());
      return m ? [m[1] as string, m[2] as string] : undefined;
    },
    60_000,
    'the waiting line',
  );
  return { job, id, link };
}

/** POST a console form from `context` (its cookies) with `fields`, not following redirects. */
const post = (context: BrowserContext, path: string, form: Record<string, string>) =>
  context.request.post(`${world.url}${path}`, { form, headers: { origin: world.url }, maxRedirects: 0 });

const csrfOf = (page: Page) => page.locator('form[action="/ui/logout"] input[name="csrf"]').inputValue();

describe('pending approvals in the console (Chromium)', () => {
  it('dave (dba) opens the link the job printed, approves, and the job’s psql runs', async () => {
    const { job, id, link } = await waitingJob('pg', PSQL);
    expect(link).toBe(`${world.url}/ui/approvals/${id}`);

    const context = await newContext();
    // Signed out: the link leads through the provider's sign-in and back to the same page.
    const page = await signIn(context, 'dave', link);
    expect(new URL(page.url()).pathname).toBe(`/ui/approvals/${id}`);
    const main = page.locator('main');
    await expect(main.locator('[data-status]').textContent()).resolves.toBe('pending');
    const text = (await main.textContent()) ?? '';
    for (const part of ['acme/ledger', 'main', 'pipeline', 'job', 'pg', 'prod-db', '0/1 of dba', 'Time left'])
      expect(text).toContain(part);
    await expect(page.locator('nav.main a[href="/ui/approvals"]').count()).resolves.toBe(1);

    // The list shows it with principal, targets, rule, approvals and time left.
    const list = await context.newPage();
    await list.goto(`${world.url}/ui/approvals`);
    const row = list.locator(`tr[data-approval="${id}"]`);
    await expect(row.textContent()).resolves.toMatch(
      /acme\/ledger[\s\S]*pg[\s\S]*prod-db[\s\S]*0\/1 of dba[\s\S]*yes/,
    );
    await shot(list, 'approvals-pending');
    await list.close();
    await shot(page, 'approval-detail');

    await page.fill('form[action$="/approve"] input[name="reason"]', 'CHG-4711: read check');
    await Promise.all([
      page.waitForURL(`**/ui/approvals/${id}`),
      page.click('form[action$="/approve"] button'),
    ]);
    await expect(main.locator('[data-status]').textContent()).resolves.toBe('approved');
    await expect(main.textContent()).resolves.toContain('CHG-4711: read check');
    await expect(page.locator('form[action$="/approve"]').count()).resolves.toBe(0);
    await shot(page, 'approval-approved');

    const done = await job.result;
    expect(done.stdout).toBe('1\n');
    expect(done.code).toBe(0);
    // The group the check counted is the one the provider's groups claim gave dave.
    const granted = (await auditOf(world, 'approval.granted')).find((e) => e.data.session === id);
    expect(granted?.data).toMatchObject({
      by: `oidc:${world.idp.issuer}#dave`,
      note: 'CHG-4711: read check',
      groups: ['dba'],
    });
    await context.close();
  }, 300_000);

  it('carla (auditor) sees no buttons and a forged POST is 403; ana (admin, not dba) is refused by group; a console deny makes exec exit 3 with the reason', async () => {
    const { job, id, link } = await waitingJob('pg', PSQL);

    const auditor = await newContext();
    const carla = await signIn(auditor, 'carla', link);
    await expect(carla.locator('form[action*="/ui/approvals/"]').count()).resolves.toBe(0);
    await expect(carla.locator('main .notice').textContent()).resolves.toContain('CIPORT_E_ADMIN_FORBIDDEN');
    await shot(carla, 'approval-auditor');
    const forged = await post(auditor, `/ui/approvals/${id}/approve`, {
      csrf: await csrfOf(carla),
      reason: 'forged',
    });
    expect(forged.status()).toBe(403);
    expect(forged.headers()['ciport-error']).toBe('CIPORT_E_ADMIN_FORBIDDEN');
    await auditor.close();

    const admin = await newContext();
    const ana = await signIn(admin, 'ana', link);
    await expect(ana.locator('form[action*="/ui/approvals/"]').count()).resolves.toBe(0);
    await expect(ana.locator('main .notice').textContent()).resolves.toContain(
      'CIPORT_E_APPROVAL_NOT_IN_GROUP',
    );
    const outside = await post(admin, `/ui/approvals/${id}/approve`, { csrf: await csrfOf(ana) });
    expect(outside.status()).toBe(403);
    expect(outside.headers()['ciport-error']).toBe('CIPORT_E_APPROVAL_NOT_IN_GROUP');
    expect(await outside.text()).toContain('Not an approver of this request');
    await admin.close();

    const context = await newContext();
    const page = await signIn(context, 'dave', link);
    // Without the CSRF token, from dave's own signed-in browser: refused.
    const noToken = await post(context, `/ui/approvals/${id}/deny`, { reason: 'no token' });
    expect(noToken.status()).toBe(403);
    expect(noToken.headers()['ciport-error']).toBe('CIPORT_E_CSRF_REFUSED');
    expect((await world.gateway.store.getSession(id))?.approval?.state).toBe('pending');
    expect(job.child.exitCode).toBeNull();

    // A second tab still shows the buttons after the deny: its Approve then meets a decided request.
    const stale = await context.newPage();
    stale.on('dialog', (d) => void d.accept());
    await stale.goto(link);

    await page.fill('form[action$="/deny"] input[name="reason"]', 'not during the freeze');
    await Promise.all([page.waitForURL(`**/ui/approvals/${id}`), page.click('form[action$="/deny"] button')]);
    await expect(page.locator('main [data-status]').textContent()).resolves.toBe('denied');
    await shot(page, 'approval-denied');
    const done = await job.result;
    expect(done.code).toBe(3);
    expect(done.stdout).toBe('');
    expect(done.stderr).toContain(
      `ciport: CIPORT_E_APPROVAL_DENIED: session ${id} was denied by oidc:${world.idp.issuer}#dave: not during the freeze`,
    );

    await Promise.all([stale.waitForLoadState('load'), stale.click('form[action$="/approve"] button')]);
    await expect(stale.locator('h1').textContent()).resolves.toBe('Already decided');
    await expect(stale.locator('main').textContent()).resolves.toContain('CIPORT_E_APPROVAL_DECIDED');
    await shot(stale, 'approval-already-decided');
    await context.close();
  }, 300_000);

  it('dave’s own job: no self-approval; a request that timed out says so', async () => {
    const own = await waitingJob('pg', 'true', { user_login: 'dave', user_email: 'dave@example.com' });
    const context = await newContext();
    const page = await signIn(context, 'dave', own.link);
    await expect(page.locator('form[action*="/ui/approvals/"]').count()).resolves.toBe(0);
    await expect(page.locator('main .notice').textContent()).resolves.toContain('CIPORT_E_APPROVAL_SELF');
    const self = await post(context, `/ui/approvals/${own.id}/approve`, { csrf: await csrfOf(page) });
    expect(self.status()).toBe(403);
    expect(self.headers()['ciport-error']).toBe('CIPORT_E_APPROVAL_SELF');
    expect(await self.text()).toContain('You cannot decide on your own request');
    own.job.child.kill('SIGTERM');
    await own.job.result;

    // 5 s to decide: the page is open, nobody clicks in time.
    const quick = await waitingJob('pgquick', 'true');
    await page.goto(quick.link);
    await expect(page.locator('form[action$="/approve"]').count()).resolves.toBe(1);
    const done = await quick.job.result;
    expect(done.code).toBe(3);
    expect(done.stderr).toContain('CIPORT_E_APPROVAL_TIMEOUT');
    await Promise.all([page.waitForLoadState('load'), page.click('form[action$="/approve"] button')]);
    await expect(page.locator('h1').textContent()).resolves.toBe('The approval timed out');
    await expect(page.locator('main').textContent()).resolves.toContain('CIPORT_E_APPROVAL_TIMEOUT');
    await shot(page, 'approval-timed-out');
    await context.close();
  }, 300_000);
});
