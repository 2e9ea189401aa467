// The gateway as the public OpenID client `sso.cli_client_id` (docs/login.md): it redeems the
// authorization code `ciport login` received on its loopback listener, and runs the device grant
// for `ciport login --device`, with openid-client. The ID token is received here, straight from
// the provider's token endpoint, checked by openid-client (issuer, audience = the CLI client,
// expiry, issued-at, nonce, azp) and never leaves this process: the CLI only gets the operator
// token the gateway mints, so there is no ID token to steal or replay.
//
// Discovery is lazy and single-flight: started in the background at gateway start, retried at
// most every RETRY_MS after a failure, so a provider that is down delays sign-ins, not the
// gateway, and `GET /v1/info` never waits on it for long.
import * as oidc from 'openid-client';
import type { SsoConfig } from '../../config/sso.js';
import { CiportError } from '../../errors/index.js';
import type { Logger } from '../../log/logger.js';
import { printable } from '../../text/printable.js';
import type { CodeRedemption } from '../../transport/operator-login.js';

export const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const RETRY_MS = 10_000;
/** Seconds openid-client waits for one request to the provider. */
const REQUEST_TIMEOUT_S = 10;
const DESCRIPTION_MAX = 200;

export interface ProviderOptions {
  sso: SsoConfig & { cli_client_id: string };
  log: Logger;
  /** fetch for the provider (tests); default the global one. */
  fetch?: typeof fetch;
}

/** What one device poll found: the ID token's claims, or that the person has not finished. */
export type DevicePollResult = { claims: Record<string, unknown> } | { wait: 'pending' | 'slow_down' };

export class CliSignInProvider {
  readonly #sso: ProviderOptions['sso'];
  readonly #log: Logger;
  readonly #fetch: typeof fetch | undefined;
  #config: oidc.Configuration | undefined;
  #discovering: Promise<oidc.Configuration> | undefined;
  #failedAt = 0;

  constructor(options: ProviderOptions) {
    this.#sso = options.sso;
    this.#log = options.log;
    this.#fetch = options.fetch;
  }

