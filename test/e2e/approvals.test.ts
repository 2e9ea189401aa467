// End to end, issue 14 "Approvals": the real gateway (in process, SQLite store) with rules that
// need approval, jobs running the real `ciport exec` / `ciport open` processes against the
// machine's PostgreSQL (psql through the port), operators running `ciport sessions
// approve|deny|list --pending` with named admin tokens, an agent carrying a pending session once
// it is approved, a Slack-like webhook receiver checking the signature, and the access review.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { verifyChain } from '../../src/audit/verify.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { api as agentApi, agentConfig } from '../agent/harness.js';
import { approvalsGatewayDoc, OPERATORS, operatorEnv, startHookReceiver } from '../fixtures/approvals.js';
import { baseEnv, ensureBuilt, openedEnv, runCli, spawnCli } from '../fixtures/cli.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-approvals-'));
const PSQL = `psql -h "$CIPORT_PG_HOST" -p "$CIPORT_PG_PORT" -U postgres -tAc 'select 1'`;
const T0 = new Date().toISOString();

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let hook: Awaited<ReturnType<typeof startHookReceiver>>;
let jobs = 0;

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  hook = await startHookReceiver();
  gateway = await startTestGateway(
    gatewayConfig(
      // A 6 s lease: heartbeats every 2 s keep a waiting job's session, even with twenty jobs at
      // once on a loaded machine.
      approvalsGatewayDoc({
        stateDir: join(dir, 'gw'),
        issuerUrl: issuer.url,
        hookUrl: hook.url,
        leaseTimeout: '6s',
      }),
      operatorEnv(),
    ),
    { sweepIntervalMs: 250 },
  );
  await built;
}, 180_000);

afterAll(async () => {
  await gateway?.close();
  await issuer?.close();
  await hook?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A token of its own CI job (the gateway rate-limits per job). */
const jobToken = () =>
  issuer.mint({ job_id: String(9_000_000 + ++jobs) }, { preset: 'gitlab-main', audience: 'ciport' });

const jobEnv = async () =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ID_TOKEN: await jobToken() });
const opEnv = (who: keyof typeof OPERATORS) =>
  baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ADMIN_TOKEN: OPERATORS[who],
  });

/** The session a waiting client names in its one line. */
function waitingId(run: { stderr: () => string }, timeoutMs = 30_000): Promise<string> {
  return waitFor(
    () => /session (ses_[A-Za-z0-9_-]+) waits for approval/.exec(run.stderr())?.[1],
    timeoutMs,
    'the waiting line',
  );
}

/** An admin API request to the gateway with an operator's token (the agent tests' helper). */
const adminApi = (method: string, path: string, token: string, body?: unknown) =>
  agentApi(gateway, method, path, token, body);

