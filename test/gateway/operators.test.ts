// Operator identity and roles (docs/operators.md) against a real gateway: named admin tokens with
// roles next to the legacy unnamed form, 401 vs 403, the operator and their reason in the audit
// log, a reload that changes roles at once, hostile reasons, and no token value anywhere it
// could leak (logs, audit events, API responses).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerAgents } from '../../src/cli/commands/agent.js';
import { registerSessions } from '../../src/cli/commands/sessions.js';
import { createLogger } from '../../src/log/logger.js';
import { type Run, runCli } from './cli-run.js';
import {
  ADMIN_TOKEN,
  api,
  Capture,
  type Harness,
  type Json,
  openSession,
  startHarness,
  testConfig,
} from './helpers.js';

const BOT_TOKEN = 'tok-ci-bot-5f0c1e7a9b2d4c6e8f10';
const AUDITOR_TOKEN = 'tok-auditor-a1b2c3d4e5f60718293a';
const APPROVER_TOKEN = 'tok-approver-0f1e2d3c4b5a69788796';
const TOKENS = [ADMIN_TOKEN, BOT_TOKEN, AUDITOR_TOKEN, APPROVER_TOKEN];

const ENV = { BOT_TOKEN, AUDITOR_TOKEN, APPROVER_TOKEN };
/** The DESIGN form first (it becomes admin-token-1), then named tokens. */
const ADMIN_TOKENS = [
  { env: 'TEST_ADMIN_TOKEN' },
  { name: 'ci-bot', token: { env: 'BOT_TOKEN' }, role: 'admin' },
  { name: 'ann', token: { env: 'AUDITOR_TOKEN' }, role: 'auditor' },
  { name: 'pat', token: { env: 'APPROVER_TOKEN' }, roles: ['approver'] },
];

let h: Harness;
const logs = new Capture();

beforeAll(async () => {
  h = await startHarness(
    { extra: { admin_tokens: ADMIN_TOKENS }, env: ENV },
    { logger: createLogger({ destination: logs, level: 'info' }) },
  );
});
afterAll(async () => {
  await h?.stop();
});

function cli(args: string[], token: string): Promise<Run> {
  const env = {
    CIPORT_ADMIN_TOKEN: token,
    CIPORT_CA_FILE: h.gateway.caFile,
    CIPORT_GATEWAY: h.gateway.url,
    NO_COLOR: '1',
  };
  return runCli([registerSessions, registerAgents], args, env);
}

async function events(type: string): Promise<Json[]> {
  return (await h.gateway.store.auditEvents({ limit: 10_000 })).filter((e) => e.type === type) as Json[];
}

async function endedEvent(session: string): Promise<Json | undefined> {
  return (await events('session.ended')).find((e) => e.data.session === session)?.data;
}

