// A rule's `session_policy`: an IAM policy document that narrows what the role assumed for an
// `aws` target may do in the sessions the rule grants (STS intersects it with the role's own
// policies). Given as a YAML/JSON object or as JSON text; kept as compact JSON text, checked at
// load for what STS would refuse later: not JSON, no Version/Statement, over the packed size.
import { z } from 'zod';

/** STS's limit on the Policy parameter (plain text; the packed binary size is also bounded). */
export const SESSION_POLICY_MAX = 2048;

function parse(input: unknown): { text: string } | { error: string } {
  let doc: unknown = input;
  if (typeof input === 'string') {
    try {
      doc = JSON.parse(input);
    } catch {
      return { error: 'session_policy is not valid JSON' };
    }
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    return { error: 'session_policy must be an IAM policy document (an object)' };
  const d = doc as Record<string, unknown>;
  if (d.Version !== '2012-10-17' && d.Version !== '2008-10-17')
    return { error: 'session_policy needs "Version": "2012-10-17"' };
  const statements = Array.isArray(d.Statement) ? d.Statement : [d.Statement];
  if (
    d.Statement === undefined ||
    statements.length === 0 ||
    !statements.every((s) => s !== null && typeof s === 'object' && !Array.isArray(s))
  )
    return { error: 'session_policy needs a "Statement" (an object or a list of them)' };
  const text = JSON.stringify(doc);
  // What STS receives is this plus the exit's deny-after-expiry statement: that must fit.
  const sent = boundedSessionPolicy(text, '2026-01-01T00:00:00Z').length;
  if (sent > SESSION_POLICY_MAX)
    return {
      error: `session_policy is ${text.length} bytes packed, ${sent} with ciport's expiry statement; STS takes at most ${SESSION_POLICY_MAX}`,
    };
  return { text };
}

/**
 * The session policy an `aws` exit sends with every AssumeRole: the rule's statements (without a
 * rule policy: allow everything, so the role's own policies decide) plus one statement that denies
 * every action once the ciport session has expired, so the credentials are useless after it even
 * though STS cannot be asked to revoke them (docs/aws.md, "How access is bounded").
 */
export function boundedSessionPolicy(rulePolicy: string | undefined, denyAfter: string): string {
  const rule = rulePolicy ? (JSON.parse(rulePolicy) as { Version?: string; Statement: unknown }) : undefined;
  const statements = rule
    ? Array.isArray(rule.Statement)
      ? rule.Statement
      : [rule.Statement]
    : [{ Sid: 'CiportRolePolicies', Effect: 'Allow', Action: '*', Resource: '*' }];
  return JSON.stringify({
    Version: rule?.Version ?? '2012-10-17',
    Statement: [
      ...statements,
      {
        Sid: 'CiportSessionExpired',
        Effect: 'Deny',
        Action: '*',
        Resource: '*',
        Condition: { DateGreaterThan: { 'aws:CurrentTime': denyAfter } },
      },
    ],
  });
}

/** A session whose granting rule is gone (a reload removed it) may do nothing with the role. */
export const DENY_ALL_SESSION_POLICY = JSON.stringify({
  Version: '2012-10-17',
  Statement: [{ Sid: 'CiportRuleGone', Effect: 'Deny', Action: '*', Resource: '*' }],
});

export const sessionPolicySchema = z
  .union([z.string(), z.record(z.string(), z.unknown())])
  .transform((input, ctx) => {
    const parsed = parse(input);
    if ('error' in parsed) {
      ctx.addIssue({ code: 'custom', message: parsed.error });
      return z.NEVER;
    }
    return parsed.text;
  })
  .meta({
    description:
      "aws targets this rule allows: an IAM policy document (object or JSON text, at most 2048 bytes packed) intersected with the role's policies for the sessions the rule grants (docs/aws.md).",
  });
