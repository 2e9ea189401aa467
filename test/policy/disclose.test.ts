// policy.disclose levels over real decisions of the engine: every kind of denial, at each level.
import { describe, expect, it } from 'vitest';
import { compilePolicy, type Decision, disclosedDecision, disclosedReason } from '../../src/policy/index.js';

const policy = compilePolicy({
  rules: [
    { name: 'blocklist-secret', issuer: 'gl', deny: true, when: { namespace_id: '424242' } },
    {
      name: 'hidden-prod',
      issuer: 'gl',
      when: { project_id: '777', ref: { glob: 'rel/*-x' } },
      allow: ['prod'],
    },
    { name: 'tests', issuer: 'gl', when: { project_id: '1' }, allow: ['test'] },
  ],
});
const decide = (facts: Record<string, unknown>, targets: string[] = []): Decision =>
  policy.decide({ issuer: 'gl', facts, targets, defaultTtlMs: 60_000 });
const SECRETS = ['424242', '777', 'rel/*-x', 'hidden-prod', 'blocklist-secret'];
const text = (d: Decision, level: 'minimal' | 'condition' | 'full') =>
  JSON.stringify(disclosedDecision(d, level)) + disclosedReason(d, level);

describe('condition level', () => {
  it('a target this token may not have: names the target and the condition, not the rule', () => {
    const d = decide({ project_id: '1', ref: 'main' }, ['prod']);
    expect(d.decision).toBe('deny');
    expect(disclosedReason(d, 'condition')).toBe(
      'no rule allows target "prod" for this token; condition not met: project_id: not satisfied by this token\'s value "1"',
    );
    for (const s of SECRETS) expect(text(d, 'condition')).not.toContain(s);
    expect(text(d, 'full')).toContain('hidden-prod');
    expect(text(d, 'full')).toContain('"777"');
  });

  it("a deny rule: the token's own values only", () => {
    const d = decide({ namespace_id: 424242, project_id: '1' });
    expect(disclosedReason(d, 'condition')).toBe('denied by a deny rule (namespace_id = 424242)');
    expect(disclosedDecision(d, 'condition')).toMatchObject({ rule: null, rules: [] });
    expect(text(d, 'condition')).not.toContain('blocklist-secret');
  });

  it('an allow is shown whole', () => {
    const d = decide({ project_id: '1' });
    expect(disclosedDecision(d, 'minimal')).toMatchObject({
      decision: 'allow',
      rule: 'tests',
      reason: d.reason,
    });
  });

  it('a token from an issuer with no rules is told just that', () => {
    const d = policy.decide({ issuer: 'other', facts: {}, defaultTtlMs: 60_000 });
    expect(disclosedReason(d, 'condition')).toBe('no rule allows tokens from issuer "other"');
    expect(disclosedReason(d, 'minimal')).toBe('denied by policy');
  });
});
