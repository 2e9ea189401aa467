// Session lifetime against a real gateway: lease, TTL, revoke, restart and drain, each cutting
// live tunnels and recording its end_reason.
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../fixtures/wait-for.js';
import {
  ADMIN_TOKEN,
  api,
  closed,
  type Harness,
  h2,
  openSession,
  roundTrip,
  sleep,
  startHarness,
  tunnel,
} from '../gateway/helpers.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

async function endedEvent(harness: Harness, id: string) {
  return (await harness.gateway.store.auditEvents({ limit: 10_000 })).find(
    (e) => e.type === 'session.ended' && e.data.session === id,
  );
}

describe('lease', () => {
  it('heartbeats keep a session alive past its lease timeout', async () => {
    h = await startHarness({ sessions: { lease_timeout: '1500ms' } });
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    expect(s.body.heartbeat_interval_ms).toBe(500);
    const stream = await tunnel(c, s, 'echo');
    const started = Date.now();
    // Heartbeat more often than the client would, leaving slack for a loaded machine.
    while (Date.now() - started < 4_000) {
      await sleep(300);
      const hb = await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret });
      expect(hb.status).toBe(200);
    }
    // Well past two lease timeouts: still alive and still tunnelling.
    expect((await h.gateway.store.getSession(s.id))?.state).toBe('active');
    expect((await roundTrip(stream, Buffer.from('alive'))).toString()).toBe('alive');
  });

  it('ends the session with lease_expired when heartbeats stop, and cuts its tunnels', async () => {
    h = await startHarness({ sessions: { lease_timeout: '600ms' } });
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const stream = await tunnel(c, s, 'echo');
    stream.write('x');
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    // The connections are cut first, then the end commits (src/session/manager.ts `end`).
    const record = await waitFor(async () => {
      const r = await h!.gateway.store.getSession(s.id);
      return r?.state === 'ended' ? r : undefined;
    });
    expect(record).toMatchObject({ state: 'ended', endReason: 'lease_expired' });
    expect((await endedEvent(h, s.id))?.data).toMatchObject({ reason: 'lease_expired' });
    const hb = await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret });
    expect(hb.status).toBe(410);
    expect(hb.body.error.end_reason).toBe('lease_expired');
    const closedEvent = await waitFor(async () =>
      (await h!.gateway.store.auditEvents({ limit: 10_000 })).find(
        (e) => e.type === 'connection.closed' && e.data.session === s.id,
      ),
    );
    // The session's end cut it: intended, so no error (docs/audit.md).
    expect(closedEvent.data).toMatchObject({ closed_by: 'session', end_reason: 'lease_expired' });
    expect(closedEvent.data.error).toBeUndefined();
  });
});

describe('TTL', () => {
  it('ends the session with expired at its TTL and resets its streams', async () => {
    h = await startHarness({ sessions: { lease_timeout: '30s' } });
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'], ttl: '1s' });
    expect(Date.parse(s.body.expires_at) - Date.now()).toBeLessThanOrEqual(1000);
    const stream = await tunnel(c, s, 'echo');
    stream.write('x');
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    const record = await waitFor(async () => {
      const r = await h!.gateway.store.getSession(s.id);
      return r?.state === 'ended' ? r : undefined;
    });
    expect(record).toMatchObject({ state: 'ended', endReason: 'expired' });
    expect((await endedEvent(h, s.id))?.data).toMatchObject({ reason: 'expired' });
  });
});

