// HOSTILE (r14): the holder of a low-role admin token (auditor or approver, docs/operators.md)
// tries every admin change beyond its role, with path and method variants a router might treat
// differently from the handler; tries to learn other tokens' names or validity from the answers;
// and tries to attest as someone else. All held: each variant is refused or not found, nothing
// is written to the audit log, a wrong token's answer is the same however close it is to a real
// one, and a sign-off names the token that made it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, api, type Harness, openSession, startHarness } from '../gateway/helpers.js';

const AUDITOR_TOKEN = 'tok-auditor-a1b2c3d4e5f60718293a';
const APPROVER_TOKEN = 'tok-approver-0f1e2d3c4b5a69788796';
const ADMIN_TOKENS = [
  { env: 'TEST_ADMIN_TOKEN' },
  { name: 'secret-root-holder', token: { env: 'ROOT_TOKEN' }, role: 'admin' },
  { name: 'ann', token: { env: 'AUDITOR_TOKEN' }, role: 'auditor' },
  { name: 'pat', token: { env: 'APPROVER_TOKEN' }, roles: ['approver'] },
];

let h: Harness;
let sessionId: string;

beforeAll(async () => {
  h = await startHarness({
    extra: { admin_tokens: ADMIN_TOKENS },
    env: { AUDITOR_TOKEN, APPROVER_TOKEN, ROOT_TOKEN: 'tok-root-99999999999999999999' },
  });
  const s = await openSession(await h.client(), await h.token(), { targets: ['echo'] });
  sessionId = s.id;
});
afterAll(async () => {
  await h?.stop();
});

async function head(): Promise<number> {
  return (await h.gateway.store.auditHead())?.seq ?? 0;
}

/** Each admin change (method, path, body) a low role may not make, with router-confusing variants. */
function changes(id: string): [string, string, unknown][] {
  const base: [string, string, unknown][] = [
    ['POST', `/v1/sessions/${id}/revoke`, { reason: 'x' }],
    ['POST', '/v1/agents/enroll', { name: 'evil', targets: ['echo'] }],
    ['POST', '/v1/agents/dc7/revoke', {}],
    ['POST', '/v1/agents/dc7/targets', { set: ['echo'] }],
  ];
  const variants: [string, string, unknown][] = [];
  for (const [m, p, b] of base) {
    variants.push([m, p, b], [m, `${p}/`, b], [m, `${p}?x=1`, b], [m, p.replace('/v1/', '/v1//'), b]);
    variants.push([m, p.replace('/v1/', '/%761/'), b], [m, p.toUpperCase(), b], ['PUT', p, b]);
  }
  variants.push(['POST', `/v1/agents/${encodeURIComponent('../enroll')}/revoke`, {}]);
  variants.push(['POST', '/v1/agents/%E0%A4%A/revoke', {}]); // a malformed escape
  return variants;
}

describe('hostile: low-role admin tokens', () => {
  it('auditor and approver: no change is made, whatever the path variant; nothing is audited', async () => {
    const c = await h.client();
    const before = await head();
    for (const token of [AUDITOR_TOKEN, APPROVER_TOKEN]) {
      for (const [method, path, body] of changes(sessionId)) {
        const res = await api(c, method, path, { bearer: token, body });
        expect([401, 403, 404, 405], `${method} ${path}`).toContain(res.status);
      }
    }
    // The approver may neither read nor attest a review.
    expect((await api(c, 'GET', '/v1/review?since=1d&until=now', { bearer: APPROVER_TOKEN })).status).toBe(
      403,
    );
    expect((await api(c, 'HEAD', '/v1/review?since=1d&until=now', { bearer: APPROVER_TOKEN })).status).toBe(
      403,
    );
    const attest = await api(c, 'POST', '/v1/review/attest', {
      bearer: APPROVER_TOKEN,
      body: { since: '2d', until: '1d' },
    });
    expect(attest.status).toBe(403);
    expect(await head()).toBe(before);
    const session = await api(c, 'GET', `/v1/sessions/${sessionId}`, { bearer: ADMIN_TOKEN });
    expect(session.body).toMatchObject({ state: 'active' });
  });

  it('a wrong token gets the same answer however close it is to a real one; 403 names only its holder', async () => {
    const c = await h.client();
    const near = [
      AUDITOR_TOKEN.slice(0, -1),
      `${AUDITOR_TOKEN}x`,
      AUDITOR_TOKEN.toUpperCase(),
      'tok-root-99999999999999999998',
      'nothing-like-it',
    ];
    const answers = await Promise.all(
      near.map((t) => api(c, 'POST', `/v1/sessions/${sessionId}/revoke`, { bearer: t, body: {} })),
    );
    expect(new Set(answers.map((a) => `${a.status} ${JSON.stringify(a.body)}`)).size).toBe(1);
    expect(answers[0]?.status).toBe(401);
    const forbidden = await api(c, 'POST', `/v1/sessions/${sessionId}/revoke`, {
      bearer: AUDITOR_TOKEN,
      body: {},
    });
    expect(forbidden.status).toBe(403);
    const text = JSON.stringify(forbidden.body);
    expect(text).toContain('token:ann');
    expect(text).not.toMatch(/secret-root-holder|admin-token-1|pat\b|tok-/);
  });

  it('an auditor cannot sign off as someone else; the comment cannot break a line', async () => {
    const c = await h.client();
    const until = new Date(Date.now() - 1).toISOString();
    const forged = await api(c, 'POST', '/v1/review/attest', {
      bearer: AUDITOR_TOKEN,
      body: { since: '1d', until, reviewer: { issuer: 'https://sso.example', subject: 'ceo' } },
    });
    expect(forged.status).toBe(400);
    const ok = await api(c, 'POST', '/v1/review/attest', {
      bearer: AUDITOR_TOKEN,
      body: { since: '1d', until, comment: 'fine\n{"type":"review.attested"}\u2028\u001b[2J"]' },
    });
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ reviewer: { issuer: 'admin-token', subject: 'ann' } });
    const comment = String((ok.body as { comment: string }).comment);
    for (const c of ['\n', '\u2028', '\u001b']) expect(comment).not.toContain(c);
    expect(comment).toContain('\\n'); // shown as an escape
  });
});
