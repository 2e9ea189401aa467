// `ciport review` against a real gateway: a scripted set of sessions (several projects and refs,
// echo connections through real tunnels, denials of two reasons, a config reload), the report's
// numbers checked against the script and against the audit log counted here independently;
// online (admin API) and offline (the store) give the same JSON; attestation online, and refused
// once a row of the log was edited.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/index.js';
import { reviewHash } from '../../src/review/index.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  ADMIN_TOKEN,
  api,
  type Harness,
  type Json,
  openSession,
  roundTrip,
  startHarness,
  testConfig,
  tunnel,
} from '../gateway/helpers.js';
import { runCli } from '../helpers/cli.js';
import { openRawSqlite } from '../helpers/sqlite.js';

const HOSTILE_REF = '<script>alert(1)</script>\u001b]0;pwned\u0007';
const FORMULA_REF = '=HYPERLINK("http://evil.example","x")';

const RULES = [
  { name: 'no-forks', deny: true, issuer: 'gitlab', when: { fork: true } },
  {
    name: 'ledger-main',
    issuer: 'gitlab',
    when: { project_id: ['61577203', '61577204'], ref_protected: true },
    allow: ['echo', 'pg'],
    max_ttl: '30m',
  },
];

let h: Harness;
let env: NodeJS.ProcessEnv;
let configFile: string;
let since: string;
let until: string;
/** What the script sent through each principal's echo tunnels (bytes each way). */
const sent = new Map<string, number>();

async function allEvents(): Promise<AuditEvent[]> {
  const out: AuditEvent[] = [];
  for (let after = 0; ; ) {
    const page = await h.gateway.store.auditEvents({ afterSeq: after, limit: 1000 });
    if (page.length === 0) return out;
    out.push(...page);
    after = (page.at(-1) as AuditEvent).seq;
  }
}

/** One session for `claims`, `conns` echo connections of `size` bytes each, then the end. */
async function work(claims: Record<string, unknown>, conns: number, size: number): Promise<void> {
  const c = await h.client();
  const s = await openSession(c, await h.token(claims), { targets: ['echo'] });
  for (let i = 0; i < conns; i++) {
    const payload = Buffer.alloc(size, 0x61 + i);
    const back = await roundTrip(await tunnel(c, s, 'echo'), payload);
    expect(back.length).toBe(size);
  }
  const key = `${claims.project_path ?? 'acme/ledger'}|${claims.ref ?? 'main'}`;
  sent.set(key, (sent.get(key) ?? 0) + conns * size);
  await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
}

async function deny(
  claims: Record<string, unknown>,
  preset: 'gitlab-main' | 'gitlab-fork-mr',
): Promise<void> {
  const c = await h.client();
  const res = await api(c, 'POST', '/v1/sessions', {
    bearer: await h.token(claims, preset),
    body: { targets: ['echo'] },
  });
  expect(res.status).toBe(403);
}

beforeAll(async () => {
  h = await startHarness({ rules: RULES, extra: { audit: { denials: { window: '1s' } } } });
  env = { CIPORT_ADMIN_TOKEN: ADMIN_TOKEN, CIPORT_CA_FILE: h.gateway.caFile, NO_COLOR: '1' };
  configFile = join(h.dataDir, 'offline.yaml');
  writeFileSync(configFile, `data_dir: ${h.dataDir}\n`);
  // The config.loaded of the start is before the period: the policy in force at `since`.
  const started = (await h.gateway.store.auditHead())?.time as number;
  await waitFor(() => Date.now() > started);
  since = new Date(started + 1).toISOString();
  await waitFor(() => Date.now() > started + 1);

  await work({}, 2, 1000);
  await work({}, 1, 500);
  await work(
    {
      project_id: '61577204',
      project_path: 'acme/billing',
      job_project_id: '61577204',
      job_project_path: 'acme/billing',
      ref: 'release',
      environment: 'production',
    },
    3,
    700,
  );
  await work({ ref: HOSTILE_REF }, 1, 10);
  await work({ ref: FORMULA_REF }, 1, 20);
  for (let i = 0; i < 3; i++) await deny({}, 'gitlab-fork-mr');
  for (let i = 0; i < 2; i++) await deny({ ref: `feature-${i}`, ref_protected: 'false' }, 'gitlab-main');
  // A reload with one more rule: a new policy version inside the period.
  const next = testConfig({
    dataDir: h.dataDir,
    issuerUrl: h.issuer.url,
    echoPort: h.echo.port,
    rules: [
      ...RULES,
      { name: 'billing-release', issuer: 'gitlab', when: { project_id: '61577204' }, allow: ['echo'] },
    ],
    extra: { audit: { denials: { window: '1s' } } },
  });
  await h.gateway.reload(next);

  // Every connection closed and the denial windows summarised before the period ends.
  await waitFor(async () => {
    const events = await allEvents();
    const closedCount = events.filter((e) => e.type === 'connection.closed').length;
    const summaries = events.filter((e) => e.type === 'session.denied_summary').length;
    return closedCount === 8 && summaries === 2;
  }, 10_000);
  const head = (await h.gateway.store.auditHead())?.time as number;
  until = new Date(head + 1).toISOString();
  await waitFor(() => Date.now() > head + 1);
}, 60_000);

