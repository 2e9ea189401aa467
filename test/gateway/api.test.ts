// The session API of docs/protocol.md against a real gateway (TLS, HTTP/2 and HTTP/1.1) with
// tokens from a real OIDC issuer on loopback.
import { request as httpsRequest } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreError } from '../../src/store/errors.js';
import { ADMIN_TOKEN, api, type Harness, type Json, openSession, startHarness } from './helpers.js';

let h: Harness;

beforeAll(async () => {
  h = await startHarness({ extra: {} });
});
afterAll(async () => {
  await h?.stop();
});

async function auditTypes(): Promise<string[]> {
  return (await h.gateway.store.auditEvents({ limit: 10_000 })).map((e) => e.type);
}

describe('health', () => {
  it('answers /healthz and /readyz', async () => {
    const c = await h.client();
    expect(await api(c, 'GET', '/healthz')).toMatchObject({ status: 200, body: { ok: true } });
    expect(await api(c, 'GET', '/readyz')).toMatchObject({ status: 200, body: { ok: true } });
  });

  it('/readyz answers 503 CIPORT_E_STORE_UNAVAILABLE while the store cannot write', async () => {
    const c = await h.client();
    const store = h.gateway.store as { checkWritable?: () => Promise<void> };
    const original = store.checkWritable;
    store.checkWritable = async () => {
      throw new StoreError('CIPORT_E_STORE_UNAVAILABLE', 'store unavailable: writer down (test)');
    };
    try {
      expect(await api(c, 'GET', '/readyz')).toMatchObject({
        status: 503,
        body: { ok: false, code: 'CIPORT_E_STORE_UNAVAILABLE' },
      });
    } finally {
      store.checkWritable = original;
    }
    expect(await api(c, 'GET', '/readyz')).toMatchObject({ status: 200 });
  });

  it('serves Prometheus metrics', async () => {
    const c = await h.client();
    const res = await api(c, 'GET', '/metrics');
    expect(res.status).toBe(200);
    expect(String(res.body)).toContain('ciport_sessions_active');
    expect(String(res.body)).toContain('ciport_tunnel_bytes_total');
  });

  it('answers unknown endpoints and methods with codes', async () => {
    const c = await h.client();
    const nf = await api(c, 'GET', '/nope');
    expect(nf.status).toBe(404);
    expect(nf.body.error.code).toBe('CIPORT_E_NOT_FOUND');
    expect(nf.headers['ciport-error']).toBe('CIPORT_E_NOT_FOUND');
    const mna = await api(c, 'PUT', '/v1/sessions');
    expect(mna.status).toBe(405);
    expect(mna.body.error.code).toBe('CIPORT_E_METHOD_NOT_ALLOWED');
  });

  it('warns loudly at start when it trusts a development issuer', async () => {
    // The fixture issuer is served over http on loopback, as `ciport dev issuer` is.
    expect(h.stderr.text).toContain(
      `ciport: WARNING: trusting DEVELOPMENT issuer "gitlab" (${h.issuer.url})`,
    );
  });

  it('records config.loaded at start', async () => {
    const events = await h.gateway.store.auditEvents();
    const loaded = events.find((e) => e.type === 'config.loaded');
    expect(loaded?.data).toMatchObject({ issuers: ['gitlab'], rules: ['no-forks', 'ledger-main'] });
    expect(loaded?.data.config_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(loaded?.data)).not.toContain(ADMIN_TOKEN);
  });
});

