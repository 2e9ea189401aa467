// docs/gitlab-ci.md, run. A real gateway configured with the page's gateway block (the GitLab
// issuer is the GitLab-shaped fixture issuer, the targets are the machine's PostgreSQL on
// 127.0.0.1:5432 with a throwaway role and database; the rules are the page's, unchanged), an
// agent started as `ciport agent` from the page's agent block, and every job of every
// `.gitlab-ci.yml` block built as GitLab builds it (test/gitlab/ci-config.ts) and run as a runner
// runs it (test/gitlab/runner.ts): the component fetches the self-contained client from the
// gateway, checks it, opens the port; the job's script reaches the database; the port closes.
// Each run asserts the job's output and that the job's session ended, in the gateway's store.
// The only rewrite of the page: `https://ciport.example.com` (the URL jobs dial) is the test
// gateway's URL; the token audience stays the page's.
import { type ChildProcess, execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { RunningGateway } from '../../src/gateway/server.js';
import type { SessionRecord } from '../../src/store/types.js';
import { CIPORT_VERSION } from '../../src/version.js';
import { baseEnv, ensureBuilt, runCli, spawnCli } from '../fixtures/cli.js';
import { CLIENT_EXE, ensureClientBuilt } from '../fixtures/client-build.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import { buildJobs, isMap, withIncludes, type Yaml, type YamlMap } from './ci-config.js';
import { DOC_GATEWAY, type DocBlock, docBlocks } from './doc-blocks.js';
import { inPipeline, type JobRun, type PipelineContext, runJob } from './runner.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-gitlab-'));
const suffix = randomBytes(4).toString('hex');
const ROLE = `gitlabci_${suffix}`;
const ADMIN = `admin-${suffix}`;
const PROJECT = { id: '61577203', path: 'acme/ledger' };
/** The repository's checkout, as the migration example reads it. */
const CHECKOUT = {
  'db/migrations/001_accounts.sql':
    "create table accounts (id int primary key, owner text not null);\ninsert into accounts values (1, 'ada'), (2, 'grace');\n",
};

let issuer: FixtureIssuer;
let gateway: RunningGateway;
let agent: { child: ChildProcess; result: Promise<unknown>; stderr: () => string } | undefined;
const blocks: DocBlock[] = docBlocks();
/** Every job of the page's pipelines, by name. */
const jobs = new Map<string, YamlMap>();
const tested = new Set<string>();

function psqlAdmin(sql: string, db = 'postgres'): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      'psql',
      ['-h', '127.0.0.1', '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-tAc', sql],
      { env: { ...process.env, PSQLRC: '/dev/null' } },
      (err, stdout, stderr) =>
        err ? reject(new Error(`psql: ${stderr || err.message}`)) : resolve(stdout.trim()),
    ),
  );
}

/** A target of the page, pointed at the machine's PostgreSQL: the throwaway database and role (trust). */
function localTarget(target: Yaml): YamlMap {
  if (!isMap(target)) throw new Error('target is not a mapping');
  return { ...target, address: '127.0.0.1:5432', database: ROLE, credentials: { user: ROLE } };
}

const block = (kind: DocBlock['kind']) => blocks.find((b) => b.kind === kind)?.value as YamlMap;

/** The runner's PATH: the machine's, without any ciport on it (the component fetches its own). */
const hostPath = (process.env.PATH ?? '/usr/bin:/bin')
  .split(delimiter)
  .filter((d) => d && !existsSync(join(d, 'ciport')))
  .join(delimiter);

/** The host's tools minus some, as an image without them would be: one directory of links. */
function pathWithout(names: string[]): string {
  const bin = join(dir, `bin-without-${names.join('-')}`);
  if (existsSync(bin)) return bin;
  mkdirSync(bin);
  const linked = new Set(names);
  for (const d of hostPath.split(delimiter)) {
    for (const name of existsSync(d) ? readdirSync(d) : []) {
      if (linked.has(name)) continue;
      linked.add(name);
      symlinkSync(join(d, name), join(bin, name));
    }
  }
  return bin;
}

