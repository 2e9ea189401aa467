// Issue 10, item 7: what a denied job learns of the policy. The rules hold values a job must
// not read (other projects' ids, a secret-looking glob, environments, rule names); tokens come
// from a real issuer, requests go to a real gateway, and the client is the real `ciport` CLI.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayConfig } from '../../src/config/schema.js';
import { runCli } from '../helpers/cli.js';
import { api, type Harness, startHarness, testConfig } from './helpers.js';

// Values only the policy holds: none may reach a job at the default level.
const SECRETS = [
  '99887766',
  'release/v*-hotfix-internal',
  'prod-eu-7',
  'prod-us-3',
  'zeta-ledger-to-prod',
  'quarantine-77',
];

const rules = [
  { name: 'quarantine-77', deny: true, issuer: 'gitlab', when: { project_id: '55555555' } },
  { name: 'no-forks', deny: true, issuer: 'gitlab', when: { fork: true } },
  {
    name: 'zeta-ledger-to-prod',
    issuer: 'gitlab',
    when: {
      project_id: '99887766',
      ref: { glob: 'release/v*-hotfix-internal' },
      environment: { one_of: ['prod-eu-7', 'prod-us-3'] },
    },
    allow: ['echo'],
  },
];

// The rule's project, for a job that is not a fork (job_project_id is where the job runs).
const PROJECT = { project_id: '99887766', job_project_id: '99887766' };

let h: Harness;
let base: { dataDir: string; issuerUrl: string; echoPort: number };

const withDisclose = (disclose?: string): Readonly<GatewayConfig> =>
  testConfig({ ...base, rules, ...(disclose ? { extra: { policy: { disclose } } } : {}) });

beforeAll(async () => {
  h = await startHarness({ rules });
  base = { dataDir: h.dataDir, issuerUrl: h.issuer.url, echoPort: h.echo.port };
}, 60_000);
afterAll(async () => {
  await h?.stop();
});

/** The 403 body and the /v1/whoami body for the ordinary ledger main token (project 61577203). */
async function answers(claims: Record<string, unknown> = {}, preset?: 'gitlab-fork-mr') {
  const c = await h.client();
  const token = await h.token(claims, preset);
  const denied = await api(c, 'POST', '/v1/sessions', { bearer: token, body: { targets: ['echo'] } });
  const whoami = await api(c, 'GET', '/v1/whoami?target=echo', { bearer: token });
  return { token, denied, whoami };
}

async function cli(args: string[], token: string) {
  return runCli(args, {
    CIPORT_GATEWAY: h.gateway.url,
    CIPORT_CA_FILE: h.gateway.caFile,
    CIPORT_ID_TOKEN: token,
  });
}

