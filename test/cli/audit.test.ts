import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { auditEvent } from '../../src/audit/index.js';
import { openStore } from '../../src/store/index.js';
import { runCli } from '../helpers/cli.js';
import { openRawSqlite } from '../helpers/sqlite.js';

let dir: string;
let config: string;

async function seed(n: number): Promise<void> {
  const store = await openStore(undefined, { dataDir: dir });
  for (let i = 0; i < n; i++) {
    await store.appendAudit(
      auditEvent('config.loaded', {
        source: `gw-${i}.yaml`,
        config_hash: 'a'.repeat(64),
        issuers: ['gl'],
        targets: ['db'],
        rules: ['r'],
      }),
    );
  }
  await store.close();
}

/** Open the SQLite file the way an attacker with file access would: triggers dropped. */
function tamper(sql: string): void {
  const db = openRawSqlite(join(dir, 'ciport.db'));
  db.exec('drop trigger if exists audit_events_no_update; drop trigger if exists audit_events_no_delete;');
  db.exec(sql);
  db.close();
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ciport-audit-cli-'));
  config = join(dir, 'gw.yaml');
  writeFileSync(config, `data_dir: ${dir}\n`);
});

describe('ciport audit verify', () => {
  it('reports an intact chain with its head, exit 0', async () => {
    await seed(5);
    const r = await runCli(['audit', 'verify', '--config', config]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ok: 5 events verified; head 5:[0-9a-f]{64}\n$/);
  });

  it('finds an edited row: exit 1 and its seq', async () => {
    await seed(5);
    tamper(`update audit_events set data = replace(data, 'gw-2.yaml', 'gw-X.yaml') where seq = 3`);
    const r = await runCli(['audit', 'verify', '--config', config, '--json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, seq: 3, count: 2 });
  });

  it('finds a deleted row', async () => {
    await seed(5);
    tamper('delete from audit_events where seq = 2');
    const r = await runCli(['audit', 'verify', '--config', config]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^BROKEN at seq [23]: /);
  });

  it('finds truncation of the newest events against an anchor', async () => {
    await seed(4);
    const first = await runCli(['audit', 'verify', '--config', config]);
    const head = /head (\d+:[0-9a-f]{64})/.exec(first.stdout)?.[1] as string;
    tamper('delete from audit_events where seq = 4');
    const plain = await runCli(['audit', 'verify', '--config', config]);
    expect(plain.code).toBe(0);
    const anchored = await runCli(['audit', 'verify', '--config', config, '--anchor', head]);
    expect(anchored.code).toBe(1);
  });
});

describe('ciport audit export', () => {
  it('writes JSON lines with seq, time, type, hash and prev_hash', async () => {
    await seed(3);
    const r = await runCli(['audit', 'export', '--config', config, '--format', 'jsonl']);
    expect(r.code).toBe(0);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.seq)).toEqual([1, 2, 3]);
    for (const l of lines) {
      expect(l.type).toBe('config.loaded');
      expect(l.hash).toMatch(/^[0-9a-f]{64}$/);
      expect(Number.isNaN(Date.parse(l.time))).toBe(false);
    }
    expect(lines[1].prev_hash).toBe(lines[0].hash);
  });

  it('writes CSV with a header and filters by time', async () => {
    await seed(2);
    const r = await runCli(['audit', 'export', '--config', config, '--format', 'csv']);
    const rows = r.stdout.trim().split('\n');
    expect(rows[0]?.startsWith('seq,time,type,')).toBe(true);
    expect(rows).toHaveLength(3);
    const future = await runCli(['audit', 'export', '--config', config, '--since', '2999-01-01T00:00:00Z']);
    expect(future).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('rejects a bad format or time as usage errors', async () => {
    expect((await runCli(['audit', 'export', '--config', config, '--format', 'xml'])).code).toBe(2);
    expect((await runCli(['audit', 'export', '--config', config, '--since', 'yesterday'])).code).toBe(2);
  });
});