function context(over: Partial<PipelineContext> = {}): PipelineContext {
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  return {
    issuer,
    project: PROJECT,
    ref: 'main',
    refProtected: true,
    source: 'push',
    protectedEnvironments: ['production'],
    projectVariables: { CIPORT_CA_FILE: { value: gateway.caPem as string, file: true } },
    hostEnv: { PATH: hostPath, HOME: home, LANG: 'C.UTF-8' },
    buildsDir: join(dir, 'builds'),
    ...over,
  };
}

/** The job as the page defines it, dialling the test gateway. */
function docJob(name: string): YamlMap {
  const job = jobs.get(name);
  if (!job) throw new Error(`${name}: not a job of the page`);
  tested.add(name);
  return local(job);
}

function local(job: YamlMap): YamlMap {
  const variables = isMap(job.variables) ? { ...job.variables } : {};
  if (variables.CIPORT_GATEWAY === DOC_GATEWAY) variables.CIPORT_GATEWAY = gateway.url;
  return { ...job, variables };
}

/** A job of the test pipeline (first block) with other component inputs. */
function testJobWith(inputs: YamlMap): YamlMap {
  const main = blocks.find((b) => b.kind === 'pipeline' && 'test' in b.value)?.value as YamlMap;
  const include = (main.include as YamlMap[]).map((i) => ({
    ...i,
    inputs: { ...(i.inputs as YamlMap), ...inputs },
  }));
  return local(buildJobs(withIncludes({ ...main, include }, localInputs)).get('test') as YamlMap);
}

/** The component's gateway input, as the page gives it, pointed at the test gateway. */
function localInputs(inputs: YamlMap): YamlMap {
  return inputs.gateway === DOC_GATEWAY ? { ...inputs, gateway: gateway.url } : inputs;
}

async function sessionsOf(run: JobRun): Promise<SessionRecord[]> {
  return (await gateway.store.listSessions()).filter(
    (s) => (s.principal as { job_id?: string }).job_id === run.jobId,
  );
}

/** The job's one session, once it has ended. */
async function endedSession(run: JobRun): Promise<SessionRecord> {
  await waitFor(
    async () => (await sessionsOf(run)).every((s) => s.state === 'ended'),
    10_000,
    'the session to end',
  );
  const sessions = await sessionsOf(run);
  expect(sessions, run.log).toHaveLength(1);
  return sessions[0] as SessionRecord;
}

/** Records the job's session states when its script's shell has ended, before after_script. */
function atScriptEnd(): { states: string[]; betweenStages: (run: { jobId: string }) => Promise<void> } {
  const seen = {
    states: [] as string[],
    betweenStages: async (run: { jobId: string }) => {
      seen.states = (await sessionsOf({ jobId: run.jobId } as JobRun)).map((s) => s.state);
    },
  };
  return seen;
}

/** What every job run owes: no token in the log, no password in a printed URL, nothing left in /tmp. */
function expectClean(run: JobRun): void {
  for (const token of Object.values(run.tokens)) expect(run.log).not.toContain(token);
  expect(run.log).not.toMatch(/postgres:\/\/[^\s:@/]+:[^\s@/]+@/);
  expect(run.log).not.toMatch(/PGPASSWORD=/);
  expect(existsSync(`/tmp/ciport-${run.jobId}`), 'CIPORT_HOME removed').toBe(false);
}

