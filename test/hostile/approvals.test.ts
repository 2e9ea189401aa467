// Hostile, issue 14 "Approvals": a pending session's own secret cannot open a tunnel (directly or
// through an agent's target) before it is approved; ids that are forged, belong to another
// session or are malformed; reasons too long or not text; decisions after a denial; approve and
// deny racing on one gateway and on two gateways sharing a PostgreSQL store (exactly one
// outcome); the job's wait endpoint with bad input. Each refusal has a stable code and changes
// nothing.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { ClientHttp2Session } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/verify.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { approvalsGatewayDoc, OPERATORS, operatorEnv } from '../fixtures/approvals.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';
import { api, connectClient, connectTunnel, type Json } from '../gateway/helpers.js';
import { PG_ADMIN_URL } from '../store/harness.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-hostile-approvals-'));
let issuer: FixtureIssuer;
let gw: RunningGateway;
let client: ClientHttp2Session;
let jobs = 0;

beforeAll(async () => {
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  gw = await startTestGateway(
    gatewayConfig(
      approvalsGatewayDoc({ stateDir: join(dir, 'gw'), issuerUrl: issuer.url, leaseTimeout: '30s' }),
      operatorEnv(),
    ),
    { sweepIntervalMs: 200 },
  );
  client = await connectClient(gw.url, gw.caPem);
});

afterAll(async () => {
  client?.destroy();
  await gw?.close();
  await issuer?.close();
  rmSync(dir, { recursive: true, force: true });
});

const token = () =>
  issuer.mint({ job_id: String(7_000_000 + ++jobs) }, { preset: 'gitlab-main', audience: 'ciport' });

async function pending(target = 'pg', c = client): Promise<{ id: string; secret: string; body: Json }> {
  const res = await api(c, 'POST', '/v1/sessions', { bearer: await token(), body: { targets: [target] } });
  expect(res.status).toBe(202);
  expect(res.body).toMatchObject({ status: 'pending', approval: { status: 'pending' } });
  return { id: res.body.id, secret: res.body.secret, body: res.body };
}

const decide = (
  id: string,
  who: keyof typeof OPERATORS,
  decision: 'approve' | 'deny',
  body: unknown = {},
  c = client,
) => api(c, 'POST', `/v1/approvals/${id}/${decision}`, { bearer: OPERATORS[who], body });

describe('a pending session', () => {
  it('opens no tunnel with its own secret until approved, then does', async () => {
    const s = await pending('pg');
    const before = await connectTunnel(client, s, 'pg');
    expect(before.status).toBe(409);
    expect(before.headers['ciport-error']).toBe('CIPORT_E_APPROVAL_PENDING');
    before.stream.destroy();
    // Nor to a target it was not granted, nor with another session's secret.
    const other = await pending('pg');
    const crossed = await connectTunnel(client, { id: s.id, secret: other.secret }, 'pg');
    expect(crossed.status).toBe(401);
    crossed.stream.destroy();
    // Heartbeats are fine (the job keeps its lease while it waits).
    const beat = await api(client, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret, body: {} });
    expect(beat).toMatchObject({ status: 200, body: { state: 'pending' } });
    expect((await decide(s.id, 'bob', 'approve')).status).toBe(200);
    const after = await connectTunnel(client, s, 'pg');
    expect(after.status).toBe(200);
    after.stream.destroy();
    await waitFor(
      async () =>
        (await gw.store.auditEvents({ limit: 10_000 })).some(
          (e) => e.data.session === s.id && e.type === 'connection.opened',
        ),
      5_000,
      'connection.opened',
    );
    await decide(other.id, 'bob', 'deny');
  });

  it('opens no tunnel to an agent-served target before approval either (no agent needed to refuse)', async () => {
    const s = await pending('agentpg');
    const t = await connectTunnel(client, s, 'agentpg');
    expect(t.status).toBe(409);
    expect(t.headers['ciport-error']).toBe('CIPORT_E_APPROVAL_PENDING');
    t.stream.destroy();
    await decide(s.id, 'bob', 'deny');
    const ended = await connectTunnel(client, s, 'agentpg');
    expect(ended.status).toBe(410);
    expect(ended.headers['ciport-error']).toBe('CIPORT_E_APPROVAL_DENIED');
    ended.stream.destroy();
  });
});