describe('POST /v1/sessions', () => {
  it('creates a session: 201 with id, secret, expiry and per-target settings', async () => {
    const c = await h.client();
    const token = await h.token();
    const res = await api(c, 'POST', '/v1/sessions', {
      bearer: token,
      body: { targets: ['echo', 'pg'], ttl: '10m' },
    });
    expect(res.status).toBe(201);
    expect(res.body.id).toMatch(/^ses_[A-Za-z0-9_-]+$/);
    expect(res.body.secret).toMatch(/^cps_[A-Za-z0-9_-]{43}$/);
    expect(res.body.rule).toBe('ledger-main');
    expect(res.body.lease_timeout_ms).toBe(30_000);
    expect(res.body.heartbeat_interval_ms).toBe(10_000);
    const ttl = Date.parse(res.body.expires_at) - Date.now();
    expect(ttl).toBeGreaterThan(9 * 60_000);
    expect(ttl).toBeLessThanOrEqual(10 * 60_000);
    expect(res.body.targets).toEqual([
      { name: 'echo', protocol: 'tcp', rule: 'ledger-main', ttl_ms: 600_000 },
      { name: 'pg', protocol: 'postgres', database: 'app', rule: 'ledger-main', ttl_ms: 600_000 },
    ]);
    expect(res.body.principal).toMatchObject({
      issuer: 'gitlab',
      project: { id: '61577203', path: 'acme/ledger' },
    });

    // Only the secret's hash is stored.
    const stored = await h.gateway.store.getSession(res.body.id);
    expect(stored?.secretHash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(stored)).not.toContain(res.body.secret);
    expect(stored?.targetRules).toEqual({ echo: 'ledger-main', pg: 'ledger-main' });
    const opened = (await h.gateway.store.auditEvents({ limit: 10_000 })).find(
      (e) => e.type === 'session.opened' && e.data.session === res.body.id,
    );
    expect(opened?.data).toMatchObject({ targets: ['echo', 'pg'], rule: 'ledger-main', ttl_ms: 600_000 });
    expect(opened?.data.principal).toMatchObject({
      project: 'acme/ledger',
      ref: 'main',
      pipeline: '1519139981',
    });
    expect(JSON.stringify(opened)).not.toContain(res.body.secret);
    expect(JSON.stringify(opened)).not.toContain(token);
  });

  it('caps the TTL at the rule maximum and uses default_ttl when none is asked', async () => {
    const c = await h.client();
    const long = await openSession(c, await h.token(), { targets: ['echo'], ttl: '2h' });
    expect(Date.parse(long.body.expires_at) - Date.now()).toBeLessThanOrEqual(30 * 60_000);
    expect(Date.parse(long.body.expires_at) - Date.now()).toBeGreaterThan(29 * 60_000);
    const dflt = await openSession(c, await h.token(), { targets: ['echo'] });
    expect(Date.parse(dflt.body.expires_at) - Date.now()).toBeLessThanOrEqual(15 * 60_000);
    expect(Date.parse(dflt.body.expires_at) - Date.now()).toBeGreaterThan(14 * 60_000);
  });

  it('refuses a missing or bad token with 401 and its code', async () => {
    const c = await h.client();
    const none = await api(c, 'POST', '/v1/sessions', { body: {} });
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe('CIPORT_E_TOKEN_MALFORMED');
    const expired = await api(c, 'POST', '/v1/sessions', {
      bearer: await h.issuer.mint({}, { preset: 'gitlab-main', now: Date.now() - 3_600_000, ttlMs: 60_000 }),
      body: {},
    });
    expect(expired.status).toBe(401);
    expect(expired.body.error.code).toBe('CIPORT_E_TOKEN_EXPIRED');
    expect(expired.headers['ciport-error']).toBe('CIPORT_E_TOKEN_EXPIRED');
    const wrongAud = await api(c, 'POST', '/v1/sessions', {
      bearer: await h.issuer.mint({}, { preset: 'gitlab-main', audience: 'someone-else' }),
    });
    expect(wrongAud.body.error.code).toBe('CIPORT_E_TOKEN_WRONG_AUDIENCE');
  });

  it('denies by policy with 403, the explanation, and a session.denied event', async () => {
    const c = await h.client();
    const fork = await h.token({}, 'gitlab-fork-mr');
    const res = await api(c, 'POST', '/v1/sessions', { bearer: fork, body: { targets: ['echo'] } });
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe('CIPORT_E_POLICY_DENIED');
    // policy.disclose defaults to `condition`: the job's own values, no rule names (disclose.test.ts).
    expect(res.body.decision).toMatchObject({ decision: 'deny', rule: null });
    expect(res.body.error.message).toBe('denied by a deny rule (fork = true)');

    const unprotected = await h.token({ ref_protected: 'false' });
    const res2 = await api(c, 'POST', '/v1/sessions', { bearer: unprotected, body: { targets: ['echo'] } });
    expect(res2.status).toBe(403);
    expect(res2.body.decision.nearest).toEqual({
      claim: 'ref_protected',
      actual: '"false"',
      message: 'ref_protected: not satisfied by this token\'s value "false"',
    });

    const denied = (await h.gateway.store.auditEvents({ limit: 10_000 })).filter(
      (e) => e.type === 'session.denied',
    );
    const last = denied.at(-1);
    expect(last?.data).toMatchObject({
      rule: 'ledger-main',
      error_code: 'CIPORT_E_POLICY_DENIED',
      targets: ['echo'],
    });
    expect(String(last?.data.condition)).toContain('ref_protected');
    expect(JSON.stringify(denied)).not.toContain(unprotected);
    expect(JSON.stringify(denied)).not.toContain(fork);
  });

  it('rejects a malformed body with 400', async () => {
    const c = await h.client();
    const token = await h.token();
    const res = await api(c, 'POST', '/v1/sessions', { bearer: token, body: { targets: 'echo' } });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('CIPORT_E_USAGE');
    const bad = await api(c, 'POST', '/v1/sessions', { bearer: token, rawBody: Buffer.from('{nope') });
    expect(bad.status).toBe(400);
    const ttl = await api(c, 'POST', '/v1/sessions', { bearer: token, body: { ttl: 'forever' } });
    expect(ttl.status).toBe(400);
  });

  it('refuses bodies over the size limit with 413', async () => {
    const c = await h.client();
    const res = await api(c, 'POST', '/v1/sessions', {
      bearer: await h.token(),
      rawBody: Buffer.alloc(200_000, 0x20),
    });
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe('CIPORT_E_BODY_TOO_LARGE');
  });

  it('works over HTTP/1.1 too (JSON API only)', async () => {
    const res = await new Promise<{ status: number; body: Json }>((resolve, reject) => {
      const req = httpsRequest(
        `${h.gateway.url}/v1/sessions`,
        { method: 'GET', ca: h.gateway.caPem, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) }),
          );
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(res.status).toBe(200);
    expect(Array.isArray(res.body)).toBe(true);
  });
});