beforeAll(async () => {
  const built = Promise.all([ensureBuilt(), ensureClientBuilt()]);
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  await psqlAdmin(`CREATE ROLE ${ROLE} LOGIN`);
  await psqlAdmin(`CREATE DATABASE ${ROLE} OWNER ${ROLE}`);

  // The page's gateway block: its issuer is our GitLab, its targets our PostgreSQL.
  const doc = block('gateway');
  const issuers = (doc.issuers as YamlMap[]).map((i) =>
    i.issuer === 'https://gitlab.example.com' ? { ...i, issuer: issuer.url } : i,
  );
  const config = gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      ...e2eGatewayDoc(join(dir, 'gw'), issuer.url, { adminEnv: 'ADMIN' }),
      issuers,
      // Besides the page's: a target whose rule needs approval (docs/approvals.md).
      targets: [...(doc.targets as Yaml[]), { name: 'gated-db', protocol: 'postgres', address: 'x:1' }].map(
        localTarget,
      ),
      rules: [
        ...(doc.rules as Yaml[]),
        {
          name: 'gated',
          issuer: String((issuers[0] as YamlMap).name),
          when: { project_id: PROJECT.id },
          allow: ['gated-db'],
          approval: { groups: ['dba'], timeout: '5m' },
        },
      ],
      client: { linux_x64: CLIENT_EXE },
    },
    { ADMIN },
  );
  await built;
  gateway = await startTestGateway(config, { sweepIntervalMs: 250 });

  // The page's agent, enrolled for its targets.
  const agentDoc = block('agent');
  const agentTargets = (agentDoc.targets as Yaml[]).map(localTarget);
  const enrolled = await runCli(
    [
      'agents',
      'enroll',
      '--name',
      String(agentDoc.name),
      '--targets',
      agentTargets.map((t) => t.name).join(','),
    ],
    {
      env: baseEnv({
        CIPORT_GATEWAY: gateway.url,
        CIPORT_CA_FILE: gateway.caFile,
        CIPORT_ADMIN_TOKEN: ADMIN,
      }),
    },
  );
  expect(enrolled.code, enrolled.stderr).toBe(0);
  writeFileSync(
    join(dir, 'agent.yaml'),
    stringify({
      ...agentDoc,
      gateway: gateway.url,
      ca_file: gateway.caFile,
      data_dir: join(dir, 'agent'),
      targets: agentTargets,
    }),
  );
  agent = spawnCli(['agent', '--config', join(dir, 'agent.yaml')], {
    env: baseEnv({ CIPORT_ENROLLMENT_TOKEN: enrolled.stdout.trim() }),
    timeoutMs: 900_000,
  });
  for (const t of agentTargets)
    await waitFor(() => gateway.agents.hub.serves(String(t.name)), 20_000, 'the agent');

  for (const b of blocks.filter((x) => x.kind === 'pipeline')) {
    for (const [name, job] of buildJobs(withIncludes(b.value, localInputs))) {
      expect(jobs.has(name), `job ${name} is defined twice on the page`).toBe(false);
      jobs.set(name, job);
    }
  }
}, 300_000);