describe('roles', () => {
  it('an auditor lists sessions and agents but cannot revoke: 403 with a code, the session stays active', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });

    const list = await cli(['sessions', 'list', '--json'], AUDITOR_TOKEN);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as Json[]).some((x) => x.id === s.id)).toBe(true);
    expect((await cli(['agents', 'list', '--json'], AUDITOR_TOKEN)).code).toBe(0);

    const refused = await cli(['sessions', 'revoke', s.id, '--json', '--reason', 'try'], AUDITOR_TOKEN);
    expect(refused.code).toBe(3);
    const error = JSON.parse(refused.stdout).error;
    expect(error.code).toBe('CIPORT_E_ADMIN_FORBIDDEN');
    expect(error.message).toContain('token:ann');
    const raw = await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: AUDITOR_TOKEN, body: {} });
    expect(raw.status).toBe(403);

    const after = await api(c, 'GET', `/v1/sessions/${s.id}`, { bearer: AUDITOR_TOKEN });
    expect(after.body.state).toBe('active');
    const hb = await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret });
    expect(hb.status).toBe(200);
    expect(await endedEvent(s.id)).toBeUndefined();
    // The refusal is logged with the operator's name and the action, never the token.
    expect(logs.text).toMatch(
      /"action":"sessions.revoke".*"by":"token:ann".*"msg":"admin request forbidden"/,
    );

    // An auditor changes no agent either.
    const enroll = await api(c, 'POST', '/v1/agents/enroll', {
      bearer: AUDITOR_TOKEN,
      body: { name: 'dc9', targets: ['echo'] },
    });
    expect(enroll.status).toBe(403);
    expect(enroll.body.error.code).toBe('CIPORT_E_ADMIN_FORBIDDEN');
  });

  it('an approver reads sessions, not agents, and revokes nothing', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    expect((await api(c, 'GET', '/v1/sessions', { bearer: APPROVER_TOKEN })).status).toBe(200);
    expect((await api(c, 'GET', `/v1/sessions/${s.id}`, { bearer: APPROVER_TOKEN })).status).toBe(200);
    const agents = await api(c, 'GET', '/v1/agents', { bearer: APPROVER_TOKEN });
    expect(agents.status).toBe(403);
    expect(agents.body.error.code).toBe('CIPORT_E_ADMIN_FORBIDDEN');
    const revoke = await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: APPROVER_TOKEN, body: {} });
    expect(revoke.status).toBe(403);
  });

  it('an admin token revokes with --reason; session.ended names the token and carries the reason', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const run = await cli(
      ['sessions', 'revoke', s.id, '--reason', 'INC-1234: runner compromised'],
      BOT_TOKEN,
    );
    expect(run).toMatchObject({ code: 0, stdout: `${s.id}: ended (revoked)\n` });
    expect(await endedEvent(s.id)).toMatchObject({
      reason: 'revoked',
      by: 'token:ci-bot',
      note: 'INC-1234: runner compromised',
    });
    expect(logs.text).toMatch(new RegExp(`"session":"${s.id}".*"by":"token:ci-bot"`));

    // sessions list shows who revoked it and why: --json fields, and the END column.
    const json = await cli(['sessions', 'list', '--json'], AUDITOR_TOKEN);
    expect((JSON.parse(json.stdout) as Json[]).find((x) => x.id === s.id)).toMatchObject({
      end_reason: 'revoked',
      ended_by: 'token:ci-bot',
      end_note: 'INC-1234: runner compromised',
    });
    const text = await cli(['sessions', 'list'], AUDITOR_TOKEN);
    const line = text.stdout.split('\n').find((l) => l.startsWith(s.id));
    expect(line).toContain('revoked by token:ci-bot: INC-1234: runner compromised');
  });

  it('the legacy unnamed token still works, as admin-token-1 with role admin', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const run = await cli(['sessions', 'revoke', s.id, '--json'], ADMIN_TOKEN);
    expect(run.code).toBe(0);
    expect(await endedEvent(s.id)).toMatchObject({ by: 'token:admin-token-1' });
    expect((await endedEvent(s.id))?.note).toBeUndefined();
  });

  it('a wrong token is 401 "not recognised", a missing one 401 "required"', async () => {
    const c = await h.client();
    const wrong = await api(c, 'GET', '/v1/sessions', { bearer: `${AUDITOR_TOKEN}x` });
    expect(wrong.status).toBe(401);
    expect(wrong.body.error).toMatchObject({ code: 'CIPORT_E_ADMIN_UNAUTHORIZED' });
    expect(wrong.body.error.message).toContain('not recognised');
    const missing = await api(c, 'GET', '/v1/agents');
    expect(missing.status).toBe(401);
    expect(missing.body.error.message).toContain('required');
    const cliWrong = await cli(['sessions', 'list', '--json'], 'not-a-token');
    expect(cliWrong.code).toBe(4);
  });

  it('agent enroll, targets and revoke are audited with the operator and the reason', async () => {
    const enroll = await cli(
      ['agents', 'enroll', '--name', 'dc7', '--targets', 'echo', '--json', '--reason', 'CHG-42: new site'],
      BOT_TOKEN,
    );
    expect(enroll.code).toBe(0);
    const targets = await cli(
      ['agents', 'targets', 'dc7', '--add', 'redis', '--reason', 'CHG-43'],
      BOT_TOKEN,
    );
    // No agent registered under the name yet: the binding change finds no live agent.
    expect(targets.code).toBe(2);
    const revoke = await cli(['agents', 'revoke', 'dc7', '--reason', 'oops'], BOT_TOKEN);
    expect(revoke.code).toBe(2);

    const enrolled = (await events('agent.enrolled')).find((e) => e.data.agent === 'dc7');
    expect(enrolled?.data).toMatchObject({
      stage: 'token_created',
      by: 'token:ci-bot',
      note: 'CHG-42: new site',
    });
  });
});

describe('agents changed by an operator', () => {
  it('registered agent: targets and revoke carry by and note', async () => {
    const c = await h.client();
    const enroll = await api(c, 'POST', '/v1/agents/enroll', {
      bearer: BOT_TOKEN,
      body: { name: 'dc8', targets: ['echo'] },
    });
    expect(enroll.status).toBe(201);
    const reg = await api(c, 'POST', '/v1/agents/register', { bearer: enroll.body.token, body: {} });
    expect(reg.status).toBe(201);

    const bind = await cli(['agents', 'targets', 'dc8', '--add', 'redis', '--reason', 'CHG-44'], ADMIN_TOKEN);
    expect(bind.code).toBe(0);
    const revoke = await cli(['agents', 'revoke', 'dc8', '--reason', 'INC-9'], BOT_TOKEN);
    expect(revoke.code).toBe(0);

    expect((await events('agent.targets_changed')).find((e) => e.data.agent === 'dc8')?.data).toMatchObject({
      targets: ['echo', 'redis'],
      by: 'token:admin-token-1',
      note: 'CHG-44',
    });
    expect((await events('agent.revoked')).find((e) => e.data.agent === 'dc8')?.data).toMatchObject({
      by: 'token:ci-bot',
      note: 'INC-9',
    });
  });
});