describe('ids and bodies', () => {
  it('refuses a forged id (404), another session needing no approval (409), the job secret as admin token (401), the job user (403)', async () => {
    const forged = await decide(`ses_${randomBytes(16).toString('base64url')}`, 'bob', 'approve');
    expect(forged).toMatchObject({ status: 404, body: { error: { code: 'CIPORT_E_SESSION_NOT_FOUND' } } });
    const free = await api(client, 'POST', '/v1/sessions', {
      bearer: await token(),
      body: { targets: ['free'] },
    });
    expect(free.status).toBe(201);
    expect(free.body.status).toBe('active');
    const notPending = await decide(free.body.id, 'bob', 'approve');
    expect(notPending).toMatchObject({
      status: 409,
      body: { error: { code: 'CIPORT_E_APPROVAL_NOT_PENDING' } },
    });
    const s = await pending();
    const asAdmin = await api(client, 'POST', `/v1/approvals/${s.id}/approve`, {
      bearer: s.secret,
      body: {},
    });
    expect(asAdmin).toMatchObject({ status: 401, body: { error: { code: 'CIPORT_E_ADMIN_UNAUTHORIZED' } } });
    // The job's own user (user_login ada) holding an approver token of the group: refused.
    const self = await decide(s.id, 'ada', 'approve');
    expect(self).toMatchObject({ status: 403, body: { error: { code: 'CIPORT_E_APPROVAL_SELF' } } });
    const jobToken = await api(client, 'GET', '/v1/approvals', { bearer: await token() });
    expect(jobToken.status).toBe(401);
    expect((await api(client, 'GET', '/v1/approvals')).status).toBe(401);
    expect((await gw.store.approvalVotes([s.id, free.body.id])).size).toBe(0);
    await decide(s.id, 'bob', 'deny');
  });

  it('answers malformed ids with 404 CIPORT_E_NOT_FOUND and writes nothing', async () => {
    const before = (await gw.store.auditHead())?.seq;
    for (const path of [
      `/v1/approvals/ses_${'a'.repeat(65)}/approve`,
      '/v1/approvals/SES_abc/approve',
      '/v1/approvals/ses_abc%2F..%2Fx/approve',
      '/v1/approvals/ses_abc/approve/extra',
      '/v1/approvals/ses_a.b/approve',
      '/v1/approvals/%73es_abc/approve',
      '/v1/approvals//approve',
    ]) {
      const res = await api(client, 'POST', path, { bearer: OPERATORS.bob, body: {} });
      expect(res.status, path).toBe(404);
      expect(res.body.error.code, path).toBe('CIPORT_E_NOT_FOUND');
    }
    expect((await gw.store.auditHead())?.seq).toBe(before);
  });

  it('refuses an oversized or non-text reason and unknown fields (400), changing nothing', async () => {
    const s = await pending();
    for (const body of [
      { reason: 'x'.repeat(201) },
      { reason: '\u0007'.repeat(60) }, // 60 BELs escape to 240 characters
      { reason: 42 },
      { reason: ['a'] },
      { reason: 'ok', approve: true },
      'not an object',
      [1, 2],
    ]) {
      const res = await decide(s.id, 'bob', 'approve', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error.code).toBe('CIPORT_E_USAGE');
    }
    const huge = await decide(s.id, 'bob', 'approve', { reason: 'x'.repeat(100_000) });
    expect(huge.body.error.code).toBe('CIPORT_E_BODY_TOO_LARGE');
    expect((await gw.store.approvalVotes([s.id])).get(s.id)).toBeUndefined();
    expect((await gw.store.getSession(s.id))?.approval?.state).toBe('pending');
    // A reason with controls and a bidi override is kept, escaped.
    const ok = await decide(s.id, 'bob', 'approve', { reason: 'ok\u001b[31m\u202eevil' });
    expect(ok.status).toBe(200);
    const granted = (await gw.store.auditEvents({ limit: 10_000 })).find(
      (e) => e.data.session === s.id && e.type === 'approval.granted',
    );
    expect(granted?.data.note).toBe('ok\\x1b[31m\\u202eevil');
  });

  it('after a denial, nothing decides again: 409 CIPORT_E_APPROVAL_DECIDED naming the denier', async () => {
    const s = await pending();
    expect((await decide(s.id, 'carol', 'deny', { reason: 'no' })).body.status).toBe('denied');
    for (const [who, d] of [
      ['bob', 'approve'],
      ['carol', 'approve'],
      ['bob', 'deny'],
    ] as const) {
      const res = await decide(s.id, who, d);
      expect(res).toMatchObject({ status: 409, body: { error: { code: 'CIPORT_E_APPROVAL_DECIDED' } } });
      expect(res.body.error.message).toContain('denied by token:carol');
    }
    const wait = await api(client, 'GET', `/v1/sessions/${s.id}/approval`, { bearer: s.secret });
    expect(wait).toMatchObject({
      status: 410,
      body: { error: { code: 'CIPORT_E_APPROVAL_DENIED', end_reason: 'approval_denied' } },
    });
  });

  it('the wait endpoint refuses a wrong secret (401), an unknown id (404) and a bad wait (400)', async () => {
    const s = await pending();
    expect((await api(client, 'GET', `/v1/sessions/${s.id}/approval`, { bearer: 'cps_forged' })).status).toBe(
      401,
    );
    expect((await api(client, 'GET', `/v1/sessions/${s.id}/approval`)).status).toBe(401);
    expect((await api(client, 'GET', `/v1/sessions/ses_nope/approval`, { bearer: s.secret })).status).toBe(
      404,
    );
    for (const wait of ['abc', '-1', '1e3', '99999', '']) {
      const res = await api(client, 'GET', `/v1/sessions/${s.id}/approval?wait=${wait}`, {
        bearer: s.secret,
      });
      expect(res.status, wait).toBe(400);
    }
    // A wait is answered as soon as the decision comes.
    const waiting = api(client, 'GET', `/v1/sessions/${s.id}/approval?wait=20`, { bearer: s.secret });
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    await decide(s.id, 'bob', 'approve');
    expect(await waiting).toMatchObject({
      status: 200,
      body: { state: 'active', approval: { status: 'approved' } },
    });
    expect(Date.now() - started).toBeLessThan(3_000);
  });
});

