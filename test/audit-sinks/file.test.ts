// The file sink: JSON lines appended and fsync'd per batch; every event once, in chain order,
// verifiable like an export; a directory that is missing (or unwritable) makes it retry until
// it appears; a clean restart appends nothing twice; a log rotation (rename) needs no signal.
import { existsSync, mkdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type ChainRow, parseJsonlLine, verifyRows } from '../../src/audit/index.js';
import { waitFor } from '../fixtures/wait-for.js';
import { type Harness, tempDir } from '../gateway/helpers.js';
import { FAST, metric, onCleanup, openSessions, sinkGateway } from './harness.js';

function rows(...files: string[]): ChainRow[] {
  return files
    .filter((f) => existsSync(f))
    .flatMap((f) => readFileSync(f, 'utf8').split('\n').filter(Boolean).map(parseJsonlLine));
}

async function expectEveryEventOnce(h: Harness, ...files: string[]): Promise<void> {
  const n = (await h.gateway.store.auditHead())?.seq ?? 0;
  await waitFor(() => rows(...files).length >= n, 10_000, `${n} lines`);
  const got = rows(...files);
  expect(got.map((r) => r.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  expect(await verifyRows(got)).toMatchObject({ ok: true, count: n });
}

async function setup(path: (dir: string) => string) {
  const tmp = tempDir('ciport-sink-file-');
  onCleanup(tmp.cleanup);
  const file = path(tmp.dir);
  const h = await sinkGateway([{ name: 'local', kind: 'file', path: file, batch: 3 }]);
  return { h, file };
}

describe('file audit sink', () => {
  it('appends every event once, in chain order, one JSON line each, file mode 0600', async () => {
    const { h, file } = await setup((dir) => join(dir, 'audit.jsonl'));
    await openSessions(h, 7);
    await expectEveryEventOnce(h, file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('retries while the directory is missing (CIPORT_E_AUDIT_SINK_WRITE), then delivers everything once', async () => {
    const { h, file } = await setup((dir) => join(dir, 'later', 'audit.jsonl'));
    await openSessions(h, 2);
    await waitFor(async () =>
      (await metric(h, 'ciport_audit_sink_failures_total')).includes('CIPORT_E_AUDIT_SINK_WRITE'),
    );
    mkdirSync(join(file, '..'));
    await expectEveryEventOnce(h, file);
  });

  it('a clean restart and a rotation in between: the two files hold every event once', async () => {
    const { h, file } = await setup((dir) => join(dir, 'audit.jsonl'));
    await openSessions(h, 3);
    await expectEveryEventOnce(h, file);
    await h.gateway.drain({ graceMs: 0 });
    renameSync(file, `${file}.1`);
    await h.restart(undefined, FAST);
    await openSessions(h, 2);
    await expectEveryEventOnce(h, `${file}.1`, file);
  });
});
