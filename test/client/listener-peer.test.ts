// The local listener's front door: the peer check runs before anything else on every protocol
// (no tunnel is opened for a refused peer), refusals are counted, and a flood of them gives one
// stderr line per 10 s; a peer that passes is served as usual.
import type { ClientHttp2Stream } from 'node:http2';
import { type AddressInfo, connect, createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PeerCheck } from '../../src/client/peer-uid.js';
import { TargetListener } from '../../src/client/tunnel.js';

let echo: Server;

beforeAll(async () => {
  echo = createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
});
afterAll(() => echo.close());

/** What the app got back before its socket closed. */
function talk(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (c: Buffer) => {
      got += c.toString();
      if (got === text) s.end();
    });
    s.on('error', () => {});
    s.on('close', () => resolve(got));
    s.write(text);
  });
}

async function listener(protocol: 'tcp' | 'redis' | 'postgres', checkPeer: PeerCheck) {
  const warnings: string[] = [];
  let opened = 0;
  const l = await TargetListener.listen({
    target: 'svc',
    port: 0,
    log: { verbose: false, warn: (m) => warnings.push(m), info: () => {} },
    // A stand-in tunnel: a plain TCP connection to the echo server, counted.
    open: async () => {
      opened += 1;
      const up = connect((echo.address() as AddressInfo).port, '127.0.0.1');
      return Object.assign(up, { rstCode: 0, close: () => up.destroy() }) as unknown as ClientHttp2Stream;
    },
    checkPeer,
    redis: protocol === 'redis' ? { password: 'otp' } : undefined,
    postgres: protocol === 'postgres' ? { user: 'app', password: 'otp' } : undefined,
  });
  return { l, warnings, opened: () => opened };
}

describe('the peer check in front of every listener', () => {
  it.each(['tcp', 'redis', 'postgres'] as const)(
    '%s: a refused peer is closed before any tunnel',
    async (protocol) => {
      const { l, warnings, opened } = await listener(protocol, async () => ({
        ok: false,
        uid: 65534,
        reason: "uid 65534 is not this job's uid 1000",
      }));
      const got = await Promise.all([1, 2, 3, 4, 5].map(() => talk(l.port, 'AUTH otp\r\n')));
      expect(got).toEqual(['', '', '', '', '']);
      expect(opened()).toBe(0);
      expect(l.totals.refused).toBe(5);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(
        /^svc: refused a local connection from 127\.0\.0\.1:\d+: uid 65534 is not this job's uid 1000 \(1 refused so far; CIPORT_E_LOCAL_PEER_REFUSED\)$/,
      );
      await l.close();
    },
  );

  it('a peer that passes is relayed; a check that throws refuses', async () => {
    let allow = true;
    const { l, opened } = await listener('tcp', async () => {
      if (allow) return { ok: true, uid: 1000 };
      throw new Error('boom');
    });
    expect(await talk(l.port, 'hello through')).toBe('hello through');
    expect(opened()).toBe(1);
    allow = false;
    expect(await talk(l.port, 'again')).toBe('');
    expect(l.totals.refused).toBe(1);
    expect(opened()).toBe(1);
    await l.close();
  });
});