describe('policy.disclose: condition (the default)', () => {
  it("a 403 and /v1/whoami name the failing claim and the job's own value, no expected value, no rule", async () => {
    const { denied, whoami } = await answers();
    expect(denied.status).toBe(403);
    expect(denied.body.error.code).toBe('CIPORT_E_POLICY_DENIED');
    expect(denied.body.error.message).toBe(
      'no rule allows this token; condition not met: project_id: not satisfied by this token\'s value "61577203"',
    );
    expect(denied.body.decision).toMatchObject({
      decision: 'deny',
      rule: null,
      failures: [],
      nearest: { claim: 'project_id', actual: '"61577203"' },
    });
    expect(whoami.status).toBe(200);
    expect(whoami.body.decision.reason).toBe(denied.body.error.message);
    for (const secret of SECRETS) {
      expect(JSON.stringify(denied.body)).not.toContain(secret);
      expect(JSON.stringify(whoami.body)).not.toContain(secret);
    }
  });

  it('a claim the token lacks is named as missing', async () => {
    // The rule's project and ref: the first failing condition is `environment`, which is absent.
    const { denied } = await answers({
      ...PROJECT,
      ref: 'release/v2-hotfix-internal',
      environment: undefined,
    });
    expect(denied.body.error.message).toBe(
      'no rule allows this token; condition not met: environment: claim missing',
    );
  });

  it("a deny rule is reported with the job's own values, not its name", async () => {
    const { denied } = await answers({ project_id: '55555555' });
    expect(denied.body.error.message).toBe('denied by a deny rule (project_id = "55555555")');
    expect(denied.body.decision.rule).toBeNull();
    expect(JSON.stringify(denied.body)).not.toContain('quarantine-77');
  });

  it('the safe default on forks still says why', async () => {
    const noDeny = testConfig({ ...base, rules: rules.filter((r) => r.name !== 'no-forks') });
    await h.restart(noDeny);
    try {
      const { denied } = await answers({ project_id: '99887766' }, 'gitlab-fork-mr');
      expect(denied.body.decision.nearest).toMatchObject({ claim: 'fork' });
      expect(denied.body.error.message).toContain('fork: expected false (safe default');
    } finally {
      await h.restart(withDisclose());
    }
  });

  it('the client prints nothing of the policy (ciport exec and ciport whoami)', async () => {
    const token = await h.token();
    const exec = await cli(['exec', 'echo', '--', 'true'], token);
    expect(exec.code).toBe(3);
    expect(exec.stderr).toContain('CIPORT_E_POLICY_DENIED');
    expect(exec.stderr).toContain('project_id');
    const who = await cli(['whoami', '--json'], token);
    expect(who.code).toBe(0);
    const whoText = await cli(['whoami'], token);
    for (const out of [exec.stdout + exec.stderr, who.stdout, whoText.stdout + whoText.stderr]) {
      for (const secret of SECRETS) expect(out).not.toContain(secret);
    }
  });

  it('the operator keeps everything: the session.denied audit event and policy explain', async () => {
    await answers();
    const events = await h.gateway.store.auditEvents({ limit: 10_000 });
    const last = events.filter((e) => e.type === 'session.denied').at(-1);
    expect(last?.data).toMatchObject({ rule: 'zeta-ledger-to-prod' });
    expect(String(last?.data.condition)).toContain('"99887766"');
  });
});

describe('policy.disclose: full and minimal', () => {
  afterAll(async () => {
    await h.restart(withDisclose());
  });

  it('full: the nearest rule, its expected value and every candidate failure', async () => {
    await h.restart(withDisclose('full'));
    const { denied, whoami } = await answers();
    expect(denied.body.error.message).toBe(
      'no rule allows this token; nearest rule "zeta-ledger-to-prod": project_id: expected "99887766", got "61577203"',
    );
    expect(denied.body.decision.nearest).toMatchObject({
      rule: 'zeta-ledger-to-prod',
      expected: '"99887766"',
    });
    expect(whoami.body.decision.failures).toHaveLength(1);
    const deny = await answers({ project_id: '55555555' });
    expect(deny.denied.body.decision.rule).toBe('quarantine-77');
    const exec = await cli(['exec', 'echo', '--', 'true'], await h.token());
    expect(exec.code).toBe(3);
    expect(exec.stderr).toContain('nearest rule "zeta-ledger-to-prod": project_id: expected "99887766"');
  });

  it('minimal: only that policy denied', async () => {
    await h.restart(withDisclose('minimal'));
    const { denied, whoami } = await answers();
    expect(denied.status).toBe(403);
    expect(denied.body.error).toMatchObject({ code: 'CIPORT_E_POLICY_DENIED', message: 'denied by policy' });
    expect(denied.body.decision).toMatchObject({ rule: null, nearest: null, failures: [] });
    expect(whoami.body.decision.reason).toBe('denied by policy');
    for (const body of [denied.body, whoami.body.decision]) {
      expect(JSON.stringify(body)).not.toContain('project_id');
    }
  });

  it('an allowed job is told its rule at every level', async () => {
    await h.restart(withDisclose('minimal'));
    const c = await h.client();
    const token = await h.token({ ...PROJECT, ref: 'release/v3-hotfix-internal', environment: 'prod-eu-7' });
    const whoami = await api(c, 'GET', '/v1/whoami', { bearer: token });
    expect(whoami.body.decision).toMatchObject({ decision: 'allow', rule: 'zeta-ledger-to-prod' });
  });

  it('an unknown level is a configuration error', () => {
    expect(() => withDisclose('everything')).toThrow(/policy\.disclose/);
  });
});