describe('racing decisions', () => {
  it('approve and deny at once on one gateway: exactly one wins, the other gets 409, the log agrees', async () => {
    for (let round = 0; round < 6; round++) {
      const s = await pending();
      const [a, d, again] = await Promise.all([
        decide(s.id, 'bob', 'approve'),
        decide(s.id, 'carol', 'deny'),
        decide(s.id, 'bob', 'approve'),
      ]);
      const final = await gw.store.getSession(s.id);
      const events = (await gw.store.auditEvents({ limit: 10_000 })).filter((e) => e.data.session === s.id);
      if (final?.state === 'ended') {
        expect(d.status).toBe(200);
        expect(a.status === 409 || a.status === 200).toBe(true);
        expect(events.map((e) => e.type)).not.toContain('session.opened');
        // An approval counted before the denial is in the log, none after it.
        const denial = events.findIndex((e) => e.type === 'approval.denied');
        expect(events.slice(denial).map((e) => e.type)).toEqual(['approval.denied', 'session.ended']);
      } else {
        expect(final?.approval?.state).toBe('approved');
        expect(d).toMatchObject({ status: 409, body: { error: { code: 'CIPORT_E_APPROVAL_DECIDED' } } });
        expect(events.filter((e) => e.type === 'approval.granted')).toHaveLength(1);
        expect(events.map((e) => e.type)).not.toContain('approval.denied');
      }
      // The second approval by bob is the same approver: counted once at most, or refused.
      expect([200, 409]).toContain(again.status);
    }
    expect(await verifyChain(gw.store)).toMatchObject({ ok: true });
  });

  it('two gateways on one PostgreSQL store: one outcome per session, and the waiting job on A hears of B’s approval', async () => {
    const dbName = `ciport_approvals_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
    await admin.connect();
    await admin.query(`create database ${dbName}`);
    const url = new URL(PG_ADMIN_URL);
    url.pathname = `/${dbName}`;
    const start = (name: string) =>
      startTestGateway(
        gatewayConfig(
          approvalsGatewayDoc({
            stateDir: join(dir, name),
            issuerUrl: issuer.url,
            leaseTimeout: '30s',
            store: { postgres: { url: url.toString() } },
          }),
          operatorEnv(),
        ),
        { sweepIntervalMs: 200 },
      );
    const a = await start('a');
    const b = await start('b');
    const ca = await connectClient(a.url, a.caPem);
    const cb = await connectClient(b.url, b.caPem);
    try {
      for (let round = 0; round < 5; round++) {
        const s = await pending('pg2', ca); // two approvers needed
        const results = await Promise.all([
          decide(s.id, 'bob', 'approve', {}, ca),
          decide(s.id, 'bob', 'approve', {}, cb),
          decide(s.id, 'carol', 'approve', {}, cb),
          round % 2 ? decide(s.id, 'carol', 'deny', {}, ca) : Promise.resolve(undefined),
        ]);
        const final = await a.store.getSession(s.id);
        const events = (await a.store.auditEvents({ limit: 10_000 })).filter((e) => e.data.session === s.id);
        const types = events.map((e) => e.type);
        expect(
          types.filter((t) => t === 'session.opened').length +
            types.filter((t) => t === 'approval.denied').length,
        ).toBeLessThanOrEqual(1);
        if (final?.approval?.state === 'approved') {
          expect(types).not.toContain('approval.denied');
          expect(types.at(-1)).toBe('session.opened');
          // bob counted once, whichever gateway he went through.
          expect(
            events.filter((e) => e.type === 'approval.granted' && e.data.by === 'token:bob'),
          ).toHaveLength(1);
        } else {
          expect(final?.endReason === 'approval_denied' || final?.approval?.state === 'pending').toBe(true);
          expect(types).not.toContain('session.opened');
        }
        const ok = results.filter((r) => r?.status === 200).length;
        expect(ok).toBeGreaterThanOrEqual(1);
        if (final?.state === 'active' && final.approval?.state === 'pending')
          await decide(s.id, 'carol', 'deny', {}, ca);
      }
      // A job waiting on A is woken when B approves (A's sweep reads the store).
      const s = await pending('pg', ca);
      const waiting = api(ca, 'GET', `/v1/sessions/${s.id}/approval?wait=20`, { bearer: s.secret });
      await new Promise((r) => setTimeout(r, 300));
      expect((await decide(s.id, 'bob', 'approve', {}, cb)).body.status).toBe('approved');
      expect(await waiting).toMatchObject({ status: 200, body: { state: 'active' } });
      const t = await connectTunnel(ca, s, 'pg');
      expect(t.status).toBe(200);
      t.stream.destroy();
      expect(await verifyChain(a.store)).toMatchObject({ ok: true });
    } finally {
      ca.destroy();
      cb.destroy();
      await a.close();
      await b.close();
      await admin.query(`drop database if exists ${dbName} with (force)`);
      await admin.end();
    }
  }, 120_000);
});

describe('lease and deadline', () => {
  it('a pending session whose job stopped waiting ends (lease); deciding then is refused', async () => {
    const short = await startTestGateway(
      gatewayConfig(
        approvalsGatewayDoc({ stateDir: join(dir, 'lease'), issuerUrl: issuer.url, leaseTimeout: '1s' }),
        operatorEnv(),
      ),
      { sweepIntervalMs: 100 },
    );
    const c = await connectClient(short.url, short.caPem);
    try {
      const s = await pending('pg', c);
      await waitFor(
        async () => (await short.store.getSession(s.id))?.state === 'ended',
        10_000,
        'the lease to end it',
      );
      expect((await short.store.getSession(s.id))?.endReason).toBe('lease_expired');
      const res = await decide(s.id, 'bob', 'approve', {}, c);
      expect(res).toMatchObject({ status: 410, body: { error: { code: 'CIPORT_E_SESSION_ENDED' } } });
      const echo = await connectTunnel(c, s, 'pg');
      expect(echo.status).toBe(410);
      echo.stream.destroy();
    } finally {
      c.destroy();
      await short.close();
    }
  });

  it('an approved session carries bytes (PostgreSQL answers its SSLRequest)', async () => {
    const s = await pending('pg');
    await decide(s.id, 'bob', 'approve');
    const t = await connectTunnel(client, s, 'pg');
    expect(t.status).toBe(200);
    // An SSLRequest: PostgreSQL answers one byte, S or N.
    const answer = await new Promise<Buffer>((resolve) => {
      t.stream.once('data', resolve);
      t.stream.write(Buffer.from([0, 0, 0, 8, 4, 210, 22, 47]));
    });
    expect(['S', 'N']).toContain(answer.toString('latin1', 0, 1));
    t.stream.destroy();
  });
});