afterAll(async () => {
  await h?.stop();
});

/** Control characters other than line ends (what a terminal or a cell would act on). */
function controls(text: string): number[] {
  return [...text].map((c) => c.charCodeAt(0)).filter((n) => (n < 32 && n !== 10 && n !== 13) || n === 127);
}

function inPeriod(events: AuditEvent[]): AuditEvent[] {
  return events.filter((e) => e.time >= Date.parse(since) && e.time < Date.parse(until));
}

async function report(
  mode: 'online' | 'offline',
  ...extra: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const where = mode === 'online' ? ['--gateway', h.gateway.url] : ['--config', configFile];
  return runCli(['review', ...where, '--since', since, '--until', until, ...extra], env);
}

describe('ciport review on a real gateway', () => {
  it('online and offline give the same JSON, whose hash is its review_hash', async () => {
    const online = await report('online');
    const offline = await report('offline');
    expect(online.stderr).toBe('');
    expect(online.code).toBe(0);
    expect(offline.code).toBe(0);
    expect(offline.stdout).toBe(online.stdout);
    const json = JSON.parse(online.stdout) as Json;
    expect(json.review_hash).toBe(reviewHash(json));
    expect(json.verification.ok).toBe(true);
  });

  it('counts sessions, connections and bytes per target and principal as the script made them', async () => {
    const json = JSON.parse((await report('offline')).stdout) as Json;
    const echo = json.targets.find((t: Json) => t.target === 'echo');
    const row = (project: string, ref: string) =>
      echo.principals.find((p: Json) => p.project === project && p.ref === ref);
    expect(row('acme/ledger', 'main')).toMatchObject({
      issuer: 'gitlab',
      environment: null,
      sessions: 2,
      connections: 3,
      bytes_to_target: 2500,
      bytes_from_target: 2500,
      rules: ['ledger-main'],
    });
    expect(row('acme/billing', 'release')).toMatchObject({
      environment: 'production',
      sessions: 1,
      connections: 3,
      bytes_to_target: 2100,
    });
    expect(row('acme/ledger', HOSTILE_REF)).toMatchObject({
      sessions: 1,
      connections: 1,
      bytes_to_target: 10,
    });
    expect(echo).toMatchObject({
      sessions: 5,
      connections: 8,
      bytes_to_target: 2500 + 2100 + 30,
      bytes_from_target: 4630,
    });
    for (const [key, bytes] of sent) {
      const [project, ref] = key.split('|') as [string, string];
      expect(row(project, ref).bytes_from_target).toBe(bytes);
    }
  });

  it('matches the audit log counted independently', async () => {
    const json = JSON.parse((await report('offline')).stdout) as Json;
    const events = inPeriod(await allEvents());
    const key = (d: Json) => `${d.target}|${d.principal.project}|${d.principal.ref}`;
    const expected = new Map<string, { sessions: number; connections: number; up: number; down: number }>();
    const at = (k: string) => {
      if (!expected.has(k)) expected.set(k, { sessions: 0, connections: 0, up: 0, down: 0 });
      return expected.get(k) as { sessions: number; connections: number; up: number; down: number };
    };
    for (const e of events) {
      const d = e.data as Json;
      if (e.type === 'session.opened') for (const t of d.targets) at(key({ ...d, target: t })).sessions++;
      if (e.type === 'connection.opened') at(key(d)).connections++;
      if (e.type === 'connection.closed') {
        at(key(d)).up += d.bytes_to_target;
        at(key(d)).down += d.bytes_from_target;
      }
    }
    const got = new Map<string, unknown>();
    for (const t of json.targets)
      for (const p of t.principals)
        got.set(`${t.target}|${p.project}|${p.ref}`, {
          sessions: p.sessions,
          connections: p.connections,
          up: p.bytes_to_target,
          down: p.bytes_from_target,
        });
    expect(got).toEqual(expected);

    // Denials: session.denied rows plus the summaries' counts, per code and rule.
    const denials = new Map<string, number>();
    for (const e of events) {
      const d = e.data as Json;
      const k = `${d.error_code}|${d.rule}`;
      if (e.type === 'session.denied') denials.set(k, (denials.get(k) ?? 0) + 1);
      if (e.type === 'session.denied_summary') denials.set(k, (denials.get(k) ?? 0) + d.count);
    }
    expect(new Map(json.denials.map((d: Json) => [`${d.error_code}|${d.rule}`, d.count]))).toEqual(denials);
    expect(json.denials).toEqual([
      expect.objectContaining({
        reason: 'CIPORT_E_POLICY_DENIED (rule no-forks)',
        count: 3,
        projects: ['mallory/ledger'],
      }),
      expect.objectContaining({
        reason: 'CIPORT_E_POLICY_DENIED (rule ledger-main)',
        count: 2,
        projects: ['acme/ledger'],
      }),
    ]);
    expect(json.period.events).toBe(events.length);
  });

  it('names the policy in force at the start and the reload inside the period', async () => {
    const json = JSON.parse((await report('offline')).stdout) as Json;
    const loaded = (await allEvents()).filter((e) => e.type === 'config.loaded');
    expect(loaded).toHaveLength(2);
    expect(json.policy.in_force_at_since).toMatchObject({ config_hash: loaded[0]?.data.config_hash });
    expect(json.policy.changes).toEqual([
      expect.objectContaining({
        config_hash: loaded[1]?.data.config_hash,
        previous_hash: loaded[0]?.data.config_hash,
        rules: ['no-forks', 'ledger-main', 'billing-release'],
      }),
    ]);
    expect(json.approvals).toEqual([]);
  });

  it('renders hostile refs inert in CSV and HTML', async () => {
    const csv = (await report('online', '--format', 'csv')).stdout;
    expect(controls(csv)).toEqual([]);
    expect(csv).toContain(`"'=HYPERLINK(""http://evil.example"",""x"")"`);
    expect(csv).toContain('\\x1b]0;pwned\\x07');
    const html = (await report('offline', '--format', 'html')).stdout;
    expect(html).not.toMatch(/<script/i);
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;\\x1b]0;pwned\\x07');
    expect(controls(html)).toEqual([]);
  });

  it('attests online: one review.attested citing the report hash, by the admin token', async () => {
    const json = JSON.parse((await report('online')).stdout) as Json;
    const r = await runCli(
      [
        'review',
        'attest',
        '--gateway',
        h.gateway.url,
        '--since',
        since,
        '--until',
        until,
        '--comment',
        'Q4',
        '--json',
      ],
      env,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const event = JSON.parse(r.stdout) as Json;
    const attested = (await allEvents()).filter((e) => e.type === 'review.attested');
    expect(attested).toHaveLength(1);
    expect(attested[0]?.seq).toBe(event.seq);
    expect(attested[0]?.data).toEqual({
      reviewer: { issuer: 'admin-token', subject: 'admin' },
      since,
      until,
      review_hash: json.review_hash,
      comment: 'Q4',
    });
    // The sign-off is after the period: the report of the period is unchanged.
    expect(JSON.parse((await report('online')).stdout).review_hash).toBe(json.review_hash);
  });

  it('refuses without the admin token', async () => {
    const r = await runCli(['review', '--gateway', h.gateway.url, '--since', since, '--until', until], {
      ...env,
      CIPORT_ADMIN_TOKEN: 'wrong-token-0123456789',
    });
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('CIPORT_E_ADMIN_UNAUTHORIZED');
  });

  it('answers malformed API requests with 400 and a code', async () => {
    const c = await h.client();
    const bad = [
      await api(c, 'GET', '/v1/review', { bearer: ADMIN_TOKEN }),
      await api(c, 'GET', `/v1/review?since=${encodeURIComponent("1' or 1=1 --")}&until=now`, {
        bearer: ADMIN_TOKEN,
      }),
      await api(c, 'POST', '/v1/review/attest', {
        bearer: ADMIN_TOKEN,
        body: { since, until, reviewer: 'me' },
      }),
      await api(c, 'POST', '/v1/review/attest', { bearer: ADMIN_TOKEN, body: { since: 1, until } }),
      await api(c, 'POST', '/v1/review/attest', { bearer: ADMIN_TOKEN, body: [since, until] }),
      await api(c, 'POST', '/v1/review/attest', {
        bearer: ADMIN_TOKEN,
        body: { since, until, comment: 'x'.repeat(1001) },
      }),
    ];
    expect(bad.map((r) => [r.status, r.body.error.code])).toEqual(Array(6).fill([400, 'CIPORT_E_USAGE']));
    const anonymous = await api(c, 'POST', '/v1/review/attest', { body: { since, until } });
    expect(anonymous.status).toBe(401);
  });

  it('refuses to attest once a row was edited, and writes nothing', async () => {
    const db = openRawSqlite(join(h.dataDir, 'ciport.db'));
    db.exec('drop trigger if exists audit_events_no_update; drop trigger if exists audit_events_no_delete;');
    db.exec(
      `update audit_events set data = replace(data, '"bytes_to_target":1000', '"bytes_to_target":1') where type = 'connection.closed'`,
    );
    db.close();
    const before = (await allEvents()).filter((e) => e.type === 'review.attested').length;
    for (const where of [
      ['--gateway', h.gateway.url],
      ['--config', configFile],
    ]) {
      const r = await runCli(
        ['review', 'attest', ...where, '--since', since, '--until', until, '--json'],
        env,
      );
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout).error.code).toBe('CIPORT_E_AUDIT_CHAIN_BROKEN');
    }
    expect((await allEvents()).filter((e) => e.type === 'review.attested')).toHaveLength(before);
    const json = JSON.parse((await report('offline')).stdout) as Json;
    expect(json.verification).toMatchObject({ ok: false, reason: expect.stringContaining('hash mismatch') });
  });
});
