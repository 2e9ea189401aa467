// Issue 10, item 9: denials are audited without an unbounded log. 2000 denied session requests
// from one project with rotating branch names (what a hostile pipeline pushing branch after
// branch produces) write a handful of rows, and the rows still say that 2000 denials happened;
// with rotating projects as well, the per-issuer ceiling bounds the rows.
import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/events.js';
import { api, type Harness, startHarness } from './helpers.js';

const N = 2000;

async function deny(h: Harness, claims: (i: number) => Record<string, unknown>): Promise<number[]> {
  const c = await h.client();
  const statuses: number[] = [];
  const lanes = 40;
  await Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      for (let i = lane; i < N; i += lanes) {
        const token = await h.token(claims(i));
        const res = await api(c, 'POST', '/v1/sessions', { bearer: token, body: { targets: ['echo'] } });
        statuses.push(res.status);
      }
    }),
  );
  return statuses;
}

/** Stop the gateway (pending summaries are written) and read its log back on a fresh start. */
async function flushedEvents(h: Harness): Promise<AuditEvent[]> {
  await h.restart();
  const events: AuditEvent[] = [];
  for (let after = 0; ; ) {
    const page = await h.gateway.store.auditEvents({ afterSeq: after, limit: 10_000 });
    if (page.length === 0) return events;
    events.push(...page);
    after = page[page.length - 1]?.seq ?? after;
  }
}

async function deniedMetric(h: Harness): Promise<number> {
  const metric = await h.gateway.metrics.sessionsDenied.get();
  return metric.values.find((v) => v.labels.reason === 'CIPORT_E_POLICY_DENIED')?.value ?? 0;
}

const branch = (i: number) => ({
  ref: `feature/x-${i}`,
  ref_protected: 'false',
  sub: `project_path:acme/ledger:ref_type:branch:ref:feature/x-${i}`,
  job_id: String(100_000 + i),
});

// Generous rate limits, denied requests included: this file is about the audit bound, not the
// rate limit (test/gateway/api.test.ts, "rate limit").
const generous = { per_minute: 1e6, burst: 1e5 };
const sessions = {
  rate_limit: { ...generous, per_issuer: generous, denied: { ...generous, per_issuer: generous } },
};

describe('denial audit', () => {
  it('2000 denials with rotating refs: 2 rows, and the summary counts add up to 2000', async () => {
    const h = await startHarness({ sessions });
    try {
      const statuses = await deny(h, branch);
      expect(statuses.filter((s) => s === 403)).toHaveLength(N);
      expect(await deniedMetric(h)).toBe(N);
      const events = await flushedEvents(h);
      const denied = events.filter((e) => e.type === 'session.denied');
      const summaries = events.filter((e) => e.type === 'session.denied_summary');
      expect(denied.length + summaries.length).toBeLessThanOrEqual(2);
      expect(denied).toHaveLength(1);
      expect(denied[0]?.data).toMatchObject({ rule: 'ledger-main', error_code: 'CIPORT_E_POLICY_DENIED' });
      const counted = summaries.reduce((n, e) => n + (e.data.count as number), 0);
      expect(denied.length + counted).toBe(N);
      expect(summaries[0]?.data).toMatchObject({
        issuer: 'gitlab',
        project_id: '61577203',
        rule: 'ledger-main',
        condition_claim: 'ref_protected',
        distinct_refs: 1000, // distinct values are counted up to 1000
      });
      expect(summaries[0]?.data.refs as string[]).toHaveLength(10);
    } finally {
      await h.stop();
    }
  });

  it('rotating projects too: at most 2 × max_per_issuer + 1 rows, nothing uncounted', async () => {
    const h = await startHarness({
      sessions,
      extra: { audit: { denials: { window: '1h', max_per_issuer: 20 } } },
    });
    try {
      const project = (i: number) => String(5_000_000 + (i % 300));
      await deny(h, (i) => ({ ...branch(i), project_id: project(i), job_project_id: project(i) }));
      expect(await deniedMetric(h)).toBe(N);
      const events = await flushedEvents(h);
      const denied = events.filter((e) => e.type === 'session.denied');
      const summaries = events.filter((e) => e.type === 'session.denied_summary');
      expect(denied).toHaveLength(20);
      expect(denied.length + summaries.length).toBeLessThanOrEqual(2 * 20 + 1);
      expect(summaries.filter((e) => e.data.overflow === true)).toHaveLength(1);
      const counted = summaries.reduce((n, e) => n + (e.data.count as number), 0);
      expect(denied.length + counted).toBe(N);
    } finally {
      await h.stop();
    }
  });
});
