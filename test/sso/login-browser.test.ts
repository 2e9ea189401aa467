// `ciport login` with a real browser (Debian's chromium driven by playwright-core): the person
// opens the printed URL, types their login at the provider, the provider redirects the browser
// to the CLI's loopback listener, whose page says they are signed in; the CLI then holds the
// sign-in. Screenshots of each page: test/.tmp/screenshots/login/.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../fixtures/chromium.js';
import { ROOT, runCli, spawnCli } from '../fixtures/cli.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  configHome,
  type LoginHarness,
  loginHarnessPerFile,
  operatorEnv,
  printedAuthUrl,
} from './login-harness.js';

const SHOTS = join(ROOT, 'test/.tmp/screenshots/login');
const harness = loginHarnessPerFile();
let lh: LoginHarness;
let browser: Browser;

beforeAll(async () => {
  lh = harness();
  mkdirSync(SHOTS, { recursive: true });
  browser = await launchChromium();
}, 120_000);
afterAll(async () => {
  await browser?.close();
});

/**
 * Submit the provider's login form, then confirm the consent page the provider shows for a
 * native client (oidc-provider's `native_client_prompt`, as Keycloak's consent screen would).
 */
async function submitAndConfirm(page: Page, shoot: boolean): Promise<void> {
  const loginPage = page.url();
  await page.locator('button[type="submit"]').click();
  await page.waitForURL((u) => u.href !== loginPage, { timeout: 60_000 });
  if (!page.url().includes('/interaction/')) return;
  await page.locator('button[type="submit"]').waitFor({ timeout: 60_000 });
  if (shoot) await page.screenshot({ path: join(SHOTS, '2-provider-consent.png') });
  await page.locator('button[type="submit"]').click();
}

describe('ciport login in a real browser', () => {
  it('ana signs in through the printed URL; the tab shows the outcome; the CLI can list sessions', async () => {
    const home = configHome(lh.h, 'browser-ana');
    const env = operatorEnv(lh, home);
    const run = spawnCli(['login', '--gateway', lh.url, '--no-open'], { env, timeoutMs: 180_000 });
    const authUrl = await waitFor(() => printedAuthUrl(run.stderr(), lh.idp.issuer), 60_000, 'the URL');
    const page = await browser.newPage();
    try {
      await page.goto(authUrl);
      await page.locator('input[name="login"]').fill('ana');
      await page.locator('input[name="password"]').fill('any-password');
      await page.screenshot({ path: join(SHOTS, '1-provider-login.png') });
      await submitAndConfirm(page, true);
      await page.waitForURL(/^http:\/\/127\.0\.0\.1:\d+\/callback\?/, { timeout: 60_000 });
      await page.getByRole('heading', { name: 'Signed in' }).waitFor({ timeout: 60_000 });
      expect(await page.textContent('body')).toContain('You can close this tab');
      await page.screenshot({ path: join(SHOTS, '3-signed-in.png') });
    } finally {
      await page.close();
    }
    const result = await run.result;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain('as ana@example.com (Ana Admin), role admin');
    const doc = JSON.parse(readFileSync(join(home, 'ciport', 'credentials.json'), 'utf8'));
    expect(doc.gateways[lh.url].operator.by).toBe(`oidc:${lh.idp.issuer}#ana`);
    const list = await runCli(['sessions', 'list', '--gateway', lh.url], { env });
    expect(list.code, list.stderr).toBe(0);
  }, 240_000);

  it('nobody (no mapped group): the tab says the sign-in was refused, with the code', async () => {
    const home = configHome(lh.h, 'browser-nobody');
    const run = spawnCli(['login', '--gateway', lh.url, '--no-open'], {
      env: operatorEnv(lh, home),
      timeoutMs: 180_000,
    });
    const authUrl = await waitFor(() => printedAuthUrl(run.stderr(), lh.idp.issuer), 60_000, 'the URL');
    const page = await browser.newPage();
    try {
      await page.goto(authUrl);
      await page.locator('input[name="login"]').fill('nobody');
      await page.locator('input[name="password"]').fill('any-password');
      await submitAndConfirm(page, false);
      await page.getByRole('heading', { name: 'Sign-in refused' }).waitFor({ timeout: 60_000 });
      expect(await page.textContent('body')).toContain('CIPORT_E_SSO_NO_ROLE');
      await page.screenshot({ path: join(SHOTS, '4-refused.png') });
    } finally {
      await page.close();
    }
    const result = await run.result;
    expect(result.code).toBe(3);
  }, 240_000);
});
