// What the `ciport login` tests share: a real OpenID provider on loopback (test/fixtures/sso-idp.ts)
// with a public CLI client, a real gateway whose `sso:` points at it (the usual test harness, with
// its log kept), and `ciport login` run as a process whose printed authorization URL is driven
// through the provider's login form, as a person's browser would.
import { mkdirSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { StartGatewayOptions } from '../../src/gateway/server.js';
import { baseEnv, type CliResult, ensureBuilt, spawnCli } from '../fixtures/cli.js';
import { linesLogger } from '../fixtures/gateway.js';
import { type SsoIdp, signInWithoutBrowser, startSsoIdp } from '../fixtures/sso-idp.js';
import { waitFor } from '../fixtures/wait-for.js';
import { type Harness, startHarness } from '../gateway/helpers.js';

export const CLI_CLIENT = 'ciport-cli';

export interface LoginHarness {
  idp: SsoIdp;
  h: Harness;
  /** Every gateway log line (debug level). */
  logLines: string[];
  url: string;
  stop(): Promise<void>;
}

export function ssoSection(issuer: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    issuer,
    client_id: 'console',
    client_secret: { env: 'CONSOLE_SECRET' },
    cli_client_id: CLI_CLIENT,
    scopes: ['openid', 'email', 'profile', 'groups'],
    roles: { admin: ['platform'], approver: ['dba'], auditor: ['compliance'] },
    ...extra,
  };
}

export async function startLoginHarness(
  options: { sso?: Record<string, unknown>; gateway?: StartGatewayOptions } = {},
): Promise<LoginHarness> {
  const idp = await startSsoIdp({
    clients: [
      {
        client_id: 'console',
        client_secret: 'console-secret',
        redirect_uris: ['https://127.0.0.1:9/ui/callback'],
      },
      { client_id: CLI_CLIENT, redirect_uris: ['http://127.0.0.1/callback'], application_type: 'native' },
    ],
  });
  const logLines: string[] = [];
  const logger = linesLogger(logLines);
  const h = await startHarness(
    { extra: { sso: ssoSection(idp.issuer, options.sso) }, env: { CONSOLE_SECRET: 'console-secret' } },
    { logger, signInLimits: LOOSE_LIMITS, ...options.gateway },
  );
  return {
    idp,
    h,
    logLines,
    url: h.gateway.url,
    async stop() {
      await h.stop();
      await idp.close();
    },
  };
}

/**
 * One login harness for a test file, with the CLI built: started before its tests, stopped
 * after; the returned function gives the running one.
 */
export function loginHarnessPerFile(): () => LoginHarness {
  let lh: LoginHarness | undefined;
  beforeAll(async () => {
    await ensureBuilt();
    lh = await startLoginHarness();
  }, 240_000);
  afterAll(async () => {
    await lh?.stop();
  });
  return () => lh as LoginHarness;
}

/** Limits no test run reaches by accident (the limits' own test uses the defaults). */
export const LOOSE_LIMITS = {
  perAddress: { perMinute: 6000, burst: 1000 },
  total: { perMinute: 6000, burst: 1000 },
  deviceStartsPerAddress: { perMinute: 6000, burst: 1000 },
};

/** A fresh XDG_CONFIG_HOME (under test/.tmp) for one person's CLI. */
export function configHome(h: Harness, name: string): string {
  const root = join(h.dataDir, 'homes');
  mkdirSync(root, { recursive: true });
  return mkdtempSync(join(root, `${name}-`));
}

/** The environment of an operator's CLI: the gateway's CA trusted, its own config home. */
export function operatorEnv(lh: LoginHarness, xdg: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return baseEnv({ CIPORT_CA_FILE: lh.h.gateway.caFile as string, XDG_CONFIG_HOME: xdg, ...extra });
}

/** The authorization URL `ciport login` printed (a line of its own, indented). */
export function printedAuthUrl(stderr: string, issuer: string): string | undefined {
  for (const line of stderr.split('\n')) {
    const t = line.trim();
    if (t.startsWith(`${issuer}/`)) return t;
  }
  return undefined;
}

export interface LoginRun {
  result: CliResult;
  /** The loopback listener's answer to the browser's redirect. */
  page: { status: number; text: string; headers: Headers } | undefined;
  authUrl: string;
  /** Where the provider redirected the browser (the code and state in its query). */
  callback: URL;
}

/**
 * Run `ciport login --gateway URL ARGS` as `user`: wait for the printed URL, sign in at the
 * provider without a browser, deliver the redirect to the CLI's listener, and wait for the CLI.
 * `beforeCallback` runs once the redirect URL is known (hostile tests send forgeries first).
 */
export async function runLogin(
  lh: LoginHarness,
  user: string,
  env: NodeJS.ProcessEnv,
  options: { args?: string[]; beforeCallback?: (callback: URL) => Promise<void> } = {},
): Promise<LoginRun> {
  const run = spawnCli(['login', '--gateway', lh.url, ...(options.args ?? [])], { env, timeoutMs: 120_000 });
  const authUrl = await Promise.race([
    waitFor(() => printedAuthUrl(run.stderr(), lh.idp.issuer), 60_000, 'ciport login to print the URL'),
    run.result.then((r) => {
      throw new Error(`ciport login exited ${r.code} before printing a URL: ${r.stderr}`);
    }),
  ]);
  const back = new URL(await signInWithoutBrowser(lh.idp, authUrl, user));
  await options.beforeCallback?.(back);
  let page: LoginRun['page'];
  try {
    const res = await fetch(back, { redirect: 'manual' });
    page = { status: res.status, text: await res.text(), headers: res.headers };
  } catch {
    page = undefined;
  }
  return { result: await run.result, page, authUrl, callback: back };
}

/** Run `ciport login --device` as `user`: read the code it prints and enter it at the provider. */
export async function runDeviceLogin(
  lh: LoginHarness,
  user: string,
  env: NodeJS.ProcessEnv,
  args: string[] = ['--device'],
): Promise<{ result: CliResult; userCode: string }> {
  const run = spawnCli(['login', '--gateway', lh.url, ...args], { env, timeoutMs: 120_000 });
  const printed = await Promise.race([
    waitFor(
      () => {
        const text = run.stderr();
        const code = /enter the code:\n\n {2}(\S+)/.exec(text)?.[1];
        const complete = /\(or open (\S+?)(?:,|\))/.exec(text)?.[1];
        return code && complete ? { code, complete } : undefined;
      },
      60_000,
      'ciport login --device to print a user code',
    ),
    run.result.then((r) => {
      throw new Error(`ciport login exited ${r.code} before printing a code: ${r.stderr}`);
    }),
  ]);
  await signInWithoutBrowser(lh.idp, printed.complete, user, { userCode: printed.code });
  return { result: await run.result, userCode: printed.code };
}
