// The writer's one-pass event preparation must write exactly what the general path (cap,
// redact, canonicalise) writes, and chainHash exactly what eventHash computes: otherwise stored
// events would not verify, or would differ from what docs/audit.md promises.

import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../src/audit/canonical.js';
import {
  AuditEventTemplate,
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

describe('AuditEventTemplate', () => {
  const base = {
    session: 's_1',
    connection: 'c_1',
    principal: {
      issuer: 'https://gitlab.example.com',
      subject: 'project_path:g/app:ref_type:branch:ref:main',
      project: 'g/app',
      project_id: '1',
      ref: 'main',
      pipeline: '7',
      job: '8',
      job_url: null,
      actor: 'alice',
      environment: null,
    },
    target: 'db',
    rule: 'ci',
    exit: 'gateway',
    database: 'app',
  };
  const statements = [
    'SELECT abalance FROM pgbench_accounts WHERE aid = 1;',
    `select '${JWT}'`,
    "ALTER ROLE x PASSWORD 'p''w'",
    "CREATE USER u IDENTIFIED BY 'secret'",
    "select 'postgres://app:hunter2@db:5432/app'",
    'x'.repeat(20_000),
    `${'y'.repeat(16_380)} ${JWT}`,
    '',
    'ü\u2028"\\\n\u0000',
  ];
  const variants: Array<[string, Record<string, unknown>]> = [
    ['connection base', base],
    ['via an agent', { ...base, exit: 'agent-1', agent_id: 'a_1' }],
    ['no database', { ...base, database: undefined }],
    // These cannot take the fast path: the template must still produce the general result.
    ['a secret-named member', { ...base, password: 'hunter2' }],
    ['a secret in a constant string', { ...base, rule: `r ${JWT}` }],
    ['a long constant string', { ...base, rule: 'r'.repeat(20_000) }],
  ];

  it.each(variants)('%s: same event as prepareAuditEvent over the merged data', (_name, constant) => {
    const template = new AuditEventTemplate('query', constant as never, ['statements']);
    const at = '2026-12-05T15:00:00.000Z';
    for (const statement of statements) {
      for (const variable of [
        { statements: [{ at, statement, protocol: 'simple' }] },
        {
          statements: [
            { at, statement, truncated: true, protocol: 'extended' },
            { at, statement: `${statement} -- again`, protocol: 'simple' },
          ],
        },
      ]) {
        const input = template.input(variable);
        const merged = { ...constant, ...variable };
        const expected = prepareAuditEvent({ type: 'query', data: merged } as unknown as AuditEventInput);
        const prepared = prepareAuditEvent(input);
        expect(prepared.type).toBe('query');
        expect(prepared.time).toBeUndefined();
        expect(prepared.dataText).toBe(expected.dataText);
        expect(prepared.data).toEqual(expected.data);
        // Any store sees an ordinary input: the raw data, never already-redacted text.
        expect(input.type).toBe('query');
        expect(input.data).toEqual(merged);
        expect(prepared.dataText).not.toContain(JWT);
        expect(prepared.dataText).not.toContain('hunter2');
        expect(prepared.dataText).not.toContain("'secret'");
      }
    }
  });

  it('refuses what an ordinary event refuses, with the same error', () => {
    const at = '2026-12-05T15:00:00.000Z';
    const reserved = new AuditEventTemplate('query', { ...base, seq: 1 } as never, ['statements']);
    expect(() => reserved.input({ statements: [{ at, statement: 'x' }] })).toThrow(/reserved key "seq"/);
    const template = new AuditEventTemplate('query', base as never, ['statements']);
    expect(() =>
      template.input({ statements: [{ at, statement: 'x', truncated: Number.NaN as never }] }),
    ).toThrow(/invalid audit event query/);
  });
});
