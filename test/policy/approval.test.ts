// The pure part of approvals (src/policy/approval.ts) and the rule's `approval:` in the config:
// which requirements a decision carries, and when votes meet them.
import { describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import {
  type ApprovalVote,
  approvalTermsFor,
  groupsThatCount,
  tallyApprovals,
} from '../../src/policy/approval.js';
import { compilePolicy, formatDecision, withApprovals } from '../../src/policy/index.js';

const HEAD = `issuers: [{name: g, kind: gitlab, issuer: "https://gitlab.example.com", audience: a}]\nrules:\n`;
const config = (rules: string) => parseGatewayConfig(HEAD + rules, 'gw.yaml', { resolveSecrets: false });
const refused = (rules: string) => {
  try {
    config(rules);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
};

describe('rule approval: in policy explain', () => {
  it('says which granted targets wait for approvers, and from which groups', () => {
    const cfg = config(
      '  - {name: r, issuer: g, allow: [db], approval: {groups: [dba, sre], count: 2, timeout: 20m}}\n' +
        '  - {name: open, issuer: g, allow: [cache]}\n',
    );
    const policy = compilePolicy(cfg);
    const decision = policy.decide({
      issuer: 'g',
      facts: {},
      targets: ['db', 'cache'],
      defaultTtlMs: 600_000,
    });
    const text = formatDecision(withApprovals(decision, policy));
    expect(text).toContain('  db  rule "r"  ttl 10m  needs approval: 2 of dba, sre within 20m\n');
    expect(text).toContain('  cache  rule "open"  ttl 10m\n');
  });
});

describe('rule approval: in the config', () => {
  it('defaults count 1 and timeout 15m; groups are needed', () => {
    const cfg = config('  - {name: r, issuer: g, allow: [db], approval: {groups: [dba]}}\n');
    expect(cfg.rules[0]?.approval).toEqual({ groups: ['dba'], count: 1, timeout: 15 * 60_000 });
    expect(compilePolicy(cfg).rule('r')?.approval).toEqual({ groups: ['dba'], count: 1, timeout: 900_000 });
  });

  it('refuses empty groups, a count outside 1..10, a timeout outside 5s..24h, approval on a deny rule', () => {
    expect(refused('  - {name: r, issuer: g, allow: [db], approval: {groups: []}}\n')).toContain(
      'rules[0].approval.groups',
    );
    expect(refused('  - {name: r, issuer: g, allow: [db], approval: {groups: [a], count: 0}}\n')).toContain(
      'rules[0].approval.count',
    );
    expect(refused('  - {name: r, issuer: g, allow: [db], approval: {groups: [a], count: 11}}\n')).toContain(
      'rules[0].approval.count',
    );
    for (const timeout of ['4s', '25h', '4999ms']) {
      expect(
        refused(`  - {name: r, issuer: g, allow: [db], approval: {groups: [a], timeout: ${timeout}}}\n`),
      ).toContain('rules[0].approval.timeout: between 5s and 24h');
    }
    expect(refused('  - {name: r, issuer: g, deny: true, approval: {groups: [a]}}\n')).toContain(
      'rules[0].approval: a deny rule grants nothing to approve',
    );
    expect(refused('  - {name: r, issuer: g, allow: [db], approval: {groups: [a], extra: 1}}\n')).toContain(
      'unknown key "extra"',
    );
  });
});

describe('approvalTermsFor', () => {
  const rules: Record<string, { groups: string[]; count: number; timeout: number } | null> = {
    db: { groups: ['dba'], count: 1, timeout: 600_000 },
    api: { groups: ['sre', 'payments'], count: 2, timeout: 60_000 },
    free: null,
  };
  const decision = (pairs: [string, string][]) => ({
    targets: pairs.map(([target, rule]) => ({ target, rule, ttlMs: 1 })),
  });

  it('none when no granting rule asks; one requirement per rule; the shortest timeout', () => {
    expect(approvalTermsFor(decision([['x', 'free']]), (r) => rules[r], 1000)).toBeNull();
    expect(
      approvalTermsFor(
        decision([
          ['a', 'db'],
          ['b', 'db'],
          ['c', 'api'],
          ['d', 'free'],
        ]),
        (r) => rules[r],
        1000,
      ),
    ).toEqual({
      requirements: [
        { rule: 'db', groups: ['dba'], count: 1 },
        { rule: 'api', groups: ['sre', 'payments'], count: 2 },
      ],
      deadline: 61_000,
    });
  });
});

describe('tallyApprovals', () => {
  const reqs = [
    { rule: 'db', groups: ['dba'], count: 1 },
    { rule: 'api', groups: ['sre'], count: 2 },
  ];
  const vote = (by: string, groups: string[], decision: 'approve' | 'deny' = 'approve'): ApprovalVote => ({
    by,
    decision,
    at: 0,
    note: null,
    groups,
  });

  it('counts distinct approvers per requirement; one approver counts for each group they are in', () => {
    expect(tallyApprovals(reqs, [vote('a', ['dba', 'sre'])]).met).toBe(false);
    const t = tallyApprovals(reqs, [
      vote('a', ['dba', 'sre']),
      vote('a', ['dba', 'sre']),
      vote('b', ['sre']),
    ]);
    expect(t.met).toBe(true);
    expect(t.approvers).toEqual(['a', 'b']);
    expect(t.requirements.map((r) => r.approvers)).toEqual([['a'], ['a', 'b']]);
    expect(tallyApprovals(reqs, [vote('b', ['sre']), vote('c', ['sre'], 'deny')]).met).toBe(false);
    expect(tallyApprovals([], []).met).toBe(false);
  });

  it('groupsThatCount: the operator groups some requirement names, sorted', () => {
    expect(groupsThatCount(['sre', 'other', 'dba', 'dba'], reqs)).toEqual(['dba', 'sre']);
    expect(groupsThatCount(undefined, reqs)).toEqual([]);
  });
});
