// Attack: session tags feed IAM conditions (docs/aws.md: `aws:PrincipalTag/ciport:ref` = `main`,
// S3 prefixes from `ciport:project`). A job that can push any branch or name its own environment
// must not get the tag value of another one: a lossy mapping (unsafe characters → `_`, values cut
// to 256) let branch `prod#deploy` carry `ciport:ref` = `prod_deploy`, and two long project paths
// sharing their first 256 characters share an S3 prefix.
import { describe, expect, it } from 'vitest';
import type { PrincipalSummary } from '../../src/audit/events.js';
import { sessionTags } from '../../src/exits/aws/names.js';

const principal = (extra: Partial<PrincipalSummary>): PrincipalSummary => ({
  issuer: 'gitlab',
  subject: 's',
  project: 'acme/ledger',
  project_id: '1',
  ref: 'main',
  pipeline: '2',
  job: '3',
  job_url: null,
  ...extra,
});

const TAG = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,256}$/u;

describe('session tags cannot be forged by choosing a claim', () => {
  it('a branch with characters STS refuses does not pass for a protected branch', () => {
    const protectedRef = sessionTags(principal({ ref: 'prod_deploy' }), 's')['ciport:ref'];
    for (const forged of [
      'prod#deploy',
      'prod deploy\u0000',
      'prod"deploy',
      'prod=5Fdeploy',
      'prod\u0301deploy',
    ]) {
      const tag = sessionTags(principal({ ref: forged }), 's')['ciport:ref'];
      expect(tag).toMatch(TAG);
      expect(tag).not.toBe(protectedRef);
    }
    expect(protectedRef).toBe('prod_deploy');
  });

  it('an environment name with `{`/`$` does not pass for another', () => {
    const real = sessionTags(principal({ environment: 'prod_eu' }), 's')['ciport:environment'];
    const forged = sessionTags(principal({ environment: 'prod{eu' }), 's')['ciport:environment'];
    expect(forged).not.toBe(real);
  });

  it('two long project paths with the same first 256 characters do not share a tag', () => {
    const stem = `acme/${'g'.repeat(260)}`;
    const a = sessionTags(principal({ project: `${stem}/victim` }), 's')['ciport:project'];
    const b = sessionTags(principal({ project: `${stem}/attacker` }), 's')['ciport:project'];
    // Left out (every condition on it fails), never cut to a shared prefix.
    expect(a).toBeUndefined();
    expect(b).toBeUndefined();
  });
});
