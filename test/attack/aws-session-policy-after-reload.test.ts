// Attack: a rule with a narrow `session_policy` grants a job an `aws` target; the operator then
// removes or renames that rule (SIGHUP reload). Sessions already open live on, and each later
// AssumeRole looked the policy up by the rule's name: not found → no policy → `Allow *`, the
// role's whole reach, to a session whose rule no longer exists. It must deny instead.
import { describe, expect, it } from 'vitest';
import { boundedSessionPolicy } from '../../src/config/session-policy.js';
import { grantingRuleGrants, grantingRulePolicy } from '../../src/gateway/exits.js';

const narrow = JSON.stringify({
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: 'arn:aws:s3:::artifacts/*' }],
});

type Statement = { Effect: string; Action: string; Resource: string; Condition?: unknown };
const statements = (policy: string) => (JSON.parse(policy) as { Statement: Statement[] }).Statement;

describe('a session whose granting rule a reload removed', () => {
  const record = { rule: 'deploy-read', targetRules: { 'aws-prod': 'deploy-read' } };

  it('gets its rule policy while the rule exists', () => {
    const rules = new Map([['deploy-read', { session_policy: narrow }]]);
    expect(grantingRulePolicy(rules, record, 'aws-prod')).toBe(narrow);
  });

  it('is denied everything once the rule is gone, never Allow *', () => {
    const after = new Map([['deploy-write', { session_policy: undefined }]]);
    const sent = boundedSessionPolicy(grantingRulePolicy(after, record, 'aws-prod'), '2030-01-01T00:00:00Z');
    const allows = statements(sent).filter((s) => s.Effect === 'Allow');
    expect(allows).toEqual([]);
    expect(statements(sent)).toContainEqual(
      expect.objectContaining({ Effect: 'Deny', Action: '*', Resource: '*' }),
    );
    expect(statements(sent).some((s) => s.Effect === 'Deny' && s.Condition === undefined)).toBe(true);
  });
});

describe('a per-session database account whose granting rule a reload removed', () => {
  const record = { rule: 'read-only', targetRules: { db: 'read-only' } };

  it('gets no roles, not the target default grants', () => {
    const before = new Map([['read-only', { grants: { db: ['reader'] } }]]);
    expect(grantingRuleGrants(before, record, 'db')).toEqual(['reader']);
    expect(grantingRuleGrants(new Map(), record, 'db')).toEqual([]);
    // A rule without grants for the target still means the target's (undefined).
    expect(grantingRuleGrants(new Map([['read-only', { grants: {} }]]), record, 'db')).toBeUndefined();
  });
});
