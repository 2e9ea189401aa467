// HOSTILE (r14): a CI job (or a fork) chooses claims that end up in access reviews and in what
// the audit sinks send a SIEM: the ref (a branch name: git allows `"`, `]`, `;`, `=`, `{`, `<`,
// non-ASCII line separators and bidi marks in it), the project path, the environment. What held:
// the syslog frame (octet count, structured data) and the file sink's one-line-per-event, the
// HTML page. What broke: the review CSV, read by a spreadsheet that splits on `;` (the list
// separator of most European locales), starts a new cell with the job's `=` after its `;`.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseJsonlLine, verifyRows } from '../../src/audit/index.js';
import { type ReviewReport, reviewCsv, reviewHtml } from '../../src/review/index.js';
import { onCleanup, sinkGateway } from '../audit-sinks/harness.js';
import { SyslogReceiver } from '../audit-sinks/receivers.js';
import { waitFor } from '../fixtures/wait-for.js';
import { ADMIN_TOKEN, api, type Harness, openSession, tempDir } from '../gateway/helpers.js';

/** A branch name git accepts (no space, `~^:?*[\`, control characters), as hostile as it gets. */
const REF = 'x"]\u2028{"seq":1}\u0085\u202e<img src=x onerror=alert(1)>;=cmd|\'/Ccalc\'!A0';
const PROJECT = 'acme/ledger';

async function gatewayWithSinks(): Promise<{ h: Harness; receiver: SyslogReceiver; file: string }> {
  const receiver = new SyslogReceiver();
  await receiver.start();
  onCleanup(() => receiver.stop());
  const tmp = tempDir('ciport-hostile-claims-');
  onCleanup(tmp.cleanup);
  const file = join(tmp.dir, 'siem.jsonl');
  const h = await sinkGateway([
    { name: 'collector', kind: 'syslog', address: `127.0.0.1:${receiver.port}`, timeout: '2s', batch: 4 },
    { name: 'local', kind: 'file', path: file, batch: 3 },
  ]);
  const c = await h.client();
  const s = await openSession(c, await h.token({ ref: REF, project_path: PROJECT }), { targets: ['echo'] });
  await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
  return { h, receiver, file };
}

async function report(h: Harness): Promise<ReviewReport> {
  const c = await h.client();
  const res = await api(c, 'GET', '/v1/review?since=1d&until=now', { bearer: ADMIN_TOKEN });
  expect(res.status).toBe(200);
  return res.body as unknown as ReviewReport;
}

describe('hostile: job claims downstream of the audit log', () => {
  it('syslog and file sinks: one frame / one line per event, the ref only inside the JSON', async () => {
    const { h, receiver, file } = await gatewayWithSinks();
    const n = (await h.gateway.store.auditHead())?.seq ?? 0;
    await waitFor(() => receiver.frames.length >= n, 10_000, 'syslog frames');
    const lines = () => readFileSync(file, 'utf8').split('\n').filter(Boolean);
    await waitFor(() => lines().length >= n, 10_000, 'file lines');
    // Syslog: exactly n frames parsed by octet count, structured data only seq/hash/prev_hash.
    expect(receiver.seqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    for (const f of receiver.frames) expect(Object.keys(f.sd)).toEqual(['seq', 'hash', 'prev_hash']);
    expect(await verifyRows(receiver.frames.map((f) => f.row))).toMatchObject({ ok: true, count: n });
    const opened = receiver.frames.find((f) => f.msgid === 'session.opened');
    expect(opened?.row.data).toMatchObject({ principal: { ref: REF } });
    // File: n lines split on "\n", each one whole event; the chain verifies.
    const rows = lines().map(parseJsonlLine);
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(await verifyRows(rows)).toMatchObject({ ok: true, count: n });
  });

  it('the HTML review shows the ref as text: no markup, no raw bidi or line separators', async () => {
    const { h } = await gatewayWithSinks();
    const html = reviewHtml(await report(h));
    expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(html).not.toContain('<img');
    expect(html).not.toMatch(/[\u2028\u0085\u202e]/);
  });

  // Was a hole (r14 attacker review, fixed: defuseFormula now also defuses after every `;`):
  // csvField defused a formula only at the start of a cell and relies on RFC 4180 quoting
  // for the rest. Excel or LibreOffice with `;` as the list separator (de, fr, es, it, nl…
  // locales, where a double-clicked .csv opens that way) does not see the comma cells at all: it
  // splits the line on `;`, and a `"` in the middle of such a field quotes nothing. So the job's
  // `;=cmd|'/Ccalc'!A0` starts a cell of its own, a DDE / formula injection from a fork's branch
  // name (quoted or not: this ref has a `"`, its CSV cell is quoted). The same csvField serves
  // `ciport audit export --format csv`. Defusing a formula character after every `;` too (or
  // escaping `;`) would close it.
  it('no CSV cell, split on ";" as a semicolon-locale spreadsheet does, starts a formula', async () => {
    const { h } = await gatewayWithSinks();
    const csv = reviewCsv(await report(h));
    const access = csv.split('\r\n').find((l) => l.startsWith('access,'));
    expect(access).toBeDefined();
    // A semicolon-separated reader: quoted fields are kept whole, unquoted ones split on ";".
    const cells = (access as string).match(/"(?:[^"]|"")*"|[^;]+/g) ?? [];
    expect(cells.filter((cell) => /^[=+\-@]/.test(cell))).toEqual([]);
  });
});
