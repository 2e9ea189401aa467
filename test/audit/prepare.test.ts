// The writer's one-pass event preparation must write exactly what the general path (cap,
// redact, canonicalise) writes, and chainHash exactly what eventHash computes: otherwise stored
// events would not verify, or would differ from what docs/audit.md promises.

import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../src/audit/canonical.js';
import {
  chainHash,
  eventHash,
  GENESIS_HASH,
  prepareAuditEvent,
  prepareSlowly,
} from '../../src/audit/chain.js';
import type { AuditEventInput } from '../../src/audit/events.js';

const JWT =
  'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2dpdGxhYi5jb20iLCJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz';

const nullProto = Object.assign(Object.create(null) as Record<string, unknown>, { z: 1, a: 'b' });

const samples: Array<Record<string, unknown>> = [
  { statement: 'SELECT abalance FROM pgbench_accounts WHERE aid = 1;', truncated: false, database: 'app' },
  {
    statement: `select '${JWT}'`,
    url: 'postgres://app:hunter2@db:5432/app',
    sql: "ALTER ROLE x PASSWORD 'p''w'",
  },
  { nested: { deeper: [1, -0, 2.5, 1e21, null, true, { ü: 'ä', '\u2028': 'x', '10': 1, '9': 2 }] } },
  { long: 'x'.repeat(20_000), longJwt: `${'y'.repeat(16_380)} ${JWT}` },
  { skipped: undefined, kept: 'v', principal: { issuer: 'gl', ref: 'main', environment: null } },
  { proto: nullProto },
  { empty: {}, none: [] },
  { identified: "GRANT x IDENTIFIED BY 'secret'" },
  // These take the general path (a member to remove), and must still match it.
  { password: 'hunter2', nested: { api_key: 'k', apiKey: 'k2', ok: 1 } },
  { secretish: undefined },
  { redacted: ['earlier'], Authorization: 'Bearer x' },
];

describe('prepareAuditEvent', () => {
  it.each(samples.map((data, i) => [i, data] as const))(
    'sample %i: same text as the general path',
    (_i, data) => {
      const input = { type: 'query', data } as unknown as AuditEventInput;
      const fast = prepareAuditEvent(input);
      const slow = prepareSlowly('query', undefined, structuredClone(data) as never);
      expect(fast.dataText).toBe(slow.dataText);
      expect(fast.data).toEqual(JSON.parse(slow.dataText));
      expect(canonicalJson(fast.data)).toBe(fast.dataText);
    },
  );

  it('never lets a secret through, on either path', () => {
    const e = prepareAuditEvent({
      type: 'query',
      data: { statement: `select '${JWT}'`, token: 'abc', note: 'postgres://u:pw@h/db' },
    } as unknown as AuditEventInput);
    expect(e.dataText).not.toContain(JWT);
    expect(e.dataText).not.toContain('abc');
    expect(e.dataText).not.toContain(':pw@');
    expect(e.data.redacted).toEqual(['token']);
  });

  it('refuses what JSON cannot represent, with the general path’s message', () => {
    for (const bad of [{ n: Number.NaN }, { d: new Date(0) }, { a: [1, undefined] }, { b: 1n }]) {
      expect(() => prepareAuditEvent({ type: 'query', data: bad } as unknown as AuditEventInput)).toThrow(
        /invalid audit event query/,
      );
    }
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(() => prepareAuditEvent({ type: 'query', data: cyclic } as unknown as AuditEventInput)).toThrow();
  });
});

describe('chainHash', () => {
  it('equals eventHash over the canonical data text', () => {
    let prev = GENESIS_HASH;
    for (const [i, data] of samples.entries()) {
      const p = prepareAuditEvent({ type: 'connection.opened', data } as unknown as AuditEventInput);
      const seq = i + 1;
      const time = 1_736_942_400_000 + i * 7;
      const h = chainHash(prev, seq, time, p.type, p.dataText);
      expect(h).toBe(eventHash(prev, { seq, time, type: p.type, data: JSON.parse(p.dataText) }));
      prev = h;
    }
  });
});
