// HOSTILE (r14): someone with write access to the store removes the newest audit events (the
// tail: the one edit a hash chain cannot reveal on its own, docs/audit.md "Verifying"). The
// gateway has an anchor for free: each audit sink's cursor in the same store says which seq the
// SIEM already acknowledged. It used not to read it that way, so:
// 1. the events appended after the truncation reused the removed seqs, at or below the sink's
//    cursor, and were never delivered: the SIEM silently stopped seeing them until the chain grew
//    past the old cursor (and never saw those seqs' new contents);
// 2. an access review over the truncated chain reported `verification.ok` and could be attested,
//    although the gateway's own cursor proved events were removed.
// Now the sink halts (error log, metric, CIPORT_E_AUDIT_LOG_TRUNCATED, `audit.sink_halted`) and
// delivers nothing until an operator resumes it; attestations are refused meanwhile.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../src/audit/canonical.js';
import { chainHash } from '../../src/audit/chain.js';
import { parseJsonlLine } from '../../src/audit/index.js';
import { createLogger } from '../../src/log/logger.js';
import { FAST, metric, onCleanup, openSessions, sinkGateway } from '../audit-sinks/harness.js';
import { waitFor } from '../fixtures/wait-for.js';
import { ADMIN_TOKEN, api, Capture, type Harness, type Json, tempDir } from '../gateway/helpers.js';
import { runCli } from '../helpers/cli.js';
import { openRawSqlite } from '../helpers/sqlite.js';

function lines(file: string) {
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(parseJsonlLine);
}

interface Truncated {
  h: Harness;
  /** What the SIEM received. */
  file: string;
  /** `ciport audit sinks` and `review attest` read the store through this config. */
  config: string;
  cursor: number;
  head: number;
}

/** A gateway with a file sink that acknowledged the events of `sessions` sessions: n of them. */
async function delivered(sessions: number): Promise<{ h: Harness; file: string; dir: string; n: number }> {
  const tmp = tempDir('ciport-hostile-trunc-');
  onCleanup(tmp.cleanup);
  const file = join(tmp.dir, 'siem.jsonl');
  const h = await sinkGateway([{ name: 'siem', kind: 'file', path: file, batch: 50 }]);
  await openSessions(h, sessions);
  const n = (await h.gateway.store.auditHead())?.seq ?? 0;
  await waitFor(async () => (await h.gateway.store.auditSinkCursors())[0]?.seq === n, 10_000, 'delivered');
  return { h, file, dir: tmp.dir, n };
}

/**
 * A file sink that acknowledged 6 sessions; then, gateway stopped, its last 4 acknowledged events
 * are removed. The gateway is not restarted: `restart` does that, with a log capture.
 */
async function truncated(): Promise<Truncated & { restart: () => Promise<Capture> }> {
  const { h, file, dir } = await delivered(6);
  await h.gateway.drain({ graceMs: 0 });
  await h.gateway.close();
  const db = openRawSqlite(join(h.dataDir, 'ciport.db'));
  db.exec('drop trigger if exists audit_events_no_update; drop trigger if exists audit_events_no_delete;');
  // The sink acknowledged up to `cursor`; remove its last 4 (acknowledged) events and all after.
  const cursor = (
    db.prepare("select seq from audit_sink_cursors where sink = 'siem'").get() as { seq: number }
  ).seq;
  db.prepare('delete from audit_events where seq > ?').run(cursor - 4);
  db.close();
  const config = join(dir, 'gw.yaml');
  writeFileSync(config, `data_dir: ${h.dataDir}\n`);
  const restart = async () => {
    const logs = new Capture();
    await h.restart(undefined, { ...FAST, logger: createLogger({ level: 'info', destination: logs }) });
    return logs;
  };
  return { h, file, config, cursor, head: cursor - 4, restart };
}

/** `ciport audit sinks resume` of `sink`. */
const resumeSink = (config: string, sink: string, after: number | string, ...extra: string[]) =>
  runCli([
    'audit',
    'sinks',
    'resume',
    '--config',
    config,
    '--sink',
    sink,
    '--after',
    String(after),
    ...extra,
  ]);

