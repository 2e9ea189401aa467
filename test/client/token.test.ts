import { type AddressInfo, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireToken, defaultAudience, fetchGithubActionsToken } from '../../src/client/token.js';
import { CiportError } from '../../src/errors/index.js';
import { GithubTokenEndpoint } from '../fixtures/github-actions-token.js';

const JWT = (aud: string | undefined) =>
  `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ aud })).toString('base64url')}.sig`;

let gh: GithubTokenEndpoint;
beforeAll(async () => {
  gh = await GithubTokenEndpoint.start({ mint: JWT });
});
afterAll(() => gh.close());

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function failure(p: Promise<unknown>): Promise<CiportError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CiportError);
    return err as CiportError;
  }
  throw new Error('expected a failure');
}

describe('token from the environment', () => {
  it('reads CIPORT_ID_TOKEN (trimmed) and names its variable', async () => {
    const t = await acquireToken({ env: { CIPORT_ID_TOKEN: ' eyJ.a.b\n' }, audience: 'x' });
    expect(t).toEqual({ token: 'eyJ.a.b', source: 'env:CIPORT_ID_TOKEN', envName: 'CIPORT_ID_TOKEN' });
  });

  it('reads the variable --token-env names', async () => {
    const t = await acquireToken({
      env: { GITLAB_OIDC: 'eyJ.c.d', CIPORT_ID_TOKEN: 'other' },
      tokenEnv: 'GITLAB_OIDC',
      audience: 'x',
    });
    expect(t.token).toBe('eyJ.c.d');
    expect(t.envName).toBe('GITLAB_OIDC');
  });

  it('prefers CIPORT_ID_TOKEN over GitHub Actions', async () => {
    const before = gh.requests.length;
    const t = await acquireToken({ env: { CIPORT_ID_TOKEN: 'eyJ.a.b', ...gh.env }, audience: 'x' });
    expect(t.source).toBe('env:CIPORT_ID_TOKEN');
    expect(gh.requests.length).toBe(before);
  });

  it('without any token: CIPORT_E_NO_TOKEN, exit 2, with a hint', async () => {
    const err = await failure(acquireToken({ env: {}, audience: 'x' }));
    expect(err.code).toBe('CIPORT_E_NO_TOKEN');
    expect(err.exitCode).toBe(2);
    expect(err.message).toMatch(/CIPORT_ID_TOKEN/);
    expect(err.message).toMatch(/id-token: write/);
  });

  it('--token-env naming an unset variable does not fall back to GitHub', async () => {
    const before = gh.requests.length;
    const err = await failure(acquireToken({ env: { ...gh.env }, tokenEnv: 'NOPE', audience: 'x' }));
    expect(err.code).toBe('CIPORT_E_NO_TOKEN');
    expect(gh.requests.length).toBe(before);
  });

  it('rejects a --token-env that is not a variable name', async () => {
    const err = await failure(acquireToken({ env: {}, tokenEnv: 'A-B', audience: 'x' }));
    expect(err.code).toBe('CIPORT_E_USAGE');
  });
});

describe('GitHub Actions token endpoint', () => {
  it('asks for the audience with the request token and returns "value"', async () => {
    gh.fail = undefined;
    const t = await acquireToken({ env: { ...gh.env }, audience: 'https://ciport.example.com:8443' });
    expect(t.source).toBe('github-actions');
    expect(t.envName).toBeUndefined();
    const last = gh.requests.at(-1);
    expect(last).toEqual({
      audience: 'https://ciport.example.com:8443',
      apiVersion: '2.0',
      authorized: true,
    });
    expect(JSON.parse(Buffer.from(t.token.split('.')[1] as string, 'base64url').toString())).toEqual({
      aud: 'https://ciport.example.com:8443',
    });
  });

  it('the default audience is the gateway URL without a trailing slash', () => {
    expect(defaultAudience(new URL('https://ciport.example.com/'))).toBe('https://ciport.example.com');
    expect(defaultAudience(new URL('https://gw.internal:8443'))).toBe('https://gw.internal:8443');
  });

  it('a wrong request token: CIPORT_E_TOKEN_UNAVAILABLE (exit 4), no secret in the message', async () => {
    const err = await failure(
      fetchGithubActionsToken({
        requestUrl: gh.requestUrl,
        requestToken: 'wrong-request-token',
        audience: 'a',
      }),
    );
    expect(err.code).toBe('CIPORT_E_TOKEN_UNAVAILABLE');
    expect(err.exitCode).toBe(4);
    expect(err.message).toMatch(/HTTP 401/);
    expect(err.message).toMatch(/id-token: write/);
    expect(err.message).not.toContain('wrong-request-token');
  });

  it('an endpoint error status fails with the status', async () => {
    gh.fail = { status: 500, body: '{"message":"boom"}' };
    try {
      const err = await failure(acquireToken({ env: { ...gh.env }, audience: 'a' }));
      expect(err.code).toBe('CIPORT_E_TOKEN_UNAVAILABLE');
      expect(err.message).toMatch(/HTTP 500/);
      expect(err.message).not.toContain(gh.requestToken);
    } finally {
      gh.fail = undefined;
    }
  });

  it('an answer without "value" fails', async () => {
    gh.fail = 'no-value';
    try {
      const err = await failure(acquireToken({ env: { ...gh.env }, audience: 'a' }));
      expect(err.message).toMatch(/without a token/);
    } finally {
      gh.fail = undefined;
    }
  });

  it('a reset connection fails', async () => {
    gh.fail = 'reset';
    try {
      const err = await failure(acquireToken({ env: { ...gh.env }, audience: 'a' }));
      expect(err.code).toBe('CIPORT_E_TOKEN_UNAVAILABLE');
      expect(err.message).toMatch(/request failed/);
    } finally {
      gh.fail = undefined;
    }
  });

  it('an unreachable endpoint fails quickly', async () => {
    const port = await closedPort();
    const err = await failure(
      fetchGithubActionsToken({
        requestUrl: `http://127.0.0.1:${port}/idtoken?api-version=2.0`,
        requestToken: 'r',
        audience: 'a',
      }),
    );
    expect(err.code).toBe('CIPORT_E_TOKEN_UNAVAILABLE');
    expect(err.message).toMatch(/ECONNREFUSED/);
  });
});
