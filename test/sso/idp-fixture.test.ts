// The loopback OpenID provider the sign-in tests use behaves like the tenant it stands in for:
// discovery, PKCE required, groups in the ID token, the device grant, and a login form that
// `signInWithoutBrowser` completes. openid-client (the library the gateway uses) is the client.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SsoIdp, signInWithoutBrowser, startSsoIdp } from '../fixtures/sso-idp.js';

describe('sso idp fixture', () => {
  let idp: SsoIdp;
  beforeAll(async () => {
    idp = await startSsoIdp({
      clients: [
        {
          client_id: 'console',
          client_secret: 'console-secret',
          redirect_uris: ['https://127.0.0.1:9/ui/callback'],
        },
        { client_id: 'cli', redirect_uris: ['http://127.0.0.1/callback'], application_type: 'native' },
      ],
    });
  });
  afterAll(() => idp.close());

  it('code + PKCE: the ID token names the user with email and groups', async () => {
    const config = await oidc.discovery(new URL(idp.issuer), 'console', 'console-secret', undefined, {
      execute: [oidc.allowInsecureRequests],
    });
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: 'https://127.0.0.1:9/ui/callback',
      scope: 'openid email profile groups',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    const back = await signInWithoutBrowser(idp, url.toString(), 'dave');
    const tokens = await oidc.authorizationCodeGrant(config, new URL(back), {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
    });
    expect(tokens.claims()).toMatchObject({ sub: 'dave', email: 'dave@example.com', groups: ['dba'] });
  });

  it('refuses an authorization request without PKCE', async () => {
    const config = await oidc.discovery(new URL(idp.issuer), 'console', 'console-secret', undefined, {
      execute: [oidc.allowInsecureRequests],
    });
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: 'https://127.0.0.1:9/ui/callback',
      scope: 'openid',
      state: oidc.randomState(),
    });
    const back = new URL(await signInWithoutBrowser(idp, url.toString(), 'dave'));
    expect(back.searchParams.get('error')).toBe('invalid_request');
  });

  it('device grant for the public CLI client, and a loopback redirect on any port', async () => {
    const config = await oidc.discovery(new URL(idp.issuer), 'cli', undefined, oidc.None(), {
      execute: [oidc.allowInsecureRequests],
    });
    const device = await oidc.initiateDeviceAuthorization(config, { scope: 'openid email groups' });
    await signInWithoutBrowser(idp, device.verification_uri_complete ?? device.verification_uri, 'carla', {
      userCode: device.user_code,
    });
    const tokens = await oidc.pollDeviceAuthorizationGrant(config, { ...device, interval: 0.01 } as never);
    expect(tokens.claims()).toMatchObject({ sub: 'carla', groups: ['compliance'] });

    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: 'http://127.0.0.1:54321/callback',
      scope: 'openid',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state: 's',
    });
    const back = new URL(await signInWithoutBrowser(idp, url.toString(), 'ana'));
    expect(back.origin).toBe('http://127.0.0.1:54321');
    expect(back.searchParams.get('code')).toBeTruthy();
  });
});
