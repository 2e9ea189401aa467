// HOSTILE (r14): a fork names its branch with 8-bit (C1) terminal controls and a bidi override.
// Git refuses ASCII controls in ref names but not U+0080–U+009F or U+202E, so a branch such as
// `x<U+009B>2J<U+009D>0;pwned<U+009C><U+202E>` is a valid ref, and its claims reach the audit log.
// `ciport review` prints its report as JSON to stdout by default (a terminal, usually).
// Was a hole (r14 attacker review, fixed): JSON.stringify leaves U+0080–U+009F and U+202E as they are, so the reviewer's terminal
// gets CSI (U+009B: here "clear screen") and OSC (U+009D … U+009C: here "set the window title")
// from the job, and text shown reversed. xterm and other terminals act on UTF-8 encoded C1
// controls. printable() (src/text/printable.ts) already knows these characters, and the CSV's
// JSON cells escape them; the CLI's JSON output (writeJson, the review's json format) now does
// too (escapeJsonControls): \uXXXX keeps the same JSON value.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, api, type Harness, openSession, startHarness } from '../gateway/helpers.js';
import { runCli } from '../helpers/cli.js';

const REF = 'x\u009b2J\u009d0;pwned\u009c\u202eevil';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
  const c = await h.client();
  const s = await openSession(c, await h.token({ ref: REF }), { targets: ['echo'] });
  await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
});
afterAll(async () => {
  await h?.stop();
});

describe('hostile: terminal controls from job claims in `ciport review` output', () => {
  it('the claims really are in the report (the ref round-trips through the JSON)', async () => {
    const env = { CIPORT_ADMIN_TOKEN: ADMIN_TOKEN, CIPORT_CA_FILE: h.gateway.caFile };
    const r = await runCli(['review', '--gateway', h.gateway.url, '--since', '1d', '--until', 'now'], env);
    expect(r.code).toBe(0);
    expect(JSON.stringify(JSON.parse(r.stdout))).toContain('pwned');
    expect(r.stdout).toContain('pwned');
  });

  it('the default (JSON) report written to stdout holds no raw C1 control or bidi override', async () => {
    const env = { CIPORT_ADMIN_TOKEN: ADMIN_TOKEN, CIPORT_CA_FILE: h.gateway.caFile };
    const r = await runCli(['review', '--gateway', h.gateway.url, '--since', '1d', '--until', 'now'], env);
    expect(r.code).toBe(0);
    const raw = [...r.stdout].filter((ch) => /[\u0080-\u009f\u202a-\u202e\u2066-\u2069]/.test(ch));
    expect(raw.map((ch) => `U+${ch.codePointAt(0)?.toString(16).padStart(4, '0')}`)).toEqual([]);
  });
});
