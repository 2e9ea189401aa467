// Hostile review (issue 11): CONNECT streams skip Node's http2 compatibility layer now
// (src/gateway/server.ts bypassCompatForConnect). A hostile job resets streams at every stage
// (right after HEADERS, after the 200, with END_STREAM on the CONNECT itself, half-closed and
// then reset), duplicates headers, sends junk authorization. The gateway must stay up, answer
// with stable codes, record connection.closed for every connection.opened, and leave no tunnel
// counted as active.

import { randomBytes } from 'node:crypto';
import type { ClientHttp2Stream } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../fixtures/wait-for.js';
import {
  connectTunnel,
  type Harness,
  h2,
  openSession,
  roundTrip,
  sha256,
  startHarness,
  tunnel,
} from '../gateway/helpers.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ server: { max_concurrent_streams: 1000 } } as never);
});
afterAll(async () => {
  await h?.stop();
});

describe('CONNECT storms on the lean relay (hostile review)', () => {
  it('keeps every connection.opened paired with a connection.closed under RST storms', async () => {
    const client = await h.client();
    const session = await openSession(client, await h.token(), { targets: ['echo'] });
    const streams: ClientHttp2Stream[] = [];
    for (let i = 0; i < 400; i++) {
      const mode = i % 4;
      const s = client.request(
        {
          ':method': 'CONNECT',
          ':authority': 'echo:443',
          authorization: `Bearer ${session.secret}`,
          'ciport-session': session.id,
        },
        mode === 2 ? { endStream: true } : {},
      );
      s.on('error', () => {});
      streams.push(s);
      if (mode === 0) s.close(h2.NGHTTP2_CANCEL); // reset right after HEADERS
      if (mode === 1) s.once('response', () => s.close(h2.NGHTTP2_CANCEL));
      if (mode === 3) {
        s.write(randomBytes(1000));
        s.end();
        setTimeout(() => s.close(h2.NGHTTP2_REFUSED_STREAM), 5);
      }
    }
    await new Promise((r) => setTimeout(r, 1500));
    for (const s of streams) if (!s.closed) s.close(h2.NGHTTP2_CANCEL);

    await waitFor(async () => {
      const active = (await h.gateway.metrics.tunnelsActive.get()).values[0]?.value ?? 0;
      expect(active).toBe(0);
      return true;
    });
    await waitFor(async () => {
      const events = await h.gateway.store.auditEvents({ limit: 10_000 });
      const of = (type: string) =>
        new Set(
          events
            .filter((e) => e.type === type && (e.data as { session?: string }).session === session.id)
            .map((e) => (e.data as { connection: string }).connection),
        );
      const opened = of('connection.opened');
      const closed = of('connection.closed');
      const unpaired = [...opened].filter((c) => !closed.has(c));
      expect(unpaired, `${opened.size} opened, ${closed.size} closed`).toEqual([]);
      return opened.size > 0;
    });
    // The gateway still serves the same client.
    const t = await tunnel(client, session, 'echo');
    const data = randomBytes(32_000);
    expect(sha256(await roundTrip(t, data))).toBe(sha256(data));
  }, 60_000);

  it('answers malformed CONNECTs with stable codes and stays up', async () => {
    const client = await h.client();
    const session = await openSession(client, await h.token(), { targets: ['echo'] });
    const ask = (headers: Record<string, string | string[]>) =>
      new Promise<{ status: number; code: string | undefined; rst?: number }>((resolve) => {
        const s = client.request({ ':method': 'CONNECT', ...headers });
        s.on('error', () => {});
        s.once('response', (hd) => {
          resolve({ status: Number(hd[':status']), code: hd['ciport-error'] as string | undefined });
          s.close();
        });
        s.once('close', () => resolve({ status: 0, code: undefined, rst: s.rstCode }));
      });
    const base = { authorization: `Bearer ${session.secret}`, 'ciport-session': session.id };
    const answers = {
      badAuthority: await ask({ ':authority': '', ...base }),
      dupSession: await ask({
        ':authority': 'echo:443',
        ...base,
        'ciport-session': [session.id, session.id],
      }),
      basicAuth: await ask({ ':authority': 'echo:443', ...base, authorization: `Basic ${session.secret}` }),
      emptyBearer: await ask({ ':authority': 'echo:443', ...base, authorization: 'Bearer ' }),
      hugeBearer: await ask({
        ':authority': 'echo:443',
        ...base,
        authorization: `Bearer ${'a'.repeat(6000)}`,
      }),
      otherTarget: await ask({ ':authority': 'nope:443', ...base }),
    };
    for (const [name, a] of Object.entries(answers)) {
      if (a.status === 0) continue; // refused by HTTP/2 itself (PROTOCOL_ERROR): fine
      expect(a.status, name).toBeGreaterThanOrEqual(400);
      expect(a.code, `${name}: ${JSON.stringify(a)}`).toMatch(/^CIPORT_E_[A-Z_]+$/);
    }
    const answer = await connectTunnel(client, session, 'echo');
    expect(answer.status).toBe(200);
    answer.stream.close();
  }, 30_000);
});