describe('heartbeat and DELETE', () => {
  it('extends the lease, ends with client_end, then reports 410 with end_reason', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const hb = await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret });
    expect(hb.status).toBe(200);
    expect(hb.body.state).toBe('active');
    expect(Date.parse(hb.body.lease_expires_at)).toBeGreaterThan(Date.now() + 25_000);
    expect(hb.body.expires_at).toBe(s.body.expires_at);

    const wrong = await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: 'cps_wrong' });
    expect(wrong.status).toBe(401);
    expect(wrong.body.error.code).toBe('CIPORT_E_SESSION_UNAUTHORIZED');
    const unknown = await api(c, 'POST', '/v1/sessions/ses_doesnotexist/heartbeat', { bearer: s.secret });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('CIPORT_E_SESSION_NOT_FOUND');

    const del = await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
    expect(del).toMatchObject({ status: 200, body: { state: 'ended', end_reason: 'client_end' } });
    const again = await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
    expect(again).toMatchObject({ status: 200, body: { state: 'ended', end_reason: 'client_end' } });
    const delWrong = await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: 'cps_wrong' });
    expect(delWrong.status).toBe(401);

    const late = await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret });
    expect(late.status).toBe(410);
    expect(late.body.error).toMatchObject({ code: 'CIPORT_E_SESSION_ENDED', end_reason: 'client_end' });
    expect(late.body.error.message).toContain('client_end');

    const ended = (await h.gateway.store.auditEvents({ limit: 10_000 })).filter(
      (e) => e.type === 'session.ended' && e.data.session === s.id,
    );
    expect(ended).toHaveLength(1);
    expect(ended[0]?.data).toMatchObject({ reason: 'client_end', targets: ['echo'] });
  });
});

