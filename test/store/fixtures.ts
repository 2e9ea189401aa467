import { createHash, randomBytes, randomUUID } from 'node:crypto';
import {
  type AuditEventInput,
  auditEvent,
  type PrincipalSummary,
  type SessionEndReason,
} from '../../src/audit/index.js';
import type { NewSession, SessionRecord } from '../../src/store/index.js';

export const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);
export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;

/** A settable clock for stores under test. */
export function testClock(start = T0) {
  let now = start;
  return {
    now: () => now,
    set: (t: number) => {
      now = t;
    },
    advance: (ms: number) => {
      now += ms;
    },
  };
}

export const principal: PrincipalSummary = {
  issuer: 'https://gitlab.example.com',
  subject: 'project_path:ledger/api:ref_type:branch:ref:main',
  project: 'ledger/api',
  project_id: '61577203',
  ref: 'main',
  pipeline: '1234',
  job: '5678',
  job_url: 'https://gitlab.example.com/ledger/api/-/jobs/5678',
};

export function newSession(overrides: Partial<NewSession> = {}): NewSession & { secret: string } {
  const secret = randomBytes(32).toString('base64url');
  const createdAt = overrides.createdAt ?? T0;
  return {
    id: randomUUID(),
    secret,
    secretHash: createHash('sha256').update(secret).digest('hex'),
    issuer: principal.issuer,
    subject: principal.subject,
    principal: { ...principal, environment: 'staging/eu' },
    targets: ['staging-db'],
    rule: 'ledger-main-to-staging',
    createdAt,
    expiresAt: createdAt + 15 * MINUTE,
    leaseExpiresAt: createdAt + 30_000,
    gatewayId: 'gw-1',
    ...overrides,
  };
}

/** Strip the test-only `secret` so the record handed to the store is exactly a NewSession. */
export function record(s: NewSession & { secret?: string }): NewSession {
  const { secret: _secret, ...rest } = s;
  return rest;
}

export function opened(s: SessionRecord): AuditEventInput {
  return auditEvent('session.opened', {
    session: s.id,
    principal,
    targets: s.targets,
    rule: s.rule ?? 'none',
    expires_at: new Date(s.expiresAt).toISOString(),
    ttl_ms: s.expiresAt - s.createdAt,
  });
}

export function ended(s: SessionRecord, reason: SessionEndReason = 'client_end'): AuditEventInput {
  return auditEvent('session.ended', {
    session: s.id,
    principal,
    targets: s.targets,
    rule: s.rule,
    reason,
    duration_ms: (s.endedAt ?? s.createdAt) - s.createdAt,
  });
}

export function configLoaded(n: number): AuditEventInput {
  return auditEvent('config.loaded', {
    source: `/etc/ciport/gateway-${n}.yaml`,
    config_hash: createHash('sha256').update(String(n)).digest('hex'),
    issuers: ['gitlab'],
    targets: ['staging-db'],
    rules: ['no-forks', 'ledger-main-to-staging'],
  });
}