const halted = async (h: Harness) => (await h.gateway.store.auditSinkCursors())[0]?.halted === true;

describe('hostile: tail truncation of the audit log under an audit sink', () => {
  it('the sink halts instead of skipping the reused seqs, says so everywhere, and after an operator resumes it every later event reaches the SIEM once', async () => {
    const { h, file, config, cursor, head, restart } = await truncated();
    const logs = await restart();
    await waitFor(() => halted(h), 10_000, 'the sink halted');

    // Alarm: an error log line with the code and where to resume, the metrics, an audit event.
    const error = logs.text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l))
      .find((l) => l.code === 'CIPORT_E_AUDIT_LOG_TRUNCATED');
    expect(error).toMatchObject({ level: 50, sink: 'siem', cursor, resume_after: head });
    expect(error.msg).toContain('audit sink halted');
    expect(await metric(h, 'ciport_audit_sink_halted')).toContain('ciport_audit_sink_halted{sink="siem"} 1');
    expect(await metric(h, 'ciport_audit_sink_failures_total')).toContain(
      'code="CIPORT_E_AUDIT_LOG_TRUNCATED"',
    );
    const events = await h.gateway.store.auditEvents({ afterSeq: head, limit: 100 });
    expect(events.find((e) => e.type === 'audit.sink_halted')?.data).toMatchObject({
      sink: 'siem',
      cursor,
      head: expect.any(Number),
      reason: expect.stringContaining(`below the cursor ${cursor}`),
      gateway: h.gateway.gatewayId,
    });

    // The log grows past the old cursor; a restart does not forget the halt (the seqs alone could
    // no longer tell), and the sink still delivers nothing.
    await openSessions(h, 6);
    expect((await h.gateway.store.auditHead())?.seq).toBeGreaterThan(cursor);
    await restart();
    const sinks = await runCli(['audit', 'sinks', '--config', config]);
    expect(sinks.code).toBe(1);
    expect(sinks.stdout).toMatch(/siem\s+\d+\s+\d+\s+HALTED \(CIPORT_E_AUDIT_LOG_TRUNCATED\)/);
    expect(await halted(h)).toBe(true);
    expect(lines(file)).toHaveLength(cursor);

    // The operator resumes after the seq the error line named.
    const resumed = await resumeSink(
      config,
      'siem',
      head,
      '--reason',
      'INC-7: tail truncation confirmed',
      '--json',
    );
    expect(resumed).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(resumed.stdout)).toMatchObject({
      type: 'audit.sink_resumed',
      sink: 'siem',
      cursor,
      after: head,
      by: expect.stringMatching(/^local:./),
      note: 'INC-7: tail truncation confirmed',
    });
    const after = await h.gateway.store.auditEvents({ afterSeq: head, limit: 1000 });
    await waitFor(
      () => lines(file).length >= cursor + after.length,
      20_000,
      'the events after the cut delivered',
    );
    // What the SIEM has after its old lines is exactly the log after the cut, once, in order.
    expect(
      lines(file)
        .slice(cursor)
        .map((r) => r.hash),
    ).toEqual(after.map((e) => e.hash));
    expect((await runCli(['audit', 'sinks', '--config', config])).code).toBe(0);
  });

  it('an access review refuses to attest a chain shorter than what a sink already acknowledged, offline and online, until the sink is resumed', async () => {
    const { h, config, cursor, head, restart } = await truncated();
    const period = ['--since', '1d', '--until', new Date(Date.now() - 1).toISOString()];
    // No gateway running: the cursor above the head is the anchor.
    const offline = await runCli(['review', 'attest', '--config', config, ...period]);
    expect(offline.code).toBe(1);
    expect(offline.stderr).toContain('CIPORT_E_AUDIT_CHAIN_BROKEN');
    expect(offline.stderr).toContain(
      `the audit log ends at seq ${head}, but audit sink "siem" acknowledged events up to seq ${cursor}`,
    );

    // A gateway halts the sink; the review still verifies, but the sign-off is refused online.
    await restart();
    await waitFor(() => halted(h), 10_000, 'the sink halted');
    const c = await h.client();
    const until = new Date(Date.now() - 1).toISOString();
    const review = await api(c, 'GET', `/v1/review?since=1d&until=${encodeURIComponent(until)}`, {
      bearer: ADMIN_TOKEN,
    });
    expect((review.body as Json).verification.ok).toBe(true);
    const refused = await api(c, 'POST', '/v1/review/attest', {
      bearer: ADMIN_TOKEN,
      body: { since: '1d', until },
    });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('CIPORT_E_AUDIT_CHAIN_BROKEN');
    expect(refused.body.error.message).toContain('audit sink "siem" is halted');
    expect(
      (await h.gateway.store.auditEvents({ afterSeq: head, limit: 100 })).some(
        (e) => e.type === 'review.attested',
      ),
    ).toBe(false);

    // Resumed by an operator: the incident is in the log (halt and resume), and sign-offs work again.

    expect((await resumeSink(config, 'siem', head)).code).toBe(0);
    const attested = await api(c, 'POST', '/v1/review/attest', {
      bearer: ADMIN_TOKEN,
      body: { since: '1d', until: new Date(Date.now() - 1).toISOString() },
    });
    expect(attested.status).toBe(201);
  });

  it('under a running gateway, a log cut and written again past the cursor in one transaction halts the sink too (the chain, not the seqs, tells)', async () => {
    const { h, file, n } = await delivered(4);
    // Cut 3 acknowledged events and chain 5 forged ones onto the rest, atomically: the loop never
    // sees a head below its cursor, and the seqs after the cursor follow on without a gap.
    const db = openRawSqlite(join(h.dataDir, 'ciport.db'));
    db.exec('drop trigger if exists audit_events_no_update; drop trigger if exists audit_events_no_delete;');
    const base = db.prepare('select seq, time, hash from audit_events where seq = ?').get(n - 3) as {
      seq: number;
      time: number;
      hash: string;
    };
    const insert = db.prepare(
      'insert into audit_events (seq, time, type, data, hash, prev_hash) values (?, ?, ?, ?, ?, ?)',
    );
    const data = canonicalJson({
      source: 'forged.yaml',
      config_hash: 'f'.repeat(64),
      issuers: [],
      targets: [],
      rules: [],
    });
    db.exec('begin immediate');
    db.prepare('delete from audit_events where seq > ?').run(base.seq);
    let prev = base.hash;
    for (let seq = base.seq + 1; seq <= n + 2; seq++) {
      const hash = chainHash(prev, seq, base.time, 'config.loaded', data);
      insert.run(seq, base.time, 'config.loaded', data, hash, prev);
      prev = hash;
    }
    db.exec('commit');
    db.close();
    await waitFor(() => halted(h), 10_000, 'the sink halted');
    const event = (await h.gateway.store.auditEvents({ afterSeq: n, limit: 100 })).find(
      (e) => e.type === 'audit.sink_halted',
    );
    expect(event?.data).toMatchObject({
      cursor: n,
      reason: `event ${n + 1} does not chain onto event ${n} as the sink received it: the log was cut and written again`,
    });
    // Nothing forged reached the SIEM.
    expect(lines(file).map((r) => r.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  });

  it('resume refuses a sink that is not halted and a seq above the head, and writes nothing', async () => {
    const { h, config, head, restart } = await truncated();
    await restart();
    await waitFor(() => halted(h), 10_000, 'the sink halted');
    const now = (await h.gateway.store.auditHead())?.seq ?? 0;
    for (const [sink, after, message] of [
      ['siem', String(now + 1), `--after: expected a seq from 0 to the log's head (${now})`],
      ['siem', '-1', '--after: expected a seq'],
      ['siem', '1e3', '--after: expected a seq'],
      ['nosuch', String(head), 'audit sink "nosuch" is not halted'],
    ]) {
      const r = await resumeSink(config, sink as string, after as string);
      expect(r.code, `${sink} ${after}`).toBe(2);
      expect(r.stderr).toContain(message);
    }
    expect(await halted(h)).toBe(true);
    expect((await h.gateway.store.auditHead())?.seq).toBe(now);
  });
});
