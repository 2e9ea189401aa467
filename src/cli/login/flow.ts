// The two ways `ciport login` signs a person in (docs/login.md). Both end with the gateway
// answering a `cpo_` operator token: the gateway redeems the code or device code itself, so no
// ID token ever reaches this process.
// - loopback: PKCE verifier, state and nonce made here; the provider's authorization URL is
//   printed (and opened in a browser where one can be); its redirect lands on a one-shot
//   listener on 127.0.0.1; the code, verifier, nonce and redirect URI go to the gateway.
// - device: the gateway starts the device authorization and keeps the device code; this
//   process prints the user code and polls the gateway at the interval it gives.
import { setTimeout as sleep } from 'node:timers/promises';
import * as oidc from 'openid-client';
import type { GatewayClient } from '../../client/gateway.js';
import { CiportError } from '../../errors/index.js';
import { keyUrlProblem } from '../../identity/url-policy.js';
import type { GatewayInfoSso } from '../../transport/gateway-info.js';
import {
  type CodeRedemption,
  DEVICE_HANDLE_RE,
  type DeviceStart,
  type OperatorSignIn,
  parseOperatorSignIn,
} from '../../transport/operator-login.js';
import { type Io, printable } from '../output.js';
import { openBrowser } from './browser.js';
import { listenLoopback } from './loopback.js';

export interface LoginContext {
  io: Io;
  client: GatewayClient;
  sso: GatewayInfoSso;
  /** How long to wait for the person, ms. */
  timeoutMs: number;
  /** The browser opener to use, or undefined: only print the URL. */
  opener: string | undefined;
}

function note(io: Io, text: string): void {
  io.stderr.write(`ciport: ${text}\n`);
}

function answer(body: unknown, what: string): OperatorSignIn {
  const signIn = parseOperatorSignIn(body);
  if (!signIn)
    throw new CiportError('CIPORT_E_GATEWAY_RESPONSE', `the gateway's answer to ${what} is not a sign-in`);
  return signIn;
}

/** The provider's metadata, read by this process to build the authorization URL. */
async function discoverProvider(sso: GatewayInfoSso): Promise<oidc.Configuration> {
  let issuer: URL;
  try {
    issuer = new URL(sso.issuer);
  } catch {
    throw new CiportError(
      'CIPORT_E_GATEWAY_RESPONSE',
      'the gateway names an identity provider that is not a URL',
    );
  }
  const problem = keyUrlProblem(issuer);
  if (problem) {
    throw new CiportError(
      'CIPORT_E_SSO_FAILED',
      `the gateway names identity provider ${issuer.href}: ${problem}`,
    );
  }
  try {
    return await oidc.discovery(issuer, sso.cli_client_id, undefined, oidc.None(), {
      timeout: 15,
      ...(issuer.protocol === 'http:' ? { execute: [oidc.allowInsecureRequests] } : {}),
    });
  } catch (err) {
    const e = err as { message?: string; cause?: { code?: string } };
    const why = printable(`${e.message ?? String(err)}${e.cause?.code ? ` (${e.cause.code})` : ''}`);
    throw new CiportError('CIPORT_E_SSO_FAILED', `cannot read identity provider ${issuer.href}: ${why}`);
  }
}

/** Authorization code + PKCE through a loopback redirect. */
export async function loopbackLogin(ctx: LoginContext): Promise<OperatorSignIn> {
  const { io, sso } = ctx;
  const config = await discoverProvider(sso);
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const listener = await listenLoopback(state, (why) =>
    note(io, `the sign-in listener refused a request: ${why}`),
  );
  try {
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: listener.redirectUri,
      scope: sso.scopes.join(' '),
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    const opened = ctx.opener ? openBrowser(ctx.opener, url.href, io.env) : false;
    note(
      io,
      `${opened ? 'a browser was opened to sign you in; if it did not appear, open' : 'to sign in, open'} this URL in a browser on this machine:\n\n  ${url.href}\n`,
    );
    note(io, `waiting up to ${Math.round(ctx.timeoutMs / 1000)} s (no browser here? ciport login --device)`);
    const callback = await listener.wait(ctx.timeoutMs);
    const body: CodeRedemption = {
      code: callback.code,
      state: callback.state,
      ...(callback.iss ? { iss: callback.iss } : {}),
      code_verifier: verifier,
      nonce,
      redirect_uri: listener.redirectUri,
    };
    try {
      const res = await ctx.client.api('POST', '/v1/operator/sessions', { body });
      const signIn = answer(res.body, 'POST /v1/operator/sessions');
      listener.finish({ ok: true });
      return signIn;
    } catch (err) {
      listener.finish({ ok: false, code: err instanceof CiportError ? err.code : 'CIPORT_E_INTERNAL' });
      throw err;
    }
  } finally {
    await listener.close();
  }
}

function deviceStart(body: unknown): DeviceStart {
  const b = (body ?? {}) as Record<string, unknown>;
  const text = (v: unknown, max: number) => typeof v === 'string' && v.length > 0 && v.length <= max;
  if (
    typeof b.handle !== 'string' ||
    !DEVICE_HANDLE_RE.test(b.handle) ||
    !text(b.user_code, 64) ||
    !text(b.verification_uri, 2048) ||
    typeof b.interval !== 'number' ||
    typeof b.expires_in !== 'number'
  ) {
    throw new CiportError(
      'CIPORT_E_GATEWAY_RESPONSE',
      "the gateway's device authorization answer is malformed",
    );
  }
  return {
    handle: b.handle,
    user_code: b.user_code as string,
    verification_uri: b.verification_uri as string,
    ...(text(b.verification_uri_complete, 2048)
      ? { verification_uri_complete: b.verification_uri_complete as string }
      : {}),
    interval: b.interval,
    expires_in: b.expires_in,
  };
}

function clampInterval(seconds: unknown): number {
  return typeof seconds === 'number' && Number.isFinite(seconds) ? Math.max(1, Math.min(60, seconds)) : 5;
}

/** The device authorization grant, run by the gateway; this process only shows the code and polls. */
export async function deviceLogin(ctx: LoginContext): Promise<OperatorSignIn> {
  const { io, client } = ctx;
  const start = deviceStart((await client.api('POST', '/v1/operator/device', { body: {} })).body);
  const complete = start.verification_uri_complete;
  const opened = ctx.opener && complete ? openBrowser(ctx.opener, complete, io.env) : false;
  note(
    io,
    `to sign in, open ${printable(start.verification_uri)} on any device and enter the code:\n\n  ${printable(start.user_code)}\n` +
      (complete ? `\n  (or open ${printable(complete)}${opened ? ', opened in a browser here' : ''})\n` : ''),
  );
  const deadline = Date.now() + Math.min(start.expires_in * 1000, ctx.timeoutMs);
  let interval = clampInterval(start.interval);
  for (;;) {
    await sleep(interval * 1000);
    if (Date.now() > deadline) {
      throw new CiportError(
        'CIPORT_E_SSO_FAILED',
        'the code was not entered in time; run ciport login --device again',
      );
    }
    const res = await client.api('POST', '/v1/operator/device/token', { body: { handle: start.handle } });
    if (res.status === 201) return answer(res.body, 'POST /v1/operator/device/token');
    interval = clampInterval((res.body as { interval?: unknown } | undefined)?.interval);
  }
}