afterAll(async () => {
  agent?.child.kill('SIGTERM');
  await agent?.result;
  await gateway?.close();
  await issuer?.close();
  await psqlAdmin(`DROP DATABASE IF EXISTS ${ROLE} WITH (FORCE)`).catch(() => undefined);
  await psqlAdmin(`DROP ROLE IF EXISTS ${ROLE}`).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe('docs/gitlab-ci.md: each job, run as a GitLab runner runs it', () => {
  it('test: a merge request pipeline reaches the test database; the port closes with the script', async () => {
    const ctx = context({ ref: 'feature/login', refProtected: false, source: 'merge_request_event' });
    const job = docJob('test');
    expect(inPipeline(ctx, 'test', job)).toBe(true);
    const scriptEnd = atScriptEnd();
    const run = await runJob(ctx, 'test', job, scriptEnd);
    // Closed by the script's own shell (the EXIT trap), not later by after_script.
    expect(scriptEnd.states).toEqual(['ended']);
    expect(run.code, run.log).toBe(0);
    expect(run.afterCode, run.log).toBe(0);
    expect(run.log).toContain(`ciport: client ${CIPORT_VERSION}, gateway ${gateway.url}`);
    expect(run.log).toContain('ciport: port open to test-db; it closes when the script ends');
    expect(run.log).toMatch(/^ answer \n-{8}\n {5}42\n/m);
    const session = await endedSession(run);
    expect(session).toMatchObject({ targets: ['test-db'], rule: 'ledger-tests', endReason: 'client_end' });
    // The principal is the job GitLab described: its project, ref and pipeline.
    expect(session.principal).toMatchObject({
      project: { id: PROJECT.id, path: PROJECT.path },
      ref: { name: 'feature/login', protected: false },
      event: 'merge_request_event',
      pipeline_id: run.env.CI_PIPELINE_ID,
    });
    expectClean(run);
  });

  it('migrate: on protected main, to the protected production environment, within 15 minutes', async () => {
    const ctx = context();
    const job = docJob('migrate');
    expect(inPipeline(ctx, 'migrate', job)).toBe(true);
    const run = await runJob(ctx, 'migrate', job, { checkout: CHECKOUT });
    expect(run.code, run.log).toBe(0);
    expect(run.log).toContain(`migrating ${ROLE} for ${run.env.CI_COMMIT_SHORT_SHA}`);
    expect(run.log).toMatch(/^2$/m);
    expect(await psqlAdmin("select string_agg(owner, ',' order by id) from accounts", ROLE)).toBe(
      'ada,grace',
    );
    const session = await endedSession(run);
    expect(session).toMatchObject({
      targets: ['production-db'],
      rule: 'ledger-migrate-production',
      endReason: 'client_end',
    });
    expect(session.principal).toMatchObject({ environment: { name: 'production', protected: true } });
    expect(session.expiresAt - session.createdAt).toBeLessThanOrEqual(15 * 60_000);
    expectClean(run);
  });

  it('migrate: not in a feature branch pipeline, and refused by policy if someone forces it there', async () => {
    const ctx = context({ ref: 'feature/x', refProtected: false });
    const job = docJob('migrate');
    expect(inPipeline(ctx, 'migrate', job)).toBe(false);
    const run = await runJob(ctx, 'migrate', job, { checkout: CHECKOUT });
    expect(run.code, run.log).toBe(3);
    expect(run.log).toContain('CIPORT_E_POLICY_DENIED');
    expect(run.log).toContain('ciport: no port for this job (ciport open exited 3)');
    expect(run.log).not.toContain('migrating');
    expect(await sessionsOf(run)).toEqual([]);
    expectClean(run);
  });

  it('nightly-report: a scheduled pipeline reaches the warehouse through the agent', async () => {
    const ctx = context({ source: 'schedule' });
    const job = docJob('nightly-report');
    expect(inPipeline(ctx, 'nightly-report', job)).toBe(true);
    expect(inPipeline(context(), 'nightly-report', job)).toBe(false);
    const run = await runJob(ctx, 'nightly-report', job);
    expect(run.code, run.log).toBe(0);
    expect(run.log).toContain(`report for ${ROLE}\n`);
    expect(readFileSync(join(run.projectDir, 'report.txt'), 'utf8')).toBe(`report for ${ROLE}\n`);
    const session = await endedSession(run);
    expect(session).toMatchObject({
      targets: ['warehouse'],
      rule: 'ledger-reports',
      endReason: 'client_end',
    });
    expectClean(run);
  });

  it('load-fixtures: .ciport-client, and ciport exec around one command', async () => {
    const run = await runJob(
      context({ ref: 'fixtures', refProtected: false }),
      'load-fixtures',
      docJob('load-fixtures'),
    );
    expect(run.code, run.log).toBe(0);
    expect(run.log).toContain(`loaded into ${ROLE}\n`);
    expect(run.log).not.toContain('ciport: port open');
    const session = await endedSession(run);
    expect(session).toMatchObject({ targets: ['test-db'], rule: 'ledger-tests', endReason: 'client_end' });
    expectClean(run);
  });

  it('seed-test-data: ciport on the image, open in before_script, close in after_script', async () => {
    // The image: the client from the gateway, checked against its checksum, on PATH.
    const image = join(dir, 'image-bin');
    mkdirSync(image, { recursive: true });
    const get = async (path: string) => {
      const res = await gatewayFetch(path);
      expect(res.status, path).toBe(200);
      return Buffer.from(await res.arrayBuffer());
    };
    const exe = await get('/v1/client/linux-x64');
    const sum = (await get('/v1/client/linux-x64.sha256')).toString().split(' ')[0];
    expect(createHash('sha256').update(exe).digest('hex')).toBe(sum);
    writeFileSync(join(image, 'ciport'), exe);
    chmodSync(join(image, 'ciport'), 0o755);

    const ctx = context({ hostEnv: { ...context().hostEnv, PATH: `${image}${delimiter}${hostPath}` } });
    const scriptEnd = atScriptEnd();
    const run = await runJob(ctx, 'seed-test-data', docJob('seed-test-data'), scriptEnd);
    // Still open when the script's shell ended: it is after_script's `ciport close` that ends it.
    expect(scriptEnd.states).toEqual(['active']);
    expect(run.code, run.log).toBe(0);
    expect(run.afterCode, run.log).toBe(0);
    expect(run.log).toContain(`seeded ${ROLE}`);
    const session = await endedSession(run);
    expect(session).toMatchObject({ targets: ['test-db'], rule: 'ledger-tests', endReason: 'client_end' });
    expectClean(run);
  });

  it('every job of the page was run above', () => {
    expect([...jobs.keys()].sort()).toEqual([...tested].sort());
  });
});

/** GET a path of the test gateway, trusting its CA (node's fetch takes no CA: use https). */
async function gatewayFetch(path: string): Promise<Response> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(`${gateway.url}${path}`, { ca: gateway.caPem }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 0 })));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the component and approvals', () => {
  /** Run the test job against `gated-db` and decide on its session once it waits for approval. */
  async function gatedJob(decision: 'approve' | 'deny', note?: string) {
    const running = runJob(context(), 'test', testJobWith({ targets: 'gated-db' }));
    const pending = await waitFor(
      async () =>
        (await gateway.manager.pendingApprovals()).find((p) => p.record.targets.includes('gated-db'))?.record,
      60_000,
      'a pending session',
    );
    const approver = {
      kind: 'token' as const,
      name: 'dba-oncall',
      roles: ['approver' as const],
      groups: ['dba'],
    };
    await gateway.manager.decide(pending.id, approver, decision, note);
    const run = await running;
    expect(run.log.match(/ waits for approval /g), run.log).toHaveLength(1);
    expect(run.log).toContain(`ciport: session ${pending.id} waits for approval (1 approver of dba, until `);
    expect(run.log).toContain(`${gateway.url}/ui/approvals/${pending.id}`);
    return { run, id: pending.id };
  }

  it('a target whose rule needs approval: the link shows while the job waits, the script runs once approved', async () => {
    const { run } = await gatedJob('approve');
    expect(run.code, run.log).toBe(0);
    expect(run.log).toMatch(/^ {5}42$/m);
    expect((await endedSession(run)).endReason).toBe('client_end');
    expectClean(run);
  }, 120_000);

  it('denied: the job fails with exit 3, saying who denied it and why; the script never runs', async () => {
    const { run, id } = await gatedJob('deny', 'not during the freeze');
    expect(run.code, run.log).toBe(3);
    expect(run.log).toContain(
      `ciport: CIPORT_E_APPROVAL_DENIED: session ${id} was denied by token:dba-oncall: not during the freeze`,
    );
    expect(run.log).toContain('ciport: no port for this job (ciport open exited 3)');
    expect(run.log).not.toContain('psql');
    expectClean(run);
  }, 120_000);
});

