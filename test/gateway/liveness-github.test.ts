// Job liveness for a GitHub Actions issuer through a real gateway: the fixture GitHub API marks
// the token's workflow job completed → the session's tunnel is cut within one poll interval and
// `session.ended` says job_finished; a completed job's token is refused.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type RunningGateway, startGateway } from '../../src/gateway/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { GithubApiFixture } from '../fixtures/github-api.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  api,
  Capture,
  closed,
  connectClient,
  type EchoServer,
  h2,
  openSession,
  startEcho,
  tempDir,
  testConfig,
  tunnel,
} from './helpers.js';

const REPO = 'acme/ledger';
const RUN = '9876543210';
const JOB = '30366254157';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function start(): Promise<{
  gw: RunningGateway;
  gh: GithubApiFixture;
  issuer: FixtureIssuer;
  echo: EchoServer;
}> {
  const gh = await GithubApiFixture.start();
  cleanups.push(() => gh.close());
  const issuer = await FixtureIssuer.start({ kind: 'github' });
  cleanups.push(() => issuer.close());
  const echo = await startEcho();
  cleanups.push(() => echo.close());
  const { dir, cleanup } = tempDir('ciport-gh-');
  cleanups.push(cleanup);
  const tokenFile = join(dir, 'gh-token');
  writeFileSync(tokenFile, gh.token, { mode: 0o600 });
  const config = testConfig({
    dataDir: dir,
    issuerUrl: issuer.url,
    echoPort: echo.port,
    rules: [
      { name: 'ledger', issuer: 'github', when: { repository: REPO }, allow: ['echo'], max_ttl: '30m' },
    ],
    extra: {
      issuers: [
        {
          name: 'github',
          kind: 'github',
          issuer: issuer.url,
          audience: 'ciport',
          job_api: { url: gh.url, token: { file: tokenFile }, poll_interval: '200ms' },
        },
      ],
    },
  });
  const gw = await startGateway(config, {
    logger: silentLogger(),
    stderr: new Capture(),
    sweepIntervalMs: 200,
  });
  cleanups.push(() => gw.close());
  return { gw, gh, issuer, echo };
}

describe('job liveness (GitHub Actions)', () => {
  it('a completed workflow job cuts its session within one poll interval; its token is then refused', async () => {
    const { gw, gh, issuer } = await start();
    gh.setRun(REPO, RUN, 1, 'in_progress');
    gh.setJob(REPO, JOB, RUN, 1, 'in_progress');
    const c = await connectClient(gw.url, gw.caPem);
    cleanups.push(() => c.destroy());
    const token = await issuer.mint({}, { preset: 'github-push' });
    const s = await openSession(c, token, { targets: ['echo'] });
    expect((await gw.store.getSession(s.id))?.jobRef).toMatchObject({
      platform: 'github',
      repository: REPO,
      run_id: RUN,
      run_attempt: '1',
      job: JOB,
    });
    const stream = await tunnel(c, s, 'echo');
    const started = Date.now();
    gh.setJob(REPO, JOB, RUN, 1, 'completed', 'success');
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    expect(Date.now() - started).toBeLessThan(800);
    expect(gh.jobHits(JOB)).toBeGreaterThanOrEqual(2);
    // The connections are cut first, then the end commits (src/session/manager.ts `end`).
    const ended = await waitFor(async () => {
      const r = await gw.store.getSession(s.id);
      return r?.state === 'ended' ? r : undefined;
    });
    expect(ended.endReason).toBe('job_finished');
    const refused = await api(c, 'POST', '/v1/sessions', {
      bearer: await issuer.mint({}, { preset: 'github-push' }),
      body: {},
    });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('CIPORT_E_JOB_NOT_RUNNING');
  });
});
