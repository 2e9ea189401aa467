// DenialLog windows (issue 10, item 9), with a hand-moved clock: the first denial of a group is
// written, repeats are summarised when the window closes, the next window starts afresh, and
// close() writes what is pending. Counts always add up.
import { describe, expect, it } from 'vitest';
import { DenialLog } from '../../src/audit/denials.js';
import type { AuditEventInput, SessionDeniedData } from '../../src/audit/events.js';

function denial(ref: string, project = '61577203'): SessionDeniedData {
  return {
    principal: {
      issuer: 'gitlab',
      subject: `project_path:acme/ledger:ref_type:branch:ref:${ref}`,
      project: 'acme/ledger',
      project_id: project,
      ref,
      pipeline: '1',
      job: '2',
      job_url: null,
    },
    targets: ['db'],
    rule: 'main',
    reason: 'no rule allows this token',
    error_code: 'CIPORT_E_POLICY_DENIED',
    condition: `ref: expected "main", got "${ref}"`,
  };
}

function setup(maxPerIssuer = 5) {
  let now = 1_000_000;
  const written: AuditEventInput[] = [];
  const log = new DenialLog({
    append: async (event) => {
      written.push(event);
    },
    windowMs: 60_000,
    maxPerIssuer,
    now: () => now,
  });
  return { log, written, advance: (ms: number) => (now += ms) };
}

const total = (events: AuditEventInput[]) =>
  events.reduce(
    (n, e) =>
      n +
      (e.type === 'session.denied' ? 1 : e.type === 'session.denied_summary' ? (e.data.count as number) : 0),
    0,
  );

describe('DenialLog', () => {
  it('writes the first of a group, summarises the window, and starts afresh after it', async () => {
    const { log, written, advance } = setup();
    for (let i = 0; i < 50; i++) await log.record(denial(`feature-${i}`), 'ref');
    expect(written.map((e) => e.type)).toEqual(['session.denied']);
    advance(60_000);
    await log.record(denial('feature-next'), 'ref');
    expect(written.map((e) => e.type)).toEqual([
      'session.denied',
      'session.denied_summary',
      'session.denied',
    ]);
    const summary = written[1];
    expect(summary?.data).toMatchObject({
      count: 49,
      distinct_refs: 49,
      condition_claim: 'ref',
      window_ms: 60_000,
    });
    await log.close();
    expect(total(written)).toBe(51);
  });

  it('caps the groups an issuer opens per window; the rest go to one overflow summary', async () => {
    const { log, written } = setup(3);
    for (let i = 0; i < 100; i++) await log.record(denial(`b-${i}`, String(i % 10)), 'ref');
    await log.close();
    const denied = written.filter((e) => e.type === 'session.denied');
    const summaries = written.filter((e) => e.type === 'session.denied_summary');
    expect(denied).toHaveLength(3);
    expect(summaries.length).toBeLessThanOrEqual(3 + 1);
    expect(summaries.filter((e) => (e.data as { overflow?: boolean }).overflow)).toHaveLength(1);
    expect(total(written)).toBe(100);
  });

  it('a write failure of the first denial reaches the caller', async () => {
    const log = new DenialLog({
      append: async () => {
        throw new Error('store down');
      },
      windowMs: 60_000,
      maxPerIssuer: 5,
    });
    await expect(log.record(denial('x'))).rejects.toThrow('store down');
    await log.close();
  });
});