describe('the component when things go wrong', () => {
  it('the component runs under sh (dash) as well, as on an image without bash', async () => {
    const run = await runJob(context(), 'test', docJob('test'), { shell: 'sh' });
    expect(run.code, run.log).toBe(0);
    expect(run.log).toMatch(/^ {5}42$/m);
    expect((await endedSession(run)).endReason).toBe('client_end');
    expectClean(run);
  });

  it('three jobs at once on one runner: each its own client, port and session', async () => {
    const runs = await Promise.all(
      [0, 1, 2].map((i) =>
        runJob(context({ buildsDir: join(dir, `builds-concurrent-${i}`) }), 'test', docJob('test')),
      ),
    );
    for (const run of runs) {
      expect(run.code, run.log).toBe(0);
      expect(run.log).toMatch(/^ {5}42$/m);
      expect((await endedSession(run)).endReason).toBe('client_end');
      expectClean(run);
    }
    expect(new Set(runs.map((r) => r.jobId)).size).toBe(3);
  });

  it('a failing script still closes the port (the EXIT trap), and after_script runs', async () => {
    const job = { ...docJob('test'), script: ['psql -At -c "select 1"', 'exit 7'] };
    const scriptEnd = atScriptEnd();
    const run = await runJob(context(), 'test', job, scriptEnd);
    expect(scriptEnd.states).toEqual(['ended']);
    expect(run.code, run.log).toBe(7);
    expect(run.log).toContain('CI_JOB_STATUS=failed');
    expect((await endedSession(run)).endReason).toBe('client_end');
    expectClean(run);
  });

  it("a killed script shell (no trap runs) leaves the port to after_script's close", async () => {
    const job = { ...docJob('test'), script: ['psql -At -c "select 1"', 'kill -9 $BASHPID'] };
    const scriptEnd = atScriptEnd();
    const run = await runJob(context(), 'test', job, scriptEnd);
    expect(scriptEnd.states).toEqual(['active']);
    expect(run.code, run.log).toBe(137);
    expect((await endedSession(run)).endReason).toBe('client_end');
    expectClean(run);
  });

  it('a download that does not match client-sha256 never runs, and opens nothing', async () => {
    const run = await runJob(context(), 'test', testJobWith({ 'client-sha256': 'f'.repeat(64) }));
    expect(run.code, run.log).toBe(1);
    expect(run.log).toMatch(
      /ciport: the client from \S+ has sha256 [0-9a-f]{64}, client-sha256 \(CIPORT_CLIENT_SHA256\) pins f{64}/,
    );
    expect(await sessionsOf(run)).toEqual([]);
    expectClean(run);
  });

  it('the pinned checksum of the real client passes', async () => {
    const sum = createHash('sha256').update(readFileSync(CLIENT_EXE)).digest('hex');
    const run = await runJob(context(), 'test', testJobWith({ 'client-sha256': sum }));
    expect(run.code, run.log).toBe(0);
    expect((await endedSession(run)).endReason).toBe('client_end');
  });

  it('a client of another version than client-version is refused', async () => {
    const run = await runJob(context(), 'test', testJobWith({ 'client-version': '9.9.9' }));
    expect(run.code, run.log).toBe(1);
    expect(run.log).toContain(
      `ciport: the client is version ${CIPORT_VERSION}, client-version (CIPORT_CLIENT_VERSION) pins 9.9.9`,
    );
    expect(await sessionsOf(run)).toEqual([]);
  });

  it('client: image without a ciport on the image fails with a message', async () => {
    const run = await runJob(context(), 'test', testJobWith({ client: 'image' }));
    expect(run.code, run.log).toBe(1);
    expect(run.log).toContain("ciport: input client is image, but there is no ciport on this image's PATH");
  });

  it('no CA file but a CIPORT_CA_SHA256 pin: the CA from the gateway, used only if it has that checksum', async () => {
    const pin = createHash('sha256')
      .update(readFileSync(gateway.caFile as string))
      .digest('hex');
    const run = await runJob(
      context({ projectVariables: { CIPORT_CA_SHA256: { value: pin } } }),
      'test',
      docJob('test'),
    );
    expect(run.code, run.log).toBe(0);
    expect((await endedSession(run)).endReason).toBe('client_end');
    const wrong = context({ projectVariables: { CIPORT_CA_SHA256: { value: '0'.repeat(64) } } });
    const refused = await runJob(wrong, 'test', docJob('test'));
    expect(refused.code, refused.log).toBe(1);
    expect(refused.log).toContain('ciport: the CA the gateway serves is not the one CIPORT_CA_SHA256 pins');
    expect(await sessionsOf(refused)).toEqual([]);
  });

  it('an image with wget and no curl downloads with wget; one with neither says what it needs', async () => {
    const wget = await runJob(
      context({ hostEnv: { ...context().hostEnv, PATH: pathWithout(['curl']) } }),
      'test',
      docJob('test'),
    );
    expect(wget.code, wget.log).toBe(0);
    expect((await endedSession(wget)).endReason).toBe('client_end');
    const neither = context({ hostEnv: { ...context().hostEnv, PATH: pathWithout(['curl', 'wget']) } });
    const run = await runJob(neither, 'test', docJob('test'));
    expect(run.code, run.log).toBe(1);
    expect(run.log).toContain(
      'ciport: this image has neither curl nor wget: add one, or put ciport on the image',
    );
  });

  it('without CIPORT_CA_FILE the private CA is not trusted: no download, no port', async () => {
    const run = await runJob(context({ projectVariables: {} }), 'test', docJob('test'));
    expect(run.code, run.log).toBe(1);
    expect(run.log).toMatch(/ciport: cannot fetch https:\/\/127\.0\.0\.1:\d+\/v1\/client\/linux-x64\.sha256/);
    expect(await sessionsOf(run)).toEqual([]);
  });
});