// Each test runs several CLI processes one after another: minutes on a loaded two-core machine.
describe('a job whose rule needs approval', { timeout: 120_000 }, () => {
  it('waits with one line and the console link; an approval lets psql through', async () => {
    const job = spawnCli(['exec', 'pg', '--', 'sh', '-c', PSQL], { env: await jobEnv(), timeoutMs: 120_000 });
    const id = await waitingId(job);
    const link = `${gateway.url}/ui/approvals/${id}`;
    const line = new RegExp(
      `^ciport: session ${id} waits for approval \\(1 approver of dba, until \\d{4}-\\d\\d-\\d\\dT[0-9:.]+Z\\): ${link.replace(/[.]/g, '\\.')}\\n$`,
    );
    await waitFor(() => line.test(job.stderr()), 5_000, 'exactly the waiting line');

    const pending = await runCli(['sessions', 'list', '--pending', '--json'], { env: opEnv('bob') });
    expect(pending.code).toBe(0);
    const mine = (JSON.parse(pending.stdout) as Array<Record<string, unknown>>).find((a) => a.session === id);
    expect(mine).toMatchObject({
      status: 'pending',
      targets: ['pg'],
      rule: 'prod-db',
      url: link,
      may_decide: true,
    });
    const table = await runCli(['sessions', 'list', '--pending'], { env: opEnv('bob') });
    expect(table.stdout).toMatch(
      new RegExp(`${id}\\s+acme/ledger@main\\s+pg\\s+prod-db\\s+0/1 dba\\s+[0-9-]+ [0-9:]+Z\\s+yes`),
    );
    // Still waiting past a lease (6 s) later: its heartbeats keep the session while it waits.
    await new Promise((r) => setTimeout(r, 7_000));
    expect((await gateway.store.getSession(id))?.state).toBe('active');
    expect(job.child.exitCode).toBeNull();

    const approve = await runCli(['sessions', 'approve', id, '--reason', 'CHG-1: read check'], {
      env: opEnv('bob'),
    });
    expect(approve.stderr).toBe('');
    expect(approve.stdout).toBe(`${id}: approved (by token:bob)\n`);
    expect(approve.code).toBe(0);

    const done = await job.result;
    expect(done.stdout).toBe('1\n');
    expect(done.stderr).toMatch(line);
    expect(done.code).toBe(0);
    const session = await gateway.store.getSession(id);
    expect(session).toMatchObject({ state: 'ended', endReason: 'client_end' });
    expect(session?.approval).toMatchObject({ state: 'approved' });
    const events = (await gateway.store.auditEvents({ limit: 10_000 })).filter((e) => e.data.session === id);
    expect(events.map((e) => e.type).slice(0, 4)).toEqual([
      'approval.requested',
      'approval.granted',
      'session.opened',
      'connection.opened',
    ]);
    expect(events[1]?.data).toMatchObject({ by: 'token:bob', note: 'CHG-1: read check', groups: ['dba'] });
    expect(events[2]?.data).toMatchObject({ approved_by: ['token:bob'] });
  });

  it('a denial ends it: exec exits 3 saying who denied it and why', async () => {
    const job = spawnCli(['exec', 'pg', '--', 'sh', '-c', PSQL], { env: await jobEnv(), timeoutMs: 120_000 });
    const id = await waitingId(job);
    const deny = await runCli(['sessions', 'deny', id, '--reason', 'not during the freeze'], {
      env: opEnv('carol'),
    });
    expect(deny.stdout).toBe(`${id}: denied: the session ended (approval_denied)\n`);
    const done = await job.result;
    expect(done.code).toBe(3);
    expect(done.stdout).toBe('');
    expect(done.stderr).toContain(
      `ciport: CIPORT_E_APPROVAL_DENIED: session ${id} was denied by token:carol: not during the freeze`,
    );
    expect(done.stderr.trim().split('\n')).toHaveLength(2);
    expect(await gateway.store.getSession(id)).toMatchObject({
      state: 'ended',
      endReason: 'approval_denied',
      endedBy: 'token:carol',
      endNote: 'not during the freeze',
    });
    // Decided: an approval now is refused with a code, and the CLI exits 3.
    const late = await runCli(['sessions', 'approve', id], { env: opEnv('bob') });
    expect(late.code).toBe(3);
    expect(late.stderr).toContain('CIPORT_E_APPROVAL_DECIDED');
    expect(late.stderr).toContain('denied by token:carol');
  });

  it('nobody approving in time ends it: exit 3 with CIPORT_E_APPROVAL_TIMEOUT', async () => {
    const started = Date.now();
    const done = await runCli(['exec', 'pg3', '--', 'sh', '-c', 'echo never'], {
      env: await jobEnv(),
      timeoutMs: 60_000,
    });
    expect(done.code).toBe(3);
    expect(done.stdout).toBe('');
    expect(done.stderr).toContain('waits for approval (1 approver of dba');
    expect(done.stderr).toContain('CIPORT_E_APPROVAL_TIMEOUT');
    expect(Date.now() - started).toBeGreaterThanOrEqual(4_500);
    const id = /session (ses_\S+) waits/.exec(done.stderr)?.[1] as string;
    expect(await gateway.store.getSession(id)).toMatchObject({
      state: 'ended',
      endReason: 'approval_timeout',
    });
    const types = (await gateway.store.auditEvents({ limit: 10_000 }))
      .filter((e) => e.data.session === id)
      .map((e) => e.type);
    expect(types).toEqual(['approval.requested', 'approval.timed_out', 'session.ended']);
  });

  it('refuses the job’s own user, an approver outside the groups, an auditor and an admin outside the groups', async () => {
    const job = spawnCli(['exec', 'pg', '--', 'sh', '-c', PSQL], { env: await jobEnv(), timeoutMs: 120_000 });
    const id = await waitingId(job);
    const self = await runCli(['sessions', 'approve', id], { env: opEnv('ada') });
    expect(self.code).toBe(3);
    expect(self.stderr).toContain('CIPORT_E_APPROVAL_SELF');
    expect(self.stderr).toContain('token:ada may not decide on session');
    const json = await runCli(['sessions', 'approve', id, '--json'], { env: opEnv('erin') });
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stdout).error.code).toBe('CIPORT_E_APPROVAL_NOT_IN_GROUP');
    const outside = await adminApi('POST', `/v1/approvals/${id}/approve`, OPERATORS.erin, {});
    expect(outside.status).toBe(403);
    expect(outside.body.error.message).toContain(
      'an approver of group dba is needed, and its groups are sre',
    );
    const auditor = await runCli(['sessions', 'approve', id], { env: opEnv('audrey') });
    expect(auditor.code).toBe(3);
    expect(auditor.stderr).toContain('CIPORT_E_ADMIN_FORBIDDEN');
    const root = await adminApi('POST', `/v1/approvals/${id}/approve`, OPERATORS.root, {});
    expect(root).toMatchObject({ status: 403, body: { error: { code: 'CIPORT_E_APPROVAL_NOT_IN_GROUP' } } });
    // The self-denial is refused too: nobody decides on their own request.
    expect((await adminApi('POST', `/v1/approvals/${id}/deny`, OPERATORS.ada, {})).body.error.code).toBe(
      'CIPORT_E_APPROVAL_SELF',
    );
    // The list says who may decide, and why not.
    const list = (await adminApi('GET', '/v1/approvals', OPERATORS.ada)).body as Array<
      Record<string, unknown>
    >;
    expect(list.find((a) => a.session === id)).toMatchObject({
      may_decide: false,
      refusal: { code: 'CIPORT_E_APPROVAL_SELF' },
    });
    // Nothing of it was recorded, and it still waits.
    expect((await gateway.store.approvalVotes([id])).get(id)).toBeUndefined();
    expect((await gateway.store.getSession(id))?.approval?.state).toBe('pending');
    await runCli(['sessions', 'deny', id], { env: opEnv('bob') });
    expect((await job.result).code).toBe(3);
  });

  it('count 2 needs two distinct approvers; the same approver twice counts once', async () => {
    const job = spawnCli(['exec', 'pg2', '--', 'sh', '-c', PSQL.replaceAll('CIPORT_PG_', 'CIPORT_PG2_')], {
      env: await jobEnv(),
      timeoutMs: 120_000,
    });
    const id = await waitingId(job);
    expect(job.stderr()).toContain('(2 approvers of dba, until');
    const first = await runCli(['sessions', 'approve', id], { env: opEnv('bob') });
    expect(first.stdout).toBe(`${id}: pending: 1/2 of dba approved (token:bob)\n`);
    const again = await runCli(['sessions', 'approve', id, '--json'], { env: opEnv('bob') });
    expect(JSON.parse(again.stdout)).toMatchObject({ status: 'pending', counted: false });
    await new Promise((r) => setTimeout(r, 1_000));
    expect(job.child.exitCode).toBeNull();
    const second = await runCli(['sessions', 'approve', id], { env: opEnv('carol') });
    expect(second.stdout).toBe(`${id}: approved (by token:bob, token:carol)\n`);
    const done = await job.result;
    expect(done.stdout).toBe('1\n');
    expect(done.code).toBe(0);
    const grants = (await gateway.store.auditEvents({ limit: 10_000 })).filter(
      (e) => e.data.session === id && e.type === 'approval.granted',
    );
    expect(grants.map((e) => [e.data.by, e.data.approvals, e.data.met])).toEqual([
      ['token:bob', 1, false],
      ['token:carol', 2, true],
    ]);
  });

  it('ciport open waits too, and exits 3 when denied; approved, it writes its env file', async () => {
    const env = await jobEnv();
    const denied = spawnCli(
      ['open', 'pg', '--dotenv', join(dir, 'denied.env'), '--state', join(dir, 'd.state')],
      {
        env,
        timeoutMs: 60_000,
      },
    );
    const id = await waitingId(denied);
    await adminApi('POST', `/v1/approvals/${id}/deny`, OPERATORS.bob, { reason: 'no' });
    const d = await denied.result;
    expect(d.code).toBe(3);
    expect(d.stderr).toContain('CIPORT_E_APPROVAL_DENIED');

    const file = join(dir, 'open.env');
    const open = spawnCli(['open', 'pg', '--dotenv', file, '--state', join(dir, 'o.state')], {
      env: await jobEnv(),
      timeoutMs: 60_000,
    });
    const openId = await waitingId(open);
    expect((await adminApi('POST', `/v1/approvals/${openId}/approve`, OPERATORS.bob, {})).body.status).toBe(
      'approved',
    );
    const vars = await openedEnv(file, 30_000);
    expect(vars.CIPORT_PG_PORT).toMatch(/^\d+$/);
    open.child.kill('SIGTERM');
    expect((await open.result).code).toBe(0);
  });

  it('a job cancelled while it waits ends its session (client_end): exec exits 143, open exits 0', async () => {
    const exec = spawnCli(['exec', 'pg', '--', 'true'], { env: await jobEnv(), timeoutMs: 60_000 });
    const id = await waitingId(exec);
    exec.child.kill('SIGTERM');
    const e = await exec.result;
    expect(e.code).toBe(143);
    expect(e.stderr.trim().split('\n')).toHaveLength(1);
    const open = spawnCli(['open', 'pg', '--state', join(dir, 'c.state')], {
      env: await jobEnv(),
      timeoutMs: 60_000,
    });
    const openId = await waitingId(open);
    open.child.kill('SIGTERM');
    expect((await open.result).code).toBe(0);
    for (const s of [id, openId]) {
      expect(await gateway.store.getSession(s)).toMatchObject({ state: 'ended', endReason: 'client_end' });
    }
  });

  it('twenty parallel pending jobs of one project, approved one by one, each get through', async () => {
    const runs = await Promise.all(
      Array.from({ length: 20 }, async () =>
        spawnCli(['exec', 'pg', '--', 'sh', '-c', PSQL], { env: await jobEnv(), timeoutMs: 240_000 }),
      ),
    );
    const ids = await Promise.all(runs.map((r) => waitingId(r, 120_000)));
    expect(new Set(ids).size).toBe(20);
    const listed = (await adminApi('GET', '/v1/approvals', OPERATORS.bob)).body as Array<{ session: string }>;
    for (const id of ids) {
      expect(
        listed.map((a) => a.session),
        JSON.stringify(await gateway.store.getSession(id)),
      ).toContain(id);
    }
    for (const [i, id] of ids.entries()) {
      const res = await adminApi('POST', `/v1/approvals/${id}/approve`, OPERATORS[i % 2 ? 'bob' : 'carol'], {
        reason: `batch ${i}`,
      });
      expect(res).toMatchObject({ status: 200, body: { session: id, status: 'approved' } });
    }
    const results = await Promise.all(runs.map((r) => r.result));
    for (const r of results) {
      expect(r.stdout).toBe('1\n');
      expect(r.code).toBe(0);
    }
    const pendingLeft = (await adminApi('GET', '/v1/approvals', OPERATORS.bob)).body as Array<{
      session: string;
    }>;
    expect(pendingLeft.filter((a) => ids.includes(a.session))).toEqual([]);
  }, 300_000);

  it('a pending session through an agent becomes usable once approved', async () => {
    const enroll = await adminApi('POST', '/v1/agents/enroll', OPERATORS.admin, {
      name: 'dc1',
      targets: ['agentpg'],
    });
    expect(enroll.status).toBe(201);
    const agent = new Agent(
      agentConfig({
        gateway: gateway.url,
        dataDir: join(dir, 'agent'),
        name: 'dc1',
        targets: [{ name: 'agentpg', protocol: 'tcp', address: '127.0.0.1:5432' }],
      }),
      { ca: gateway.caPem, env: { CIPORT_TEST_ENROLLMENT_TOKEN: enroll.body.token } },
    );
    try {
      await agent.start();
      await agent.waitConnected(10_000);
      await waitFor(() => gateway.agents.hub.serves('agentpg'), 10_000, 'the hub to know agentpg');
      const job = spawnCli(
        ['exec', 'agentpg', '--', 'sh', '-c', PSQL.replaceAll('CIPORT_PG_', 'CIPORT_AGENTPG_')],
        {
          env: await jobEnv(),
          timeoutMs: 120_000,
        },
      );
      const id = await waitingId(job);
      await runCli(['sessions', 'approve', id], { env: opEnv('carol') });
      const done = await job.result;
      expect(done.stdout).toBe('1\n');
      expect(done.code).toBe(0);
      const opened = (await gateway.store.auditEvents({ limit: 10_000 })).find(
        (e) => e.data.session === id && e.type === 'connection.opened',
      );
      expect(opened?.data).toMatchObject({ target: 'agentpg' });
      // Carried by the agent (the event names it), not by the gateway.
      expect(opened?.data.exit).not.toBe('gateway');
    } finally {
      await agent.close();
    }
  });

  it('announced every pending session to the webhook: signed, Slack-shaped, escaped', async () => {
    await waitFor(() => hook.deliveries.length >= 20, 20_000, 'deliveries');
    for (const d of hook.deliveries) {
      expect(d.verified).toBe(true);
      expect(d.headers['content-type']).toBe('application/json');
    }
    // One of them, in full.
    const d = hook.deliveries[0];
    const id = String(d?.headers['x-ciport-session']);
    expect(id).toMatch(/^ses_/);
    expect(d?.json.text).toContain(
      `ciport: approval needed: acme/ledger @ main wants pg (rule prod-db): <${gateway.url}/ui/approvals/${id}|review>`,
    );
    const fields = d?.json.blocks
      .find((b: { fields?: unknown }) => b.fields)
      .fields.map((f: { text: string }) => f.text);
    expect(fields).toEqual(
      expect.arrayContaining([
        '*Project*\nacme/ledger',
        '*Ref*\nmain',
        '*Pipeline*\n1519139981',
        expect.stringMatching(/^\*Job\*\n<http:\/\/127\.0\.0\.1:\d+\/acme\/ledger\/-\/jobs\/9\d+\|9\d+>$/),
        '*Targets*\npg',
        '*Triggered by*\nada',
      ]),
    );
    const button = d?.json.blocks.find((b: { type: string }) => b.type === 'actions').elements[0];
    expect(button).toMatchObject({ type: 'button', url: `${gateway.url}/ui/approvals/${id}` });
    // A branch name that tries to ping the channel, and an ESC sequence, arrive as text.
    const before = hook.deliveries.length;
    const token = await issuer.mint(
      { job_id: '9999991', ref: '<!channel>\u001b[2J', ref_protected: true },
      { preset: 'gitlab-main', audience: 'ciport' },
    );
    const job = spawnCli(['exec', 'pg', '--', 'true'], {
      env: baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ID_TOKEN: token }),
      timeoutMs: 60_000,
    });
    const hostileId = await waitingId(job);
    await waitFor(() => hook.deliveries.length > before, 10_000, 'the hostile delivery');
    const hostile = hook.deliveries.at(-1);
    expect(hostile?.body).not.toContain('<!channel>');
    expect(hostile?.body).not.toContain('\u001b');
    expect(hostile?.json.text).toContain('@ &lt;!channel&gt;\\x1b[2J wants pg');
    await adminApi('POST', `/v1/approvals/${hostileId}/deny`, OPERATORS.bob, {});
    expect((await job.result).code).toBe(3);
    // The metric counts them; the secret is nowhere in what the receiver got.
    expect(hook.deliveries.some((x) => x.body.includes('approvals-hook-secret'))).toBe(false);
    const metrics = await gateway.metrics.registry.metrics();
    expect(metrics).toMatch(/ciport_approval_notifications_total\{webhook="chatops",outcome="sent"\} \d+/);
    expect(metrics).toMatch(/ciport_approvals_total\{outcome="approved"\} \d+/);
  });

  it('the access review lists the approvals given and denied, and by whom', async () => {
    const until = new Date(Date.now() + 60_000).toISOString();
    const review = await runCli(
      ['review', '--gateway', gateway.url, '--since', T0, '--until', until, '--format', 'json'],
      {
        env: opEnv('audrey'),
      },
    );
    expect(review.code).toBe(0);
    const report = JSON.parse(review.stdout) as { approvals: Array<Record<string, unknown>> };
    expect(report.approvals).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          type: 'approval.granted',
          by: 'token:bob',
          reason: 'CHG-1: read check',
          targets: ['pg'],
          project: 'acme/ledger',
          ref: 'main',
          rule: 'prod-db',
        }),
        expect.objectContaining({ type: 'approval.granted', by: 'token:carol', rule: 'prod-db-two' }),
        expect.objectContaining({
          type: 'approval.denied',
          by: 'token:carol',
          reason: 'not during the freeze',
        }),
        expect.objectContaining({ type: 'approval.timed_out', by: null, rule: 'quick' }),
      ]),
    );
    const html = await runCli(
      ['review', '--gateway', gateway.url, '--since', T0, '--until', until, '--format', 'html'],
      {
        env: opEnv('audrey'),
      },
    );
    expect(html.stdout).toContain('<h2>Approvals</h2>');
    expect(html.stdout).toContain('token:carol');
    // Who could approve is on record too: config.loaded lists each token's groups.
    const loaded = (await gateway.store.auditEvents({ limit: 10_000 })).find(
      (e) => e.type === 'config.loaded',
    );
    expect(loaded?.data.operators).toContainEqual({ name: 'bob', roles: ['approver'], groups: ['dba'] });
    expect(loaded?.data.operators).toContainEqual({ name: 'admin-token-1', roles: ['admin'] });
    expect(await verifyChain(gateway.store)).toMatchObject({ ok: true });
    expect(readFileSync(join(dir, 'gw', 'ciport.db')).includes(Buffer.from(OPERATORS.bob))).toBe(false);
  });
});
