// Issue 10, item 13: a GitHub Actions job asks its token endpoint for the audience the gateway
// accepts. The gateway is configured as examples/gateway.yaml does (audience = public URL
// without its port) while the client reaches it at https://127.0.0.1:PORT; the token comes
// from the GitHub token-endpoint fixture, minted by a GitHub-shaped issuer on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseGatewayConfig } from '../../src/config/load.js';
import { type RunningGateway, startGateway } from '../../src/gateway/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { CIPORT_VERSION, githubAudience } from '../../src/transport/gateway-info.js';
import { GithubTokenEndpoint } from '../fixtures/github-actions-token.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { api, Capture, connectClient, tempDir } from '../gateway/helpers.js';
import { runCli } from '../helpers/cli.js';

const AUDIENCE = 'https://ciport.example.com';
let github: FixtureIssuer;
let gitlab: FixtureIssuer;
let endpoint: GithubTokenEndpoint;
let gateway: RunningGateway;
let cleanup: () => void;

beforeAll(async () => {
  github = await FixtureIssuer.start({ kind: 'github' });
  gitlab = await FixtureIssuer.start({ kind: 'gitlab' });
  endpoint = await GithubTokenEndpoint.start({
    mint: (audience) => github.mint({}, { preset: 'github-push', audience: audience ?? 'none' }),
  });
  const tmp = tempDir('ciport-audience-');
  cleanup = tmp.cleanup;
  const config = parseGatewayConfig(
    stringify({
      listen: '127.0.0.1:0',
      public_url: 'https://ciport.example.com:8443',
      data_dir: tmp.dir,
      issuers: [
        { name: 'gitlab', kind: 'gitlab', issuer: gitlab.url, audience: 'gitlab-aud' },
        { name: 'github', kind: 'github', issuer: github.url, audience: AUDIENCE },
      ],
      targets: [{ name: 'echo', protocol: 'tcp', address: '127.0.0.1:1' }],
      rules: [{ name: 'gh', issuer: 'github', when: { repository_id: { present: true } }, allow: ['echo'] }],
    }),
    'audience.yaml',
  );
  gateway = await startGateway(config, { logger: silentLogger(), stderr: new Capture() });
}, 60_000);

afterAll(async () => {
  await gateway?.close();
  await endpoint?.close();
  await github?.close();
  await gitlab?.close();
  cleanup?.();
});

const jobEnv = (extra: Record<string, string> = {}) => ({
  CIPORT_GATEWAY: gateway.url,
  CIPORT_CA_FILE: gateway.caFile as string,
  ...endpoint.env,
  ...extra,
});

describe('GET /v1/info', () => {
  it("answers without authentication: version and each issuer's audiences, nothing else", async () => {
    const c = await connectClient(gateway.url, gateway.caPem);
    try {
      const res = await api(c, 'GET', '/v1/info');
      expect(res.status).toBe(200);
      expect(res.body).toEqual({
        version: CIPORT_VERSION,
        issuers: [
          { name: 'gitlab', kind: 'gitlab', audiences: ['gitlab-aud'] },
          { name: 'github', kind: 'github', audiences: [AUDIENCE] },
        ],
      });
      // No issuer URLs, rules or targets.
      expect(JSON.stringify(res.body)).not.toContain(github.url);
      expect(JSON.stringify(res.body)).not.toContain('echo');
    } finally {
      c.destroy();
    }
  });
});

describe('the client on GitHub Actions', () => {
  it('the old default (the gateway URL with its port) is refused: the mismatch of the issue', async () => {
    const r = await runCli(['whoami', '--audience', gateway.url], jobEnv());
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('CIPORT_E_TOKEN_WRONG_AUDIENCE');
  });

  it('asks for the advertised audience by default, and the gateway accepts the token', async () => {
    const before = endpoint.requests.length;
    const r = await runCli(['whoami', '--json'], jobEnv());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).decision).toMatchObject({ decision: 'allow', rule: 'gh' });
    expect(endpoint.requests.slice(before)).toEqual([
      { audience: AUDIENCE, apiVersion: '2.0', authorized: true },
    ]);
  });

  it('ciport exec opens the port with the advertised audience', async () => {
    const r = await runCli(['exec', 'echo', '--', process.execPath, '-e', 'process.exit(7)'], jobEnv());
    expect(r.code).toBe(7);
    expect(endpoint.requests.at(-1)?.audience).toBe(AUDIENCE);
  });

  it('--audience still wins', async () => {
    await runCli(['whoami', '--audience', 'custom-aud'], jobEnv());
    expect(endpoint.requests.at(-1)?.audience).toBe('custom-aud');
  });

  it('a token from CIPORT_ID_TOKEN never makes the client ask /v1/info or GitHub', async () => {
    const before = endpoint.requests.length;
    const token = await github.mint({}, { preset: 'github-push', audience: AUDIENCE });
    const r = await runCli(['whoami', '--json'], jobEnv({ CIPORT_ID_TOKEN: token }));
    expect(r.code).toBe(0);
    expect(endpoint.requests.length).toBe(before);
  });
});

describe('choosing among advertised audiences', () => {
  const info = (issuers: { kind: 'gitlab' | 'github' | 'oidc'; audiences: string[] }[]) => ({
    version: '0',
    issuers: issuers.map((i, n) => ({ name: `i${n}`, ...i })),
  });
  it('keeps the gateway URL when a github issuer accepts it, else its first audience', () => {
    const url = 'https://gw.example:8443';
    expect(githubAudience(info([{ kind: 'github', audiences: ['a', url] }]), url)).toBe(url);
    expect(
      githubAudience(
        info([
          { kind: 'gitlab', audiences: ['g'] },
          { kind: 'github', audiences: ['a', 'b'] },
        ]),
        url,
      ),
    ).toBe('a');
    expect(githubAudience(info([{ kind: 'oidc', audiences: ['o'] }]), url)).toBe(url);
  });
});
