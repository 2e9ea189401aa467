// The console's edges: a gateway without `sso:` says sign-in is not configured; a provider that
// cannot be reached gives a clear page while the gateway keeps serving, and sign-in works once
// it is back; the explain box and the attest button refuse bad input with their codes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CONTENT_SECURITY_POLICY } from '../../src/web/respond.js';
import { api, connectClient } from '../gateway/helpers.js';
import { auditOf, ConsoleClient, startConsoleWorld } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-console-ops-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('without sso:', () => {
  it('every /ui page says sign-in is not configured (404, CIPORT_E_SSO_NOT_CONFIGURED); assets are served', async () => {
    const world = await startConsoleWorld({ dir: join(dir, 'nosso'), noSso: true });
    try {
      const c = new ConsoleClient(world);
      for (const path of ['/ui', '/ui/login', '/ui/sessions', '/ui/callback?code=x&state=y']) {
        const r = await c.get(path);
        expect(r.status, path).toBe(404);
        expect(r.headers['ciport-error'], path).toBe('CIPORT_E_SSO_NOT_CONFIGURED');
        expect(r.headers['content-security-policy'], path).toBe(CONTENT_SECURITY_POLICY);
        expect(r.body, path).toContain('Sign-in is not configured');
      }
      const post = await c.request('POST', '/ui/logout', { form: { csrf: 'x' } });
      expect(post.status).toBe(404);
      expect((await c.get('/ui/assets/console.css')).status).toBe(200);
    } finally {
      await world.close();
    }
  }, 120_000);
});

describe('a provider that cannot be reached', () => {
  it('shows a clear page while the gateway keeps serving, then signs in once the provider is back', async () => {
    let down = true;
    let skew = 0;
    const flaky = ((input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
      const url = String(input instanceof Request ? input.url : input);
      if (down && url.includes('/.well-known/openid-configuration')) {
        return Promise.reject(new TypeError('fetch failed'));
      }
      return fetch(input, init);
    }) as typeof fetch;
    const world = await startConsoleWorld({
      dir: join(dir, 'down'),
      gateway: { fetch: flaky, now: () => Date.now() + skew },
    });
    try {
      const c = new ConsoleClient(world);
      const r = await c.get('/ui/login');
      expect(r.status).toBe(503);
      expect(r.headers['ciport-error']).toBe('CIPORT_E_SSO_UNAVAILABLE');
      expect(r.body).toContain('cannot be reached');
      expect(r.body).toContain('The gateway keeps running');
      // The gateway itself is fine.
      const health = await c.get('/healthz');
      expect(health.status).toBe(200);
      // Within the retry interval the provider is not asked again.
      down = false;
      expect((await c.get('/ui/login')).status).toBe(503);
      skew += 10_000;
      const ok = await c.signIn('ana');
      expect(ok.status, ok.body).toBe(303);
      expect((await c.get('/ui/sessions')).status).toBe(200);
    } finally {
      await world.close();
    }
  }, 120_000);
});

