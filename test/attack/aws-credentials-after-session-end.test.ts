// Attack: a credentials request whose tunnel stream got past the gateway just before the session
// ended reaches the aws exit after forget(): it assumed the role again (new credentials, an
// `aws.credentials_issued` event, held for a session that is over). Likewise an agent told of an
// expiry already past. Neither may make an AssumeRole or serve held credentials.
import { describe, expect, it } from 'vitest';
import { RoleSessions } from '../../src/exits/aws/assume.js';
import type { ExitSessionFacts } from '../../src/exits/contract.js';

const target = {
  name: 'aws-prod',
  protocol: 'aws',
  role_arn: 'arn:aws:iam::123456789012:role/deploy',
  duration: 3_600_000,
} as never;

describe('role credentials after the session ended', () => {
  it('are neither assumed again after forget() nor for an expired session', async () => {
    let now = Date.parse('2026-06-01T10:00:00Z');
    let calls = 0;
    const sessions = new RoleSessions(
      target,
      async (input) => {
        calls += 1;
        return {
          AccessKeyId: `ASIA${calls}`,
          SecretAccessKey: 's',
          SessionToken: 't',
          Expiration: new Date(now + input.DurationSeconds * 1000),
        };
      },
      () => now,
    );
    const facts: ExitSessionFacts = {
      expiresAt: now + 30 * 60_000,
      principal: { issuer: 'gitlab', subject: 's', project: 'acme/app', job: '1' } as never,
    };
    await sessions.get('ses_a', facts);
    expect(calls).toBe(1);
    sessions.forget('ses_a');
    await expect(sessions.get('ses_a', facts)).rejects.toMatchObject({ code: 'CIPORT_E_SESSION_ENDED' });
    expect(calls).toBe(1);
    expect(sessions.size).toBe(0);

    // Held credentials of a session whose end this process did not hear of: not served past it.
    await sessions.get('ses_b', facts);
    now = facts.expiresAt + 1000;
    await expect(sessions.get('ses_b', facts)).rejects.toMatchObject({ code: 'CIPORT_E_SESSION_ENDED' });
    expect(calls).toBe(2);
  });
});
