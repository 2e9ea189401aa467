// tcp: raw bytes to the echo server, nothing injected (the target has no credential). The
// "injected credential" case checks the other side of that: the upstream's first bytes are the
// application's own.
import { createHash, randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import type { Driver } from '../driver.js';
import { dial, exchange, held } from './socket.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export const tcpDriver: Driver = {
  protocol: 'tcp',
  target: (name, up) => ({ name, protocol: 'tcp', address: up.echo.address }),

  async attempt(job) {
    const hello = `hello-${randomBytes(6).toString('hex')}\n`;
    try {
      const s = await dial(job.port);
      const back = await exchange(s, hello, { end: true, timeoutMs: 5_000 });
      s.destroy();
      return { ok: back.toString() === hello, detail: `echoed ${JSON.stringify(back.toString())}` };
    } catch (err) {
      return { ok: false, detail: (err as Error).message };
    }
  },

  async dataBothWays(job, up) {
    const payload = randomBytes(1024 * 1024);
    const s = await dial(job.port);
    const back = await exchange(s, payload, { end: true, timeoutMs: 20_000 });
    s.destroy();
    expect(back.length).toBe(payload.length);
    expect(sha(back)).toBe(sha(payload));
    const seen = up.echo.connections.at(-1);
    expect(seen?.received).toBe(payload.length);
    expect(seen?.sha256).toBe(sha(payload));
  },

  async injectedCredential(job, up) {
    const marker = `app-first-bytes-${randomBytes(6).toString('hex')}`;
    const s = await dial(job.port);
    await exchange(s, marker, { done: (b) => b.length >= marker.length });
    s.destroy();
    // Nothing before or instead of the app's bytes: a tcp exit injects nothing.
    expect(up.echo.connections.at(-1)?.first.toString()).toBe(marker);
  },

  auditTraffic(events) {
    expect(events.filter((e) => e.type === 'query' || e.type === 'http.request')).toEqual([]);
  },

  async hold(job) {
    const s = await dial(job.port);
    await exchange(s, 'x', { done: (b) => b.toString() === 'x' });
    return held(s);
  },

  upstreamOpen: async (up) => up.echo.open,
  upstreamAccepted: async (up) => up.echo.accepted,
};