  /** Scopes the CLI requests: "openid" first, then `sso.scopes`. */
  get scopes(): string[] {
    return ['openid', ...this.#sso.scopes.filter((s) => s !== 'openid')];
  }

  /** True / false once discovery answered; undefined before. */
  get deviceSupported(): boolean | undefined {
    return this.#config ? Boolean(this.#config.serverMetadata().device_authorization_endpoint) : undefined;
  }

  /** Start discovery (if not done) and wait for it at most `ms`; never throws. */
  async settle(ms: number): Promise<void> {
    if (this.#config) return;
    if (!this.#discovering && Date.now() - this.#failedAt < RETRY_MS) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.configuration().catch(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ms);
      }),
    ]);
    clearTimeout(timer);
  }

  /** The discovered client configuration; CIPORT_E_SSO_FAILED when the provider cannot be read. */
  configuration(): Promise<oidc.Configuration> {
    if (this.#config) return Promise.resolve(this.#config);
    this.#discovering ??= this.#discover().finally(() => {
      this.#discovering = undefined;
    });
    return this.#discovering;
  }

  async #discover(): Promise<oidc.Configuration> {
    const issuer = new URL(this.#sso.issuer);
    try {
      const config = await oidc.discovery(issuer, this.#sso.cli_client_id, undefined, oidc.None(), {
        timeout: REQUEST_TIMEOUT_S,
        // Plain http only for a loopback issuer (the config schema refuses any other).
        ...(issuer.protocol === 'http:' ? { execute: [oidc.allowInsecureRequests] } : {}),
        ...(this.#fetch ? { [oidc.customFetch]: this.#fetch as oidc.CustomFetch } : {}),
      });
      this.#config = config;
      this.#log.info(
        { issuer: this.#sso.issuer, device: this.deviceSupported },
        'sso: provider discovered for ciport login',
      );
      return config;
    } catch (err) {
      this.#failedAt = Date.now();
      const why = describe(err);
      this.#log.warn({ issuer: this.#sso.issuer, err: why }, 'sso: provider discovery failed');
      throw new CiportError('CIPORT_E_SSO_FAILED', `the identity provider could not be read: ${why}`);
    }
  }

  /** Redeem a loopback authorization code; resolves to the verified ID token's claims. */
  async redeemCode(r: CodeRedemption): Promise<Record<string, unknown>> {
    const config = await this.configuration();
    const callback = new URL(r.redirect_uri);
    callback.searchParams.set('code', r.code);
    callback.searchParams.set('state', r.state);
    if (r.iss) callback.searchParams.set('iss', r.iss);
    try {
      const tokens = await oidc.authorizationCodeGrant(config, callback, {
        pkceCodeVerifier: r.code_verifier,
        expectedState: r.state,
        expectedNonce: r.nonce,
        idTokenExpected: true,
      });
      return idTokenClaims(tokens);
    } catch (err) {
      throw refused('the provider refused the authorization code', err);
    }
  }

  /** Start a device authorization for the CLI client. */
  async startDevice(): Promise<oidc.DeviceAuthorizationResponse> {
    const config = await this.configuration();
    if (!config.serverMetadata().device_authorization_endpoint) {
      throw new CiportError(
        'CIPORT_E_SSO_NOT_CONFIGURED',
        'the identity provider offers no device authorization grant; run ciport login without --device',
      );
    }
    try {
      return await oidc.initiateDeviceAuthorization(config, { scope: this.scopes.join(' ') });
    } catch (err) {
      throw refused('the provider refused to start a device authorization', err);
    }
  }

  /** One token request for a device code (RFC 8628 §3.4): never loops, the CLI polls. */
  async pollDevice(deviceCode: string): Promise<DevicePollResult> {
    const config = await this.configuration();
    try {
      const tokens = await oidc.genericGrantRequest(config, DEVICE_GRANT, { device_code: deviceCode });
      return { claims: idTokenClaims(tokens) };
    } catch (err) {
      if (err instanceof oidc.ResponseBodyError) {
        if (err.error === 'authorization_pending') return { wait: 'pending' };
        if (err.error === 'slow_down') return { wait: 'slow_down' };
        if (err.error === 'expired_token') {
          throw new CiportError('CIPORT_E_SSO_FAILED', 'the user code expired before sign-in completed');
        }
        if (err.error === 'access_denied') {
          throw new CiportError('CIPORT_E_SSO_FAILED', 'sign-in was declined at the identity provider');
        }
      }
      throw refused('the provider refused the device code', err);
    }
  }
}

function idTokenClaims(tokens: { claims(): oidc.IDToken | undefined }): Record<string, unknown> {
  const claims = tokens.claims();
  if (!claims) throw new CiportError('CIPORT_E_SSO_FAILED', 'the provider answered without an ID token');
  return claims as Record<string, unknown>;
}

/** An openid-client failure as CIPORT_E_SSO_FAILED, with the provider's own error where it gave one. */
function refused(what: string, err: unknown): CiportError {
  if (err instanceof CiportError) return err;
  return new CiportError('CIPORT_E_SSO_FAILED', `${what}: ${describe(err)}`, { cause: err });
}

/** Bounded, printable words for an openid-client or network failure (never a code or token). */
function describe(err: unknown): string {
  if (err instanceof oidc.ResponseBodyError) {
    const text = err.error_description ? `${err.error} (${err.error_description})` : err.error;
    return printable(text).slice(0, DESCRIPTION_MAX);
  }
  if (err instanceof oidc.AuthorizationResponseError) return printable(err.error).slice(0, DESCRIPTION_MAX);
  const e = err as {
    name?: string;
    message?: string;
    code?: string;
    cause?: { code?: string; message?: unknown };
  };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'no answer in time';
  const code = e?.code ?? e?.cause?.code;
  // openid-client's ClientError wraps oauth4webapi's, whose message names the check that failed
  // (e.g. the ID token's "nonce" claim) without the values compared.
  const detail =
    err instanceof oidc.ClientError && typeof e.cause?.message === 'string' ? `: ${e.cause.message}` : '';
  const message = printable(`${e?.message ?? String(err)}${detail}`).slice(0, DESCRIPTION_MAX);
  return code ? `${message} (${code})` : message;
}
