// Attacks on the unauthenticated download endpoints (src/gateway/downloads.ts, docs/gateway.md
// "Serving the client and the CA"), against a real gateway on loopback.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { type ClientHttp2Session, connect as h2connect } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { tempDir } from '../gateway/helpers.js';

const { dir, cleanup } = tempDir('ciport-dl-abuse-');
const CLIENT_SIZE = 48 << 20;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function startGw(client: Record<string, unknown>, name: string) {
  return startTestGateway(gatewayConfig({ listen: '127.0.0.1:0', data_dir: join(dir, name), client }));
}

afterAll(() => cleanup());

describe('a client file rewritten in place during a download', () => {
  const file = join(dir, 'inplace-client');
  let gw: RunningGateway;
  beforeAll(async () => {
    writeFileSync(file, randomBytes(CLIENT_SIZE));
    gw = await startGw({ linux_x64: file }, 'inplace');
  });
  afterAll(async () => {
    await gw?.close();
  });

  // `npm run build:client` (scripts/build-client.mjs) removes dist/client/ciport, copies node
  // there and then postject rewrites it in place: the same inode, changed while a running gateway
  // streams it. A download must never carry bytes other than those its X-Ciport-Sha256/ETag
  // announce (a shared cache keeps body and ETag together: Cache-Control public).
  it('never completes a body that does not match its X-Ciport-Sha256', async () => {
    const ca = readFileSync(gw.caFile as string);
    const outcome = await new Promise<{ headerSha: string; body?: Buffer }>((resolve, reject) => {
      const req = httpsRequest(`${gw.url}/v1/client/linux-x64`, { ca, agent: false }, (res) => {
        const headerSha = String(res.headers['x-ciport-sha256']);
        const chunks: Buffer[] = [];
        let ended = false;
        res.once('data', (first: Buffer) => {
          chunks.push(first);
          res.pause();
          // The operator rebuilds the client: same size, other bytes, same inode.
          const fd = openSync(file, 'r+');
          writeSync(fd, randomBytes(CLIENT_SIZE), 0, CLIENT_SIZE, 0);
          closeSync(fd);
          res.on('data', (c: Buffer) => chunks.push(c));
          res.once('end', () => {
            ended = true;
            resolve({ headerSha, body: Buffer.concat(chunks) });
          });
          // Cut short: the client sees an incomplete download, never a wrong complete one.
          res.once('error', () => resolve({ headerSha }));
          res.once('close', () => {
            if (!ended) resolve({ headerSha });
          });
          setTimeout(() => res.resume(), 200);
        });
      });
      req.once('error', reject);
      req.end();
    });
    if (outcome.body && outcome.body.length === CLIENT_SIZE) {
      expect(sha256(outcome.body), 'a complete body that differs from its checksum').toBe(outcome.headerSha);
    }
    // The next download is of the new file, announced with its own checksum.
    const again = await new Promise<{ headerSha: string; body: Buffer }>((resolve, reject) => {
      const req = httpsRequest(`${gw.url}/v1/client/linux-x64`, { ca, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () =>
          resolve({ headerSha: String(res.headers['x-ciport-sha256']), body: Buffer.concat(chunks) }),
        );
        res.once('error', reject);
      });
      req.once('error', reject);
      req.end();
    });
    expect(again.body.length).toBe(CLIENT_SIZE);
    expect(sha256(again.body)).toBe(again.headerSha);
    expect(again.headerSha).not.toBe(outcome.headerSha);
  }, 60_000);
});

describe('a reader that takes a little before every stall timeout', () => {
  const file = join(dir, 'trickle-client');
  let gw: RunningGateway;
  const sessions: ClientHttp2Session[] = [];
  beforeAll(async () => {
    writeFileSync(file, randomBytes(CLIENT_SIZE));
    gw = await startGw({ linux_x64: file, max_downloads: 4, stall_timeout: '1s' }, 'trickle');
  });
  afterAll(async () => {
    for (const s of sessions) s.destroy();
    await gw?.close();
  });

  // One unauthenticated HTTP/2 connection opens client.max_downloads streams and reads a few KiB
  // from each every 0.7 s (192 KiB windows; at 60 s and 64 KiB a 96 MiB client takes a day) (under client.stall_timeout): at that rate the 48 MiB take hours, and
  // every job's download of the client is refused (429) for as long as the attacker likes.
  it('does not let one connection hold every download slot far past the stall timeout', async () => {
    const ca = readFileSync(gw.caFile as string);
    const session = h2connect(gw.url, { ca, settings: { initialWindowSize: 192 << 10 } });
    sessions.push(session);
    session.on('error', () => {});
    let taken = 0;
    const streams = Array.from({ length: 4 }, () => {
      const s = session.request({ ':path': '/v1/client/linux-x64' });
      s.on('error', () => {});
      s.pause();
      return s;
    });
    const timer = setInterval(() => {
      for (const s of streams) {
        for (let c = s.read() as Buffer | null; c; c = s.read() as Buffer | null) taken += c.length;
      }
    }, 700);
    try {
      await sleep(6_000);
      // Six stall timeouts later, a job's download.
      const status = await new Promise<number>((resolve, reject) => {
        const job = h2connect(gw.url, { ca });
        const g = job.request({ ':path': '/v1/client/linux-x64' });
        g.once('response', (h) => {
          resolve(Number(h[':status']));
          job.destroy();
        });
        g.once('error', reject);
      });
      // One connection holds at most MAX_DOWNLOADS_PER_CONNECTION slots; a job still gets its client.
      expect(taken).toBeLessThan((4 * CLIENT_SIZE) / 8);
      expect(status, 'a job is refused while the trickling reader holds every slot').toBe(200);
    } finally {
      clearInterval(timer);
    }
  }, 60_000);
});
