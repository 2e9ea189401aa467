// Tunnels: HTTP/2 CONNECT streams through the gateway to real TCP servers on loopback.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyRows } from '../../src/audit/chain.js';
import { waitFor } from '../fixtures/wait-for.js';
import {
  api,
  closed,
  connectTunnel,
  type Harness,
  h2,
  openSession,
  roundTrip,
  sha256,
  startHarness,
  tunnel,
} from './helpers.js';

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.stop();
});

describe('CONNECT to a tcp target', () => {
  it('carries bytes both ways to an echo server and records both connection events', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const stream = await tunnel(c, s, 'echo');
    const data = randomBytes(300_000);
    const back = await roundTrip(stream, data);
    expect(sha256(back)).toBe(sha256(data));
    expect(await closed(stream)).toBe(0);

    const events = await waitFor(async () => {
      const all = (await h.gateway.store.auditEvents({ limit: 10_000 })).filter(
        (e) => e.data.session === s.id,
      );
      return all.some((e) => e.type === 'connection.closed') ? all : undefined;
    });
    const opened = events.find((e) => e.type === 'connection.opened');
    const closedEvent = events.find((e) => e.type === 'connection.closed');
    expect(opened?.data).toMatchObject({ target: 'echo', exit: 'gateway', rule: 'ledger-main' });
    expect(closedEvent?.data).toMatchObject({
      target: 'echo',
      connection: opened?.data.connection,
      bytes_to_target: 300_000,
      bytes_from_target: 300_000,
    });
    expect(closedEvent?.data.error).toBeUndefined();
    expect(opened && closedEvent && opened.seq < closedEvent.seq).toBe(true);
  });

  it('reaches the machine Redis: PING -> +PONG', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['redis'] });
    const stream = await tunnel(c, s, 'redis');
    const reply = await new Promise<string>((resolve, reject) => {
      let text = '';
      stream.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8');
        if (text.includes('\r\n')) resolve(text);
      });
      stream.once('error', reject);
      stream.write('PING\r\n');
    });
    expect(reply).toBe('+PONG\r\n');
    stream.end();
    await closed(stream);
  });

  it('runs 200 concurrent streams in one session with intact bytes both ways', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const stream = await tunnel(c, s, 'echo');
        const data = randomBytes(20_000 + i * 97);
        const back = await roundTrip(stream, data);
        return [sha256(data), sha256(back)] as const;
      }),
    );
    for (const [sent, received] of results) expect(received).toBe(sent);
    await waitFor(() => h.gateway.manager.connectionCount === 0);
  });

  it('refuses without the secret (401), for an ungranted (403) or unknown (404) target', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const bad = await connectTunnel(c, { id: s.id, secret: 'cps_wrong' }, 'echo');
    expect(bad.status).toBe(401);
    expect(bad.headers['ciport-error']).toBe('CIPORT_E_SESSION_UNAUTHORIZED');
    const unknownSession = await connectTunnel(c, { id: 'ses_nope', secret: s.secret }, 'echo');
    expect(unknownSession.status).toBe(401);
    const notGranted = await connectTunnel(c, s, 'redis');
    expect(notGranted.status).toBe(403);
    expect(notGranted.headers['ciport-error']).toBe('CIPORT_E_TARGET_NOT_GRANTED');
    const unknown = await connectTunnel(c, s, 'no-such-target');
    expect(unknown.status).toBe(404);
    expect(unknown.headers['ciport-error']).toBe('CIPORT_E_TARGET_UNKNOWN');
  });

  it('answers 502 with a code when the target cannot be reached, and the session lives on', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['nowhere', 'echo'] });
    const res = await connectTunnel(c, s, 'nowhere');
    expect(res.status).toBe(502);
    expect(res.headers['ciport-error']).toBe('CIPORT_E_UPSTREAM_UNREACHABLE');
    const ok = await tunnel(c, s, 'echo');
    expect((await roundTrip(ok, Buffer.from('still here'))).toString()).toBe('still here');
  });

  it('answers 501 for protocols the gateway does not implement yet', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['pg'] });
    const res = await connectTunnel(c, s, 'pg');
    expect(res.status).toBe(501);
    expect(res.headers['ciport-error']).toBe('CIPORT_E_PROTOCOL_NOT_IMPLEMENTED');
  });

  it('answers 410 for a tunnel of an ended session', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    await api(c, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
    const res = await connectTunnel(c, s, 'echo');
    expect(res.status).toBe(410);
    expect(res.headers['ciport-error']).toBe('CIPORT_E_SESSION_ENDED');
  });

  it('resets the stream with CONNECT_ERROR when the upstream resets the connection', async () => {
    const c = await h.client();
    const s = await openSession(c, await h.token(), { targets: ['echo'] });
    const stream = await tunnel(c, s, 'echo');
    stream.write('hello');
    await waitFor(() => h.echo.sockets.size > 0);
    for (const sock of h.echo.sockets) sock.resetAndDestroy();
    expect(await closed(stream)).toBe(h2.NGHTTP2_CONNECT_ERROR);
  });
});