describe('hostile reasons', () => {
  it('a 10 KB reason is refused (400, nothing revoked); escapes, newlines and NUL are stored escaped', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const big = await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, {
      bearer: BOT_TOKEN,
      body: { reason: 'x'.repeat(10_240) },
    });
    expect(big.status).toBe(400);
    expect(big.body.error.code).toBe('CIPORT_E_USAGE');
    expect((await api(c, 'GET', `/v1/sessions/${s.id}`, { bearer: BOT_TOKEN })).body.state).toBe('active');
    const cliBig = await cli(['sessions', 'revoke', s.id, '--reason', 'y'.repeat(10_240)], BOT_TOKEN);
    expect(cliBig.code).toBe(2);
    const typed = await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, {
      bearer: BOT_TOKEN,
      body: { reason: 42 },
    });
    expect(typed.status).toBe(400);

    const nasty = '\u001b[2J\u001b]0;pwned\u0007line1\nline2\r\u0000end\u202e';
    const ok = await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, {
      bearer: BOT_TOKEN,
      body: { reason: nasty },
    });
    expect(ok.status).toBe(200);
    const note = (await endedEvent(s.id))?.note as string;
    expect(note).toBe('\\x1b[2J\\x1b]0;pwned\\x07line1\\nline2\\r\\x00end\\u202e');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: looking for raw control characters
    expect(note).not.toMatch(/[\u0000-\u001f\u007f\u202e]/);
  });
});

describe('reload', () => {
  it('changes roles at once: the auditor becomes admin, a removed token stops working', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    expect(
      (await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: AUDITOR_TOKEN, body: {} })).status,
    ).toBe(403);
    const next = testConfig({
      dataDir: h.dataDir,
      issuerUrl: h.issuer.url,
      echoPort: h.echo.port,
      env: ENV,
      extra: {
        admin_tokens: [
          { env: 'TEST_ADMIN_TOKEN' },
          { name: 'ann', token: { env: 'AUDITOR_TOKEN' }, roles: ['auditor', 'admin'] },
        ],
      },
    });
    await h.gateway.reload(next, { source: 'test' });
    const loaded = (await events('config.loaded')).at(-1)?.data;
    expect(loaded?.operators).toEqual([
      { name: 'admin-token-1', roles: ['admin'] },
      { name: 'ann', roles: ['auditor', 'admin'] },
    ]);
    const revoke = await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: AUDITOR_TOKEN, body: {} });
    expect(revoke.status).toBe(200);
    expect(await endedEvent(s.id)).toMatchObject({ by: 'token:ann' });
    const gone = await api(c, 'GET', '/v1/sessions', { bearer: BOT_TOKEN });
    expect(gone.status).toBe(401);

    // A reload whose tokens share a value is refused: the running tokens stay in force.
    const twins = testConfig({
      dataDir: h.dataDir,
      issuerUrl: h.issuer.url,
      echoPort: h.echo.port,
      env: { ...ENV, TWIN: AUDITOR_TOKEN },
      extra: {
        admin_tokens: [
          { name: 'ann', token: { env: 'AUDITOR_TOKEN' }, role: 'auditor' },
          { name: 'twin', token: { env: 'TWIN' }, role: 'admin' },
        ],
      },
    });
    await expect(h.gateway.reload(twins, { source: 'test' })).rejects.toMatchObject({
      code: 'CIPORT_E_CONFIG_INVALID',
    });
    expect((await api(c, 'GET', '/v1/sessions', { bearer: ADMIN_TOKEN })).status).toBe(200);
    // Restore the harness's tokens for any test after this one.
    await h.gateway.reload(h.config, { source: 'test' });
  });
});

describe('secrets', () => {
  it('no token value appears in logs, audit events or API responses', async () => {
    const c = await h.client();
    const bodies: string[] = [];
    for (const bearer of [...TOKENS, 'wrong-token-value-123']) {
      for (const [method, path] of [
        ['GET', '/v1/sessions'],
        ['GET', '/v1/agents'],
        ['POST', '/v1/sessions/ses_nope/revoke'],
      ] as const) {
        const res = await api(c, method, path, { bearer, ...(method === 'POST' ? { body: {} } : {}) });
        bodies.push(JSON.stringify(res.body));
      }
    }
    const audit = JSON.stringify(await h.gateway.store.auditEvents({ limit: 10_000 }));
    for (const secret of [...TOKENS, 'wrong-token-value-123']) {
      expect(logs.text).not.toContain(secret);
      expect(audit).not.toContain(secret);
      for (const b of bodies) expect(b).not.toContain(secret);
    }
    // The audit log no longer says just "admin".
    expect((await events('session.ended')).some((e) => e.data.by === 'admin')).toBe(false);
  });
});