describe('revoke', () => {
  it('resets an in-flight CONNECT stream within one second', async () => {
    h = await startHarness();
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo', 'redis'] });
    const echo = await tunnel(c, s, 'echo');
    const redis = await tunnel(c, s, 'redis');
    // Keep bytes flowing on the echo stream while the revoke happens.
    let received = 0;
    echo.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    const pump = setInterval(() => {
      if (!echo.closed) echo.write(Buffer.alloc(16_384, 1));
    }, 5);
    try {
      await waitFor(() => received > 100_000);
      const admin = await h.client();
      const started = Date.now();
      const revoked = api(admin, 'POST', `/v1/sessions/${s.id}/revoke`, { bearer: ADMIN_TOKEN });
      const codes = await Promise.all([closed(echo), closed(redis)]);
      const cutAfter = Date.now() - started;
      expect(codes).toEqual([h2.NGHTTP2_CANCEL, h2.NGHTTP2_CANCEL]);
      expect(cutAfter).toBeLessThan(1000);
      expect((await revoked).body).toMatchObject({ state: 'ended', end_reason: 'revoked', revoked: true });
    } finally {
      clearInterval(pump);
    }
    expect(await h.gateway.store.getSession(s.id)).toMatchObject({ state: 'ended', endReason: 'revoked' });
    const events = (await h.gateway.store.auditEvents({ limit: 10_000 })).filter(
      (e) => e.data.session === s.id,
    );
    const closedEvents = events.filter((e) => e.type === 'connection.closed');
    expect(closedEvents).toHaveLength(2);
    for (const e of closedEvents) {
      expect(e.data).toMatchObject({ closed_by: 'session', end_reason: 'revoked' });
      expect(e.data.error).toBeUndefined();
    }
    // Connection events precede the session's end in the chain.
    const endSeq = events.find((e) => e.type === 'session.ended')?.seq ?? 0;
    expect(closedEvents.every((e) => e.seq < endSeq)).toBe(true);
    expect(h.gateway.manager.connectionCount).toBe(0);
  });

  it('DELETE by the client also cuts its tunnels', async () => {
    h = await startHarness();
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const stream = await tunnel(c, s, 'echo');
    stream.write('x');
    const del = await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
    expect(del.body).toEqual({ state: 'ended', end_reason: 'client_end' });
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
  });
});

describe('restart', () => {
  it('ends sessions whose lease passed while the gateway was down with expired_while_down', async () => {
    h = await startHarness({ sessions: { lease_timeout: '500ms' } });
    const c = await h.client();
    const stale = await openSession(c, await h.token(), { targets: ['echo'] });
    await h.gateway.close(); // as a crash: nothing is written
    expect(await h.gateway.manager.liveCount).toBe(0);
    await sleep(700);
    // The reaper runs at start, before the port opens.
    const gw = await h.restart();
    expect(await gw.store.getSession(stale.id)).toMatchObject({
      state: 'ended',
      endReason: 'expired_while_down',
    });
    expect((await endedEvent(h, stale.id))?.data).toMatchObject({ reason: 'expired_while_down' });
  });

  it('keeps live sessions across a restart: same secret, heartbeats and tunnels work', async () => {
    h = await startHarness();
    let c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    c.destroy();
    await h.restart();
    c = await h.client();
    const hb = await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret });
    expect(hb.status).toBe(200);
    const stream = await tunnel(c, s, 'echo');
    expect((await roundTrip(stream, Buffer.from('again'))).toString()).toBe('again');
    // The CA is reused: the restarted gateway presents a certificate from the same CA.
    expect(h.stderr.text).toMatch(/generated a private CA/);
    expect(h.stderr.text).toMatch(/using a private CA/);
  });
});

describe('drain', () => {
  it('refuses new sessions, lets live tunnels finish within the grace, then ends sessions', async () => {
    h = await startHarness();
    const c = await h.client();
    const busy = await openSession(c, await h.token(), { targets: ['echo'] });
    const idle = await openSession(c, await h.token(), { targets: ['echo'] });
    const stream = await tunnel(c, busy, 'echo');
    const draining = h.gateway.drain({ graceMs: 1500 });

    await waitFor(() => h!.gateway.draining);
    const ready = await api(c, 'GET', '/readyz');
    expect(ready.status).toBe(503);
    const refused = await api(c, 'POST', '/v1/sessions', { bearer: await h.token(), body: {} });
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe('CIPORT_E_GATEWAY_DRAINING');
    // The live tunnel still works during the grace period.
    stream.write('during grace');
    const echoed = await new Promise<string>((resolve) =>
      stream.once('data', (d: Buffer) => resolve(d.toString())),
    );
    expect(echoed).toBe('during grace');

    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    await draining;
    for (const id of [busy.id, idle.id]) {
      const record = await h.gateway.store.getSession(id).catch(() => undefined);
      // The store is closed after the drain: read the file through a fresh gateway.
      expect(record === undefined || String(record.endReason) === 'gateway_shutdown').toBe(true);
    }
    const gw = await h.restart();
    for (const id of [busy.id, idle.id]) {
      expect(await gw.store.getSession(id)).toMatchObject({ state: 'ended', endReason: 'gateway_shutdown' });
    }
  });

  it('finishes at once when no tunnel is open', async () => {
    h = await startHarness();
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const started = Date.now();
    await h.gateway.drain({ graceMs: 10_000 });
    expect(Date.now() - started).toBeLessThan(5_000);
    const gw = await h.restart();
    expect(await gw.store.getSession(s.id)).toMatchObject({ state: 'ended', endReason: 'gateway_shutdown' });
  });
});