describe('admin API', () => {
  it('lists sessions with the documented shape, and --active narrows it', async () => {
    const c = await h.client();
    const live = await openSession(c, await h.token(), { targets: ['echo'] });
    const gone = await openSession(c, await h.token(), { targets: ['redis'] });
    await api(c, 'DELETE', `/v1/sessions/${gone.id}`, { bearer: gone.secret });

    const all = await api(c, 'GET', '/v1/sessions', { bearer: ADMIN_TOKEN });
    expect(all.status).toBe(200);
    const byId = new Map<string, Json>(all.body.map((s: Json) => [s.id, s]));
    expect(byId.get(live.id)).toMatchObject({
      id: live.id,
      state: 'active',
      end_reason: null,
      targets: ['echo'],
      principal: { issuer: 'gitlab' },
      expires_at: live.body.expires_at,
    });
    expect(Date.parse(byId.get(live.id).created_at)).toBeLessThanOrEqual(Date.now());
    expect(byId.get(gone.id)).toMatchObject({ state: 'ended', end_reason: 'client_end', targets: ['redis'] });
    for (const s of all.body) {
      expect(Object.keys(s)).toEqual(
        expect.arrayContaining([
          'id',
          'state',
          'end_reason',
          'targets',
          'principal',
          'created_at',
          'expires_at',
        ]),
      );
      expect(JSON.stringify(s)).not.toMatch(/cps_|secret/i);
    }

    const active = await api(c, 'GET', '/v1/sessions?active=1', { bearer: ADMIN_TOKEN });
    expect(active.body.every((s: Json) => s.state === 'active')).toBe(true);
    expect(active.body.some((s: Json) => s.id === live.id)).toBe(true);
    expect(active.body.some((s: Json) => s.id === gone.id)).toBe(false);
  });

  it('refuses a bad or missing admin token with 401', async () => {
    const c = await h.client();
    for (const bearer of [undefined, 'wrong', `${ADMIN_TOKEN}x`, ADMIN_TOKEN.slice(0, -1)]) {
      const res = await api(c, 'GET', '/v1/sessions', bearer ? { bearer } : {});
      expect(res.status).toBe(401);
      expect(res.body.error.code).toBe('CIPORT_E_ADMIN_UNAUTHORIZED');
    }
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    // A session secret is no admin token.
    const res = await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: s.secret });
    expect(res.status).toBe(401);
  });

  it('revokes: 200 revoked, 404 unknown, and the session is over for its client', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const res = await api(c, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: ADMIN_TOKEN });
    expect(res).toMatchObject({ status: 200, body: { state: 'ended', end_reason: 'revoked' } });
    const unknown = await api(c, 'POST', '/v1/sessions/ses_nope/revoke', { bearer: ADMIN_TOKEN });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('CIPORT_E_SESSION_NOT_FOUND');
    const hb = await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret });
    expect(hb.status).toBe(410);
    expect(hb.body.error.end_reason).toBe('revoked');
    expect(await auditTypes()).toContain('session.ended');
  });
});

