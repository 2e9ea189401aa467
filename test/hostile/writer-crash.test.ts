// Hostile review (issue 11): the SQLite writer thread dies (docs/audit.md: "cannot happen in
// normal operation"; here crashWriterThreadForTests). The gateway must not die with it, must
// refuse what it cannot record with a stable code, and must not keep reporting itself ready
// while it can no longer write anything: a load balancer would keep sending jobs to a gateway
// that refuses every session until someone restarts it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crashWriterThreadForTests } from '../../src/store/sqlite-writer.js';
import { api, type Harness, openSession, startHarness } from '../gateway/helpers.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.stop();
});

describe('writer thread crash in a running gateway (hostile review)', () => {
  it('stays up, refuses with CIPORT_E_STORE_UNAVAILABLE, and stops saying it is ready (or recovers)', async () => {
    const c = await h.client();
    await openSession(c, await h.token(), { targets: ['echo'] });
    await crashWriterThreadForTests();
    const r = await api(c, 'POST', '/v1/sessions', { bearer: await h.token(), body: { targets: ['echo'] } });
    const ready = await api(c, 'GET', '/readyz');
    const again = await api(c, 'POST', '/v1/sessions', {
      bearer: await h.token(),
      body: { targets: ['echo'] },
    });
    // The process is still serving HTTP.
    expect([r.status, ready.status, again.status].every((s) => s > 0)).toBe(true);
    if (r.status !== 201) expect(r.body.error.code).toBe('CIPORT_E_STORE_UNAVAILABLE');
    // Either it recovered (a new writer) or it says it is not ready.
    expect(
      again.status === 201 || ready.status === 503,
      `after the crash: open ${r.status} ${JSON.stringify(r.body?.error?.code)}, readyz ${ready.status}, open again ${again.status}`,
    ).toBe(true);
  }, 30_000);
});
