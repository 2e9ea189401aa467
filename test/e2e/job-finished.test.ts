// Issue 6, the scenario as written: `ciport open` holds a live psql connection; the GitLab job
// API (fixture shaped like the real one) reports the job finished; the connection is cut within
// one poll interval, the per-session role is dropped and `session.ended` says `job_finished`.
// Run twice: with the gateway as the exit, and with an agent as the exit (the role lives there).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { agentConfig } from '../agent/harness.js';
import { baseEnv, ensureBuilt, openedEnv, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { GitlabApiFixture } from '../fixtures/gitlab-api.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { createDynamicAdmin } from '../fixtures/pg-dynamic-admin.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';
import { waitFor } from '../fixtures/wait-for.js';

const POLL_MS = 2_000;
const PROJECT = '61577203';
const dir = mkdtempSync(join(tmpdir(), 'ciport-job-finished-'));

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let gitlab: GitlabApiFixture;
let pg: PgServer;
let agent: Agent;
let jobSeq = 700_000;

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  gitlab = await GitlabApiFixture.start();
  pg = await startPgServer({
    roles: [{ name: 'app', password: 'unused-app-pw' }],
    databases: { app: 'app' },
  });
  await pg.sql('CREATE ROLE readonly NOLOGIN; GRANT pg_read_all_data TO readonly;');
  // A least-privilege admin, with the generated password for brevity.
  await createDynamicAdmin(pg, { password: pg.superPassword, owner: 'app', grant: ['readonly'] });
  const dynamic = {
    dynamic: {
      admin: { user: 'dyn_admin', password: { env: 'SUPER_PW' } },
      grant: ['readonly'],
      owner: 'app',
    },
  };
  const cfg = gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      data_dir: join(dir, 'gw'),
      store: { sqlite: { path: join(dir, 'gw', 'ciport.db') } },
      sessions: { default_ttl: '15m', lease_timeout: '10s', rate_limit: { per_minute: 10000, burst: 1000 } },
      issuers: [
        {
          name: 'gitlab',
          kind: 'gitlab',
          issuer: issuer.url,
          audience: 'ciport',
          job_api: { url: gitlab.url, token: { env: 'GITLAB_TOKEN' }, poll_interval: `${POLL_MS}ms` },
        },
      ],
      targets: [
        {
          name: 'db',
          protocol: 'postgres',
          address: `127.0.0.1:${pg.port}`,
          database: 'app',
          credentials: dynamic,
        },
      ],
      rules: [{ name: 'main', issuer: 'gitlab', when: { ref_protected: true }, allow: ['db', 'db-agent'] }],
    },
    { SUPER_PW: pg.superPassword, GITLAB_TOKEN: gitlab.token },
  );
  gateway = await startTestGateway(cfg);
  const { token } = await gateway.agents.registry.createEnrollment('dc1', ['db-agent']);
  const cfgAgent = agentConfig({
    gateway: gateway.url,
    dataDir: join(dir, 'agent'),
    name: 'dc1',
    targets: [
      {
        name: 'db-agent',
        protocol: 'postgres',
        address: `127.0.0.1:${pg.port}`,
        database: 'app',
        credentials: dynamic,
      } as never,
    ],
  });
  // agentConfig() only parses: resolve the admin password (the CLI resolves at load).
  for (const t of cfgAgent.targets)
    if (t.protocol === 'postgres')
      t.credentials?.dynamic?.admin.password.resolve({ SUPER_PW: pg.superPassword }, 'test');
  agent = new Agent(cfgAgent, {
    ca: gateway.caPem,
    env: { CIPORT_TEST_ENROLLMENT_TOKEN: token, SUPER_PW: pg.superPassword },
  });
  await agent.start();
  await waitFor(() => gateway.agents.hub.serves('db-agent'), 15_000, 'the agent');
  await built;
}, 120_000);

afterAll(async () => {
  await agent?.close();
  await gateway?.close();
  await gitlab?.close();
  await issuer?.close();
  await pg?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const roleExists = async (role: string) =>
  String(await pg.sql(`select count(*) from pg_roles where rolname = '${role}'`))
    .trim()
    .endsWith('1');

describe.each([
  ['the gateway', 'db', 'gateway'],
  ['an agent', 'db-agent', 'dc1'],
])('a finished job closes its port (exit: %s)', (_label, target, exit) => {
  it('cuts the live psql connection within one poll interval, drops the role, says job_finished', async () => {
    const job = String(++jobSeq);
    gitlab.setJob(PROJECT, job, 'running');
    const token = await issuer.mint({ job_id: job }, { preset: 'gitlab-main', audience: 'ciport' });
    const envFile = join(dir, `${job}.env`);
    const state = `${envFile}.state`;
    const open = spawnCli(['open', target, '--env-file', envFile, '--state', state], {
      env: baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ID_TOKEN: token }),
      timeoutMs: 60_000,
    });
    const vars = await openedEnv(envFile);
    const url = vars[`CIPORT_${target.toUpperCase().replace(/-/g, '_')}_URL`] as string;

    // A live psql connection: it reports its role, then sits in a long query.
    let out = '';
    const psql: ChildProcess = spawn('psql', [url, '-v', 'ON_ERROR_STOP=1', '-tA'], {
      env: { ...process.env, PSQLRC: '/dev/null' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    psql.stdout?.on('data', (d) => {
      out += d;
    });
    psql.stderr?.on('data', (d) => {
      out += d;
    });
    const exited = new Promise<number | null>((resolve) => psql.once('exit', (code) => resolve(code)));
    psql.stdin?.write('select current_user;\nselect pg_sleep(120);\n');
    await waitFor(() => /ciport_[0-9a-f]{16}/.test(out), 15_000, 'psql to connect');
    const role = (/ciport_[0-9a-f]{16}/.exec(out) as RegExpExecArray)[0];
    expect(await roleExists(role)).toBe(true);
    const [session] = await gateway.manager.list({ activeOnly: true });

    const finishedAt = Date.now();
    gitlab.setStatus(job, 'success');
    const code = await exited;
    const cutAfter = Date.now() - finishedAt;
    expect(code).not.toBe(0);
    expect(out).toMatch(/server closed the connection|terminating connection|connection to server was lost/i);
    // One poll interval, plus the time to cut and to notice on a loaded machine.
    expect(cutAfter).toBeLessThan(POLL_MS + 1_500);

    await waitFor(async () => !(await roleExists(role)), 10_000, 'the role to be dropped');
    const events = (await gateway.store.auditEvents({ limit: 10_000 })).filter(
      (e) => (e.data as { session?: string }).session === session?.id,
    );
    expect(events.find((e) => e.type === 'session.ended')?.data).toMatchObject({ reason: 'job_finished' });
    await waitFor(
      async () =>
        (await gateway.store.auditEvents({ limit: 10_000 })).some(
          (e) =>
            e.type === 'credential.revoked' &&
            (e.data as { session?: string }).session === session?.id &&
            (e.data as { reason?: string }).reason === 'session_ended:job_finished',
        ),
      10_000,
      'credential.revoked',
    );
    expect(events.find((e) => e.type === 'connection.opened')?.data).toMatchObject({ exit });

    // `ciport open` learns the session is over and exits.
    await runCli(['close', '--state', state], { env: baseEnv() });
    const r = await open.result;
    expect(r.code).not.toBeNull();
  });
});