describe('rate limit', () => {
  it('limits session creation per CI job with 429 and Retry-After; other jobs of the same sub are not held up', async () => {
    const limited = await startHarness({ sessions: { rate_limit: { per_minute: 1, burst: 2 } } });
    try {
      const c = await limited.client();
      const token = await limited.token();
      expect((await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} })).status).toBe(201);
      expect((await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} })).status).toBe(201);
      const third = await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} });
      expect(third.status).toBe(429);
      expect(third.body.error.code).toBe('CIPORT_E_RATE_LIMITED');
      expect(third.body.error.message).toContain('job:8222997048');
      expect(Number(third.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // Another job of the same project and branch (same GitLab `sub`) has its own bucket.
      const sibling = await limited.token({ job_id: '8222997049' });
      expect((await api(c, 'POST', '/v1/sessions', { bearer: sibling, body: {} })).status).toBe(201);
    } finally {
      await limited.stop();
    }
  });

  it('keeps a ceiling per issuer over all its jobs', async () => {
    const limited = await startHarness({
      sessions: { rate_limit: { per_minute: 100, burst: 100, per_issuer: { per_minute: 1, burst: 3 } } },
    });
    try {
      const c = await limited.client();
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) {
        const token = await limited.token({ job_id: String(9_000_000 + i) });
        statuses.push((await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} })).status);
      }
      expect(statuses).toEqual([201, 201, 201, 429, 429]);
      const token = await limited.token({ job_id: '9100000' });
      const refused = await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} });
      expect(refused.body.error.message).toContain('issuer gitlab is at its session ceiling');
      expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    } finally {
      await limited.stop();
    }
  });

  // Security review (issue 10): tokens no rule allows drained the per-issuer ceiling, and a
  // legitimate job then got 429. On gitlab.com anyone can mint tokens for our audience.
  it('denied tokens never spend the issuer ceiling: a flooding project gets 429, allowed jobs and other projects do not', async () => {
    const limited = await startHarness({
      sessions: {
        rate_limit: {
          per_minute: 100,
          burst: 100,
          per_issuer: { per_minute: 1, burst: 20 },
          denied: { per_minute: 1, burst: 50, per_issuer: { per_minute: 1, burst: 100 } },
        },
      },
    });
    const project = (id: string, i: number) => ({
      project_id: id,
      job_project_id: id,
      project_path: `evil/p${id}`,
      sub: `project_path:evil/p${id}:ref_type:branch:ref:r${i}`,
      ref: `r${i}`,
      job_id: String(700_000 + i),
    });
    try {
      const c = await limited.client();
      const xStatuses: Record<number, number> = {};
      let lastX: Awaited<ReturnType<typeof api>> | undefined;
      for (let i = 0; i < 300; i++) {
        lastX = await api(c, 'POST', '/v1/sessions', {
          bearer: await limited.token(project('666', i)),
          body: {},
        });
        xStatuses[lastX.status] = (xStatuses[lastX.status] ?? 0) + 1;
      }
      // Project X: its denial bucket (burst 50) answers 403, then 429 for the rest of the flood.
      expect(xStatuses).toEqual({ 403: 50, 429: 250 });
      expect(lastX?.body.error.code).toBe('CIPORT_E_RATE_LIMITED');
      expect(lastX?.body.error.message).toContain(
        'too many denied session requests from project:666 of gitlab',
      );
      expect(Number(lastX?.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // Another denied project is still told 403 (its own bucket), not 429.
      const other = await api(c, 'POST', '/v1/sessions', {
        bearer: await limited.token(project('777', 1)),
        body: {},
      });
      expect(other.status).toBe(403);
      expect(other.body.error.code).toBe('CIPORT_E_POLICY_DENIED');
      // Project Y (allowed): 20 jobs all get their session, the whole per-issuer burst.
      const yStatuses: number[] = [];
      for (let i = 0; i < 20; i++) {
        const token = await limited.token({ job_id: String(8_000_000 + i) });
        yStatuses.push((await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} })).status);
      }
      expect(yStatuses).toEqual(Array(20).fill(201));
      // The ceiling still bounds allowed sessions.
      const over = await api(c, 'POST', '/v1/sessions', {
        bearer: await limited.token({ job_id: '8100000' }),
        body: {},
      });
      expect(over.status).toBe(429);
      expect(over.body.error.message).toContain('issuer gitlab is at its session ceiling');
      // X keeps flooding: still 429.
      const again = await api(c, 'POST', '/v1/sessions', {
        bearer: await limited.token(project('666', 999)),
        body: {},
      });
      expect(again.status).toBe(429);
    } finally {
      await limited.stop();
    }
  });

  it('bounds denials over all projects of an issuer', async () => {
    const limited = await startHarness({
      sessions: {
        rate_limit: {
          per_minute: 100,
          burst: 100,
          per_issuer: { per_minute: 1, burst: 5 },
          denied: { per_minute: 1, burst: 50, per_issuer: { per_minute: 1, burst: 30 } },
        },
      },
    });
    try {
      const c = await limited.client();
      const statuses: number[] = [];
      // Rotating projects (one request each): the issuer's denial ceiling bounds them.
      for (let i = 0; i < 40; i++) {
        const token = await limited.token({
          project_id: String(5000 + i),
          job_project_id: String(5000 + i),
          job_id: String(600_000 + i),
        });
        statuses.push((await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} })).status);
      }
      expect(statuses).toEqual([...Array(30).fill(403), ...Array(10).fill(429)]);
      const metric = await limited.gateway.metrics.sessionsDenied.get();
      expect(metric.values.find((v) => v.labels.reason === 'CIPORT_E_POLICY_DENIED')?.value).toBe(30);
      // Allowed jobs are untouched by that.
      for (let i = 0; i < 5; i++) {
        const token = await limited.token({ job_id: String(8_200_000 + i) });
        expect((await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} })).status).toBe(201);
      }
    } finally {
      await limited.stop();
    }
  });
});
