// Sessions and tunnels publish on node:diagnostics_channel (src/session/events.ts): a subscriber
// sees a tunnel open and close with its bytes, a refused tunnel, and a session's end — and only
// those of the gateway it asked for, with two gateways in one process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type SessionEndedMessage,
  subscribe,
  type TunnelClosedMessage,
  type TunnelOpenedMessage,
  type TunnelRefusedMessage,
} from '../../src/session/events.js';
import { waitFor } from '../fixtures/wait-for.js';
import { api, connectTunnel, type Harness, openSession, roundTrip, startHarness, tunnel } from './helpers.js';

let a: Harness;
let b: Harness;

beforeAll(async () => {
  a = await startHarness();
  b = await startHarness();
});
afterAll(async () => {
  await a?.stop();
  await b?.stop();
});

describe('session and tunnel events', () => {
  it("a subscriber to gateway A sees A's tunnel and session events, none of B's", async () => {
    const seen: {
      opened: TunnelOpenedMessage[];
      closed: TunnelClosedMessage[];
      refused: TunnelRefusedMessage[];
      ended: SessionEndedMessage[];
    } = { opened: [], closed: [], refused: [], ended: [] };
    const stop = subscribe(a.gateway.gatewayId, {
      tunnelOpened: (m) => seen.opened.push(m),
      tunnelClosed: (m) => seen.closed.push(m),
      tunnelRefused: (m) => seen.refused.push(m),
      sessionEnded: (m) => seen.ended.push(m),
    });
    try {
      // B's traffic, which A's subscriber must not see.
      const cb = await b.client();
      const sb = await openSession(cb, await b.token(), { targets: ['echo'] });
      await roundTrip(await tunnel(cb, sb, 'echo'), Buffer.from('on B'));

      const ca = await a.client();
      const s = await openSession(ca, await a.token(), { targets: ['echo'] });
      const payload = Buffer.alloc(100_000, 7);
      const echoed = await roundTrip(await tunnel(ca, s, 'echo'), payload);
      expect(echoed.length).toBe(payload.length);
      const refused = await connectTunnel(ca, s, 'nowhere-granted');
      expect(refused.status).toBeGreaterThanOrEqual(400);
      await api(ca, 'DELETE', `/v1/sessions/${s.id}`, { bearer: s.secret });
      await waitFor(
        () => seen.closed.length === 1 && seen.ended.length === 1,
        5_000,
        'the close and the end',
      );

      expect(seen.opened).toEqual([
        {
          gateway: a.gateway.gatewayId,
          session: s.id,
          connection: expect.stringMatching(/^con_/),
          target: 'echo',
        },
      ]);
      expect(seen.closed[0]).toMatchObject({
        session: s.id,
        connection: seen.opened[0]?.connection,
        target: 'echo',
        up: payload.length,
        down: payload.length,
      });
      expect(seen.refused.map((m) => m.code)).toEqual(['CIPORT_E_TARGET_UNKNOWN']);
      expect(seen.ended).toEqual([{ gateway: a.gateway.gatewayId, session: s.id, reason: 'client_end' }]);
    } finally {
      stop();
    }
  });
});
