// `protocol: aws` targets and a rule's `session_policy`, as the loader takes or refuses them.
import { describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import { boundedSessionPolicy } from '../../src/config/session-policy.js';
import type { CiportError } from '../../src/errors/index.js';

const load = (doc: object) => parseGatewayConfig(JSON.stringify(doc), 'gw.json', { resolveSecrets: false });

function refused(doc: object): string {
  try {
    load(doc);
  } catch (err) {
    expect((err as CiportError).code).toBe('CIPORT_E_CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
}

const ROLE = 'arn:aws:iam::123456789012:role/ci/deploy';
const aws = (extra: object = {}) => ({
  targets: [{ name: 'cloud', protocol: 'aws', role_arn: ROLE, ...extra }],
});
const rule = (session_policy: unknown) => ({
  issuers: [{ name: 'gl', kind: 'gitlab', issuer: 'https://gitlab.example.com', audience: 'ciport' }],
  rules: [{ name: 'r', issuer: 'gl', when: { project_id: '1' }, allow: ['cloud'], session_policy }],
  ...aws(),
});

describe('aws targets', () => {
  it('default to 1h credentials, cap the duration at 12h, refuse less than 15m', () => {
    expect(load(aws()).targets[0]).toMatchObject({ role_arn: ROLE, duration: 3_600_000 });
    expect(load(aws({ duration: '36h' })).targets[0]).toMatchObject({ duration: 12 * 3_600_000 });
    expect(refused(aws({ duration: '10m' }))).toMatch(/duration.*15m/);
  });

  it('refuse what is not an IAM role ARN, a malformed region or external id, and an address', () => {
    expect(refused(aws({ role_arn: 'arn:aws:iam::123456789012:user/alice' }))).toMatch(
      /role_arn.*IAM role ARN/,
    );
    expect(refused(aws({ role_arn: 'arn:aws:iam::12345:role/x' }))).toMatch(/role_arn/);
    expect(load(aws({ role_arn: 'arn:aws-cn:iam::123456789012:role/x' })).targets).toHaveLength(1);
    expect(refused(aws({ region: 'Europe' }))).toMatch(/region/);
    expect(refused(aws({ external_id: 'a b' }))).toMatch(/external_id/);
    expect(refused(aws({ address: 'sts.amazonaws.com:443' }))).toMatch(
      /unknown key "address" for an? aws target/,
    );
  });
});

describe('a rule session_policy', () => {
  const doc = {
    Version: '2012-10-17',
    Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: '*' }],
  };

  it('is kept as compact JSON, given as an object or as JSON text', () => {
    expect(load(rule(doc)).rules[0]?.session_policy).toBe(JSON.stringify(doc));
    expect(load(rule(JSON.stringify(doc, null, 2))).rules[0]?.session_policy).toBe(JSON.stringify(doc));
  });

  it('refuses text that is not JSON, a document without Version or Statement, and one too large', () => {
    expect(refused(rule('{"Version": '))).toMatch(/session_policy is not valid JSON/);
    expect(refused(rule({ Statement: doc.Statement }))).toMatch(/Version/);
    expect(refused(rule({ Version: '2012-10-17' }))).toMatch(/Statement/);
    expect(refused(rule([doc]))).toMatch(/session_policy/);
    const big = {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: 's3:*', Resource: 'x'.repeat(1900) }],
    };
    expect(refused(rule(big))).toMatch(/with ciport's expiry statement; STS takes at most 2048/);
  });

  it('is sent with the deny-after-expiry statement appended', () => {
    const sent = JSON.parse(boundedSessionPolicy(JSON.stringify(doc), '2026-06-01T10:00:00Z'));
    expect(sent.Statement).toHaveLength(2);
    expect(sent.Statement[1]).toEqual({
      Sid: 'CiportSessionExpired',
      Effect: 'Deny',
      Action: '*',
      Resource: '*',
      Condition: { DateGreaterThan: { 'aws:CurrentTime': '2026-06-01T10:00:00Z' } },
    });
  });
});