describe('limits', () => {
  it('refuses connections over the session limit with 429', async () => {
    const limited = await startHarness({ sessions: { max_connections: 3 } });
    try {
      const c = await limited.client();
      const s = await openSession(c, await limited.token(), { targets: ['echo'] });
      const open = await Promise.all([1, 2, 3].map(() => tunnel(c, s, 'echo')));
      const fourth = await connectTunnel(c, s, 'echo');
      expect(fourth.status).toBe(429);
      expect(fourth.headers['ciport-error']).toBe('CIPORT_E_CONNECTION_LIMIT');
      // Closing one frees a slot.
      await roundTrip(open[0]!, Buffer.from('x'));
      await waitFor(() => limited.gateway.manager.connectionCount === 2);
      const again = await tunnel(c, s, 'echo');
      expect((await roundTrip(again, Buffer.from('ok'))).toString()).toBe('ok');
    } finally {
      await limited.stop();
    }
  });

  it('resets an idle tunnel with CANCEL after the idle timeout', async () => {
    const idle = await startHarness({ sessions: { connection_idle_timeout: '300ms' } });
    try {
      const c = await idle.client();
      const s = await openSession(c, await idle.token(), { targets: ['echo'] });
      const stream = await tunnel(c, s, 'echo');
      stream.write('ping');
      expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
      const events = await waitFor(async () =>
        (await idle.gateway.store.auditEvents({ limit: 10_000 })).find((e) => e.type === 'connection.closed'),
      );
      expect(events.data).toMatchObject({
        closed_by: 'idle_timeout',
        bytes_to_target: 4,
        bytes_from_target: 4,
      });
      expect(events.data.error).toBeUndefined();
    } finally {
      await idle.stop();
    }
  });
});

describe('after the traffic above', () => {
  it('counts tunnels and bytes in /metrics', async () => {
    const c = await h.client();
    const text = String((await api(c, 'GET', '/metrics')).body);
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? Number.NaN);
    expect(value(/^ciport_tunnel_bytes_total\{target="echo",direction="up"\} (\d+)/m)).toBeGreaterThan(
      4_000_000,
    );
    expect(value(/^ciport_tunnel_bytes_total\{target="echo",direction="down"\} (\d+)/m)).toBeGreaterThan(
      4_000_000,
    );
    expect(value(/^ciport_tunnel_connections_total\{target="echo"\} (\d+)/m)).toBeGreaterThanOrEqual(200);
    expect(
      value(/^ciport_tunnel_connections_refused_total\{code="CIPORT_E_TARGET_NOT_GRANTED"\} (\d+)/m),
    ).toBe(1);
    expect(value(/^ciport_sessions_ended_total\{reason="client_end"\} (\d+)/m)).toBeGreaterThanOrEqual(1);
  });

  it('left an audit chain that verifies', async () => {
    const rows = await h.gateway.store.auditRows({ limit: 10_000 });
    expect(rows.length).toBeGreaterThan(400);
    expect(await verifyRows(rows)).toMatchObject({ ok: true, count: rows.length });
  });
});
