// A gateway harness with job liveness: like test/gateway/helpers.ts `startHarness`, plus a
// fixture GitLab API and an issuer with `job_api` (secrets through files, as operators do).
import { writeFileSync } from 'node:fs';
import type { ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import type { GatewayConfig } from '../../src/config/schema.js';
import { type StartGatewayOptions, startGateway } from '../../src/gateway/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { GitlabApiFixture } from '../fixtures/gitlab-api.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { Capture, connectClient, type Harness, startEcho, tempDir, testConfig } from '../gateway/helpers.js';

export const HOOK_SECRET = 'hook-secret-4f1c2d9e';

export interface LivenessOptions {
  poll?: string;
  singleUse?: boolean;
  sessions?: Record<string, unknown>;
  /** Extra top-level config (e.g. `store:`). */
  extra?: Record<string, unknown>;
  /** Share this fixture API instead of starting one. */
  gitlab?: GitlabApiFixture;
  /** Share this issuer instead of starting one. */
  issuer?: FixtureIssuer;
  gateway?: StartGatewayOptions;
}

export interface LivenessHarness extends Harness {
  gitlab: GitlabApiFixture;
}

export function livenessConfig(
  dir: string,
  issuerUrl: string,
  gitlab: GitlabApiFixture,
  echoPort: number,
  options: LivenessOptions = {},
): Readonly<GatewayConfig> {
  const tokenFile = join(dir, 'gitlab-token');
  const hookFile = join(dir, 'gitlab-hook');
  writeFileSync(tokenFile, gitlab.token, { mode: 0o600 });
  writeFileSync(hookFile, HOOK_SECRET, { mode: 0o600 });
  return testConfig({
    dataDir: dir,
    issuerUrl,
    echoPort,
    ...(options.sessions ? { sessions: options.sessions } : {}),
    extra: {
      issuers: [
        {
          name: 'gitlab',
          kind: 'gitlab',
          issuer: issuerUrl,
          audience: 'ciport',
          ...(options.singleUse ? { single_use_jti: true } : {}),
          job_api: {
            url: gitlab.url,
            token: { file: tokenFile },
            poll_interval: options.poll ?? '200ms',
            webhook_secret: { file: hookFile },
          },
        },
      ],
      ...options.extra,
    },
  });
}

export async function startLivenessHarness(options: LivenessOptions = {}): Promise<LivenessHarness> {
  const ownsGitlab = !options.gitlab;
  const ownsIssuer = !options.issuer;
  const gitlab = options.gitlab ?? (await GitlabApiFixture.start());
  const issuer = options.issuer ?? (await FixtureIssuer.start());
  const echo = await startEcho();
  const { dir, cleanup } = tempDir('ciport-live-');
  const config = livenessConfig(dir, issuer.url, gitlab, echo.port, options);
  const stderr = new Capture();
  const clients: ClientHttp2Session[] = [];
  const start = (cfg: Readonly<GatewayConfig>, opts: StartGatewayOptions = {}) =>
    startGateway(cfg, { logger: silentLogger(), stderr, sweepIntervalMs: 200, ...options.gateway, ...opts });
  const h: LivenessHarness = {
    gitlab,
    issuer,
    echo,
    config,
    dataDir: dir,
    stderr,
    gateway: await start(config),
    async client() {
      const c = await connectClient(h.gateway.url, h.gateway.caPem);
      clients.push(c);
      return c;
    },
    token(claims = {}, preset = 'gitlab-main') {
      return issuer.mint(claims, { preset });
    },
    async restart(cfg = config, opts = {}) {
      await h.gateway.close();
      h.gateway = await start(cfg, opts);
      return h.gateway;
    },
    async stop() {
      for (const c of clients) c.destroy();
      await h.gateway.close();
      await echo.close();
      if (ownsIssuer) await issuer.close();
      if (ownsGitlab) await gitlab.close();
      cleanup();
    },
  };
  return h;
}