describe('forms refuse bad input', () => {
  it('explain: malformed claims, an unknown issuer, bad targets; hostile claims stay text', async () => {
    const world = await startConsoleWorld({ dir: join(dir, 'forms') });
    try {
      const c = new ConsoleClient(world);
      await c.signIn('dave');
      const cases: Array<[Record<string, string>, number, string]> = [
        [{ claims: '{not json' }, 400, 'CIPORT_E_CLAIMS_INVALID'],
        [{ claims: '[1,2]' }, 400, 'CIPORT_E_CLAIMS_INVALID'],
        [{ claims: '{"iss":"https://nowhere.example"}' }, 400, 'CIPORT_E_CLAIMS_INVALID'],
        [{ claims: '{}', issuer: 'nope' }, 400, 'CIPORT_E_USAGE'],
        [{ claims: '{}', targets: 'UPPER, <b>' }, 400, 'CIPORT_E_USAGE'],
        [{}, 400, 'CIPORT_E_USAGE'],
      ];
      for (const [form, status, code] of cases) {
        const r = await c.post('/ui/policy/explain', form);
        expect(r.status, JSON.stringify(form)).toBe(status);
        expect(r.headers['ciport-error'], JSON.stringify(form)).toBe(code);
      }
      const hostile = await c.post('/ui/policy/explain', {
        claims: JSON.stringify({
          iss: world.issuer.url,
          project_id: '<script>alert(1)</script>',
          ref: '"><img src=x>',
        }),
      });
      expect(hostile.status).toBe(200);
      expect(hostile.body).toContain('deny');
      expect(hostile.body).not.toContain('<script>alert(1)');
      expect(hostile.body).not.toContain('<img src=x>');
      // oversized forms are refused before they are parsed
      const big = await c.post('/ui/policy/explain', { claims: 'x'.repeat(70_000) });
      expect(big.status).toBe(413);
    } finally {
      await world.close();
    }
  }, 120_000);

  it('attest: refused when the review changed since it was shown, or the period has not ended', async () => {
    const world = await startConsoleWorld({ dir: join(dir, 'attest') });
    try {
      const c = new ConsoleClient(world);
      await c.signIn('carla');
      const page = await c.get('/ui/review?since=1h&until=now');
      // the attest form's hidden fields: the period as absolute times, and the hash shown
      const value = (name: string) =>
        new RegExp(`type="hidden" name="${name}" value="([^"]*)"`).exec(page.body)?.[1] as string;
      const since = value('since');
      const until = value('until');
      expect(since).toMatch(/^\d{4}-\d\d-\d\dT/);
      // the same period asked again as "1h".."now" is a later period: another review
      const relative = await c.post('/ui/review/attest', {
        since: '1h',
        until: 'now',
        review_hash: value('review_hash'),
      });
      expect(relative.status).toBe(409);
      const hash = value('review_hash');
      expect(hash).toMatch(/^[0-9a-f]{64}$/);
      const changed = await c.post('/ui/review/attest', { since, until, review_hash: '0'.repeat(64) });
      expect(changed.status).toBe(409);
      expect(changed.headers['ciport-error']).toBe('CIPORT_E_REVIEW_CHANGED');
      const future = await c.post('/ui/review/attest', { since, until: '2999-01-01', review_hash: hash });
      expect(future.status).toBe(400);
      expect(await auditOf(world, 'review.attested')).toHaveLength(0);
      const ok = await c.post('/ui/review/attest', { since, until, review_hash: hash, comment: 'ok' });
      expect(ok.status, ok.body).toBe(200);
      const [event] = await auditOf(world, 'review.attested');
      expect(event?.data).toMatchObject({ review_hash: hash, reviewer: { subject: 'carla' }, comment: 'ok' });
      // dave (approver) may not attest
      const dave = new ConsoleClient(world);
      await dave.signIn('dave');
      expect((await dave.post('/ui/review/attest', { since, until, review_hash: hash })).status).toBe(403);
    } finally {
      await world.close();
    }
  }, 120_000);

  it('agents: an auditor sees no revoke button; an admin revokes one, audited as them', async () => {
    const world = await startConsoleWorld({ dir: join(dir, 'agents') });
    try {
      const registry = world.gateway.agents.registry;
      const { token } = await registry.createEnrollment('dc1', ['redis']);
      const agent = await registry.register(token);
      const carla = new ConsoleClient(world);
      await carla.signIn('carla');
      const seen = await carla.get('/ui/agents');
      expect(seen.status).toBe(200);
      expect(seen.body).toContain(agent.id);
      expect(seen.body).not.toContain('/revoke');
      expect((await carla.post(`/ui/agents/${agent.id}/revoke`)).status).toBe(403);
      const ana = new ConsoleClient(world);
      await ana.signIn('ana');
      expect((await ana.get('/ui/agents')).body).toContain(`/ui/agents/${agent.id}/revoke`);
      const r = await ana.post(`/ui/agents/${agent.id}/revoke`, { reason: 'decommissioned' });
      expect(r.status, r.body).toBe(303);
      expect(r.location).toBe('/ui/agents');
      expect((await ana.get('/ui/agents')).body).toContain('revoked');
      const [event] = await auditOf(world, 'agent.revoked');
      expect(event?.data).toMatchObject({
        agent_id: agent.id,
        by: `oidc:${world.idp.issuer}#ana`,
        note: 'decommissioned',
      });
      // again: revoked already
      expect((await ana.post(`/ui/agents/${agent.id}/revoke`)).status).toBe(404);
    } finally {
      await world.close();
    }
  }, 120_000);
});

describe('a session waiting for approval', () => {
  it('shows state pending on its page (as the API and `ciport sessions list` say), and explain says it waits', async () => {
    const world = await startConsoleWorld({
      dir: join(dir, 'pending'),
      rules: [
        {
          name: 'ledger-main',
          issuer: 'gitlab',
          when: { project_id: '61577203', ref_protected: true },
          allow: ['redis'],
          max_ttl: '30m',
          approval: { groups: ['dba'], timeout: '15m' },
        },
      ],
    });
    try {
      const c = await connectClient(world.gateway.url, world.gateway.caPem);
      let id: string;
      try {
        const token = await world.issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
        const res = await api(c, 'POST', '/v1/sessions', { bearer: token, body: { targets: ['redis'] } });
        expect(res.status).toBe(202);
        id = res.body.id;
      } finally {
        c.destroy();
      }
      const ana = new ConsoleClient(world);
      await ana.signIn('ana');
      const detail = await ana.get(`/ui/sessions/${id}`);
      expect(detail.status).toBe(200);
      expect(detail.body).toMatch(/<th>State<\/th><td[^>]*>pending<\/td>/);
      // the live table marks it, linking its approval page
      const live = await ana.get('/ui/sessions');
      expect(live.body).toContain(`<a class="pending" href="/ui/approvals/${id}">pending approval</a>`);
      // the policy page says so too: the rule's timeout as written, and the explain box
      const rules = await ana.get('/ui/policy');
      expect(rules.body).toContain('&quot;timeout&quot;: &quot;15m&quot;');
      const claims = {
        project_id: '61577203',
        ref_protected: 'true',
        ref: 'main',
        project_path: 'acme/ledger',
      };
      const explained = await ana.post('/ui/policy/explain', {
        claims: JSON.stringify(claims),
        issuer: 'gitlab',
      });
      expect(explained.status, explained.body).toBe(200);
      expect(explained.body).toContain('needs approval: 1 of dba within 15m');
    } finally {
      await world.close();
    }
  }, 120_000);
});
