// Attack: a rule with a narrow `session_policy` grants a job an `aws` target; the operator then
// removes or renames that rule (SIGHUP reload). Sessions already open live on, and each later
// AssumeRole looked the policy up by the rule's name: not found → no policy → `Allow *`, the
// role's whole reach, to a session whose rule no longer exists. It must deny instead.
import { describe, expect, it } from 'vitest';
import type { GatewayConfig } from '../../src/config/schema.js';
import { boundedSessionPolicy } from '../../src/config/session-policy.js';
import { grantingRulePolicy } from '../../src/gateway/exits.js';

const narrow = JSON.stringify({
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: 'arn:aws:s3:::artifacts/*' }],
});

type Statement = { Effect: string; Action: string; Resource: string; Condition?: unknown };
/** A rule as the loaded config has it: only what the lookup reads matters. */
const rule = (name: string, extra: Partial<GatewayConfig['rules'][number]> = {}) =>
  ({
    name,
    deny: false,
    issuer: 'gl',
    when: {},
    allow: ['aws-prod'],
    ...extra,
  }) as GatewayConfig['rules'][number];

const statements = (policy: string) => (JSON.parse(policy) as { Statement: Statement[] }).Statement;

describe('a session whose granting rule a reload removed', () => {
  const record = { rule: 'deploy-read', targetRules: { 'aws-prod': 'deploy-read' } };

  it('gets its rule policy while the rule exists', () => {
    const rules = [rule('deploy-read', { session_policy: narrow })];
    expect(grantingRulePolicy(rules, record, 'aws-prod')).toBe(narrow);
  });

  it('is denied everything once the rule is gone, never Allow *', () => {
    const after = [rule('deploy-write')];
    const sent = boundedSessionPolicy(grantingRulePolicy(after, record, 'aws-prod'), '2030-01-01T00:00:00Z');
    const allows = statements(sent).filter((s) => s.Effect === 'Allow');
    expect(allows).toEqual([]);
    expect(statements(sent)).toContainEqual(
      expect.objectContaining({ Effect: 'Deny', Action: '*', Resource: '*' }),
    );
    expect(statements(sent).some((s) => s.Effect === 'Deny' && s.Condition === undefined)).toBe(true);
  });

  it('is denied everything when the rule is still there but no longer allows the target, or denies', () => {
    for (const after of [
      [rule('deploy-read', { allow: ['other'], session_policy: narrow })],
      [rule('deploy-read', { deny: true })],
    ]) {
      const sent = boundedSessionPolicy(
        grantingRulePolicy(after, record, 'aws-prod'),
        '2030-01-01T00:00:00Z',
      );
      expect(statements(sent).filter((s) => s.Effect === 'Allow')).toEqual([]);
    }
  });
});
