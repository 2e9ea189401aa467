// RoleSessionName and session tags from claims: always what STS accepts, whatever the claims hold.
import { describe, expect, it } from 'vitest';
import type { PrincipalSummary } from '../../../src/audit/events.js';
import { roleSessionName, sessionTags } from '../../../src/exits/aws/names.js';

const principal = (extra: Partial<PrincipalSummary> = {}): PrincipalSummary => ({
  issuer: 'gitlab',
  subject: 's',
  project: 'acme/ledger',
  project_id: '61577203',
  ref: 'main',
  pipeline: '1519139981',
  job: '8222997048',
  job_url: null,
  ...extra,
});

const NAME = /^[\w+=,.@-]{2,64}$/;
const TAG = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$/u;

describe('role session names', () => {
  it('name the project and the job', () => {
    expect(roleSessionName(principal(), 'ses_abc')).toBe('ciport-acme-ledger-8222997048');
  });

  it('stay within STS rules for hostile or long claims', () => {
    const names = [
      roleSessionName(principal({ project: 'a'.repeat(300), job: '1'.repeat(100) }), 'ses_x'),
      roleSessionName(principal({ project: 'ünï/cødé <script>', job: 'x y\nz' }), 'ses_x'),
      roleSessionName(principal({ project: null, project_id: null, job: null }), 'ses_Ab12-_Cd'),
      roleSessionName(principal({ project: '///', job: '' }), 'ses_'),
    ];
    for (const n of names) expect(n).toMatch(NAME);
    expect(names[0]).toMatch(/^ciport-a+-1{32}$/);
    expect(names[2]).toBe('ciport-Ab12-_Cd');
  });
});

describe('session tags', () => {
  it('carry the facts, escaped to the tag charset, left out beyond 256 characters', () => {
    const tags = sessionTags(
      principal({ ref: 'feature/<x>&"y"', actor: 'a'.repeat(400), environment: 'prod/eu' }),
      'ses_1',
    );
    expect(tags).toMatchObject({
      'ciport:project': 'acme/ledger',
      'ciport:ref': 'feature/=3Cx=3E=26=22y=22',
      'ciport:environment': 'prod/eu',
      'ciport:session': 'ses_1',
      'ciport:issuer': 'gitlab',
    });
    expect(tags['ciport:actor']).toBeUndefined();
    expect(sessionTags(principal({ actor: 'a'.repeat(256) }), 's')['ciport:actor']).toHaveLength(256);
    for (const [k, v] of Object.entries(tags)) {
      expect(k).toMatch(TAG);
      expect(v).toMatch(TAG);
    }
    expect(sessionTags(principal({ job: null }), 's')['ciport:job']).toBeUndefined();
  });
});
