import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  type ChainRow,
  eventHash,
  GENESIS_HASH,
  MAX_STRING_LENGTH,
  prepareAuditEvent,
  REDACTED_JWT,
  scrubText,
  verifyRows,
} from '../../src/audit/index.js';
import { configLoaded } from '../store/fixtures.js';

const JWT =
  'eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2dpdGxhYi5jb20iLCJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz';

describe('event hash', () => {
  it('is SHA-256 of prev_hash followed by the canonical JSON of {seq, time, type, data}', () => {
    // Written out by hand, as an external verifier would: this pins down docs/audit.md.
    const text = `${'0'.repeat(64)}{"data":{"b":[1,"x"],"a":"ü"},"seq":1,"time":1736942400000,"type":"config.loaded"}`;
    const sorted = text.replace('{"b":[1,"x"],"a":"ü"}', '{"a":"ü","b":[1,"x"]}');
    const expected = createHash('sha256').update(Buffer.from(sorted, 'utf8')).digest('hex');
    expect(
      eventHash(GENESIS_HASH, {
        seq: 1,
        time: 1736942400000,
        type: 'config.loaded',
        data: { b: [1, 'x'], a: 'ü' },
      }),
    ).toBe(expected);
    expect(GENESIS_HASH).toBe('0'.repeat(64));
  });
});

describe('prepareAuditEvent: the secret guard', () => {
  it('strips every secret-named member at any depth and records where', () => {
    const input = {
      type: 'connection.opened',
      data: {
        session: 's1',
        password: 'p1',
        nested: { db_password: 'p2', apiKey: 'p3', list: [{ Authorization: 'Bearer p4' }, { ok: 1 }] },
        client_secret: 'p5',
        session_token: 'p6',
        pwd: 'p7',
        'X-Api-Key': 'p8',
        private_key: 'p9',
        Cookie: 'p10',
        credentials: { user: 'app', pass: 'p11' },
        target: 'staging-db',
      },
    } as never;
    const { data, dataText } = prepareAuditEvent(input);
    for (let i = 1; i <= 11; i++) expect(dataText).not.toMatch(new RegExp(`\\bp${i}\\b`));
    expect(data).toEqual({
      session: 's1',
      nested: { list: [{}, { ok: 1 }] },
      target: 'staging-db',
      redacted: [
        'password',
        'nested.db_password',
        'nested.apiKey',
        'nested.list[0].Authorization',
        'client_secret',
        'session_token',
        'pwd',
        'X-Api-Key',
        'private_key',
        'Cookie',
        'credentials',
      ],
    });
  });

  it('scrubs token-shaped values, URL passwords and SQL password literals in free text', () => {
    const { data } = prepareAuditEvent({
      type: 'query',
      data: {
        session: 's',
        connection: 'c',
        principal: {
          issuer: 'i',
          subject: 's',
          project: null,
          ref: null,
          pipeline: null,
          job: null,
          job_url: null,
        },
        target: 'db',
        rule: 'r',
        exit: 'gateway',
        statement: `ALTER ROLE app PASSWORD 'hunter2'; -- ${JWT}`,
        error: 'cannot reach postgres://app:s3cr3t@db.internal:5432/app',
      },
    } as never);
    expect(data.statement).toBe(`ALTER ROLE app PASSWORD '***'; -- ${REDACTED_JWT}`);
    expect(data.error).toBe('cannot reach postgres://app:***@db.internal:5432/app');
    expect(JSON.stringify(data)).not.toMatch(/hunter2|s3cr3t|eyJ/);
  });

  it('scrubs in linear time, whatever the text', () => {
    const started = performance.now();
    for (const unit of ['x', 'eyJ', 'a.', 'a:', 'password ', 'a://', 'eyJxxxx.']) {
      scrubText(unit.repeat(Math.ceil(1_000_000 / unit.length)));
    }
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('leaves ordinary names and values alone', () => {
    const event = configLoaded(1);
    const { data } = prepareAuditEvent(event);
    expect(data).toEqual(event.data);
    expect(data.redacted).toBeUndefined();
  });

  it('refuses reserved keys and values JSON cannot carry', () => {
    for (const key of ['seq', 'time', 'type', 'hash', 'prev_hash']) {
      expect(() => prepareAuditEvent({ type: 'query', data: { [key]: 1 } } as never)).toThrow(/reserved/);
    }
    expect(() => prepareAuditEvent({ type: 'query', data: { at: new Date() } } as never)).toThrow(
      /plain object/,
    );
    expect(() => prepareAuditEvent({ type: 'query', data: [] } as never)).toThrow(/object/);
    expect(() => prepareAuditEvent({ ...configLoaded(1), time: 1.5 })).toThrow(/epoch/);
  });

  it('cuts over-long strings', () => {
    const { data } = prepareAuditEvent({
      type: 'query',
      data: { statement: 'x'.repeat(MAX_STRING_LENGTH + 10) },
    } as never);
    expect(data.statement).toMatch(/…\[truncated 10 chars\]$/);
  });
});

describe('verifyRows', () => {
  function chain(n: number): ChainRow[] {
    const rows: ChainRow[] = [];
    let prev = GENESIS_HASH;
    for (let seq = 1; seq <= n; seq++) {
      const e = { seq, time: 1_000 * seq, type: 'config.loaded', data: { n: seq } };
      const hash = eventHash(prev, e);
      rows.push({ ...e, data: JSON.stringify(e.data), hash, prevHash: prev });
      prev = hash;
    }
    return rows;
  }

  it('accepts an intact chain and an empty one', async () => {
    const rows = chain(5);
    expect(await verifyRows(rows)).toEqual({ ok: true, count: 5, head: { seq: 5, hash: rows[4]?.hash } });
    expect(await verifyRows([])).toEqual({ ok: true, count: 0, head: null });
  });

  it('reports the first bad event', async () => {
    const edited = chain(5);
    edited[2] = { ...edited[2]!, data: '{"n":99}' };
    expect(await verifyRows(edited)).toMatchObject({ ok: false, seq: 3, count: 2, reason: /hash mismatch/ });

    const deleted = chain(5).filter((r) => r.seq !== 2);
    expect(await verifyRows(deleted)).toMatchObject({ ok: false, seq: 2, reason: /missing/ });

    const notGenesis = chain(3).slice(1);
    expect(await verifyRows(notGenesis)).toMatchObject({ ok: false, seq: 1, reason: /missing/ });

    const badJson = chain(3);
    badJson[1] = { ...badJson[1]!, data: '{not json' };
    expect(await verifyRows(badJson)).toMatchObject({ ok: false, seq: 2, reason: /not valid JSON/ });

    const relinked = chain(4);
    relinked[2] = { ...relinked[2]!, prevHash: GENESIS_HASH };
    relinked[2].hash = eventHash(GENESIS_HASH, { ...relinked[2], data: { n: 3 } });
    expect(await verifyRows(relinked)).toMatchObject({ ok: false, seq: 3, reason: /prev_hash/ });
  });

  it('verifies an excerpt from its first event with from: first', async () => {
    const excerpt = chain(6).slice(2);
    expect(await verifyRows(excerpt)).toMatchObject({ ok: false, seq: 1 });
    expect(await verifyRows(excerpt, { from: 'first' })).toMatchObject({ ok: true, count: 4 });
  });

  it('catches truncation only against an anchor', async () => {
    const rows = chain(6);
    const anchor = { seq: 6, hash: rows[5]!.hash };
    expect(await verifyRows(rows.slice(0, 4))).toMatchObject({ ok: true, count: 4 });
    expect(await verifyRows(rows.slice(0, 4), { anchor })).toMatchObject({
      ok: false,
      seq: 5,
      reason: /removed from the end/,
    });
    expect(await verifyRows(rows, { anchor })).toMatchObject({ ok: true, count: 6 });
    expect(await verifyRows(rows, { anchor: { seq: 3, hash: GENESIS_HASH } })).toMatchObject({
      ok: false,
      seq: 3,
    });
  });
});
