// http: curl (and a raw node socket) to the port's plain-HTTP URL; the exit speaks HTTPS to an
// API that answers 401 unless it gets the target's bearer token, and injects it.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { rawValues } from '../../exits/http/helpers.js';
import { waitFor } from '../../fixtures/wait-for.js';
import { type Driver, run } from '../driver.js';
import { dial, exchange, held } from './socket.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

export const httpDriver: Driver = {
  protocol: 'http',
  target: (name, up) => ({
    name,
    protocol: 'http',
    address: `127.0.0.1:${up.api.port}`,
    tls: { ca: { file: up.apiCaFile }, servername: 'localhost' },
    credentials: { token: { env: 'API_TOKEN' } },
  }),

  async attempt(job) {
    const r = await job.run(['curl', '-sS', '--max-time', '10', `${job.url}/hello`]);
    return {
      ok: r.code === 0 && r.stdout === '{"hello":"world"}',
      detail: `${r.code} ${r.stdout}${r.stderr}`,
    };
  },

  async dataBothWays(job, up) {
    const body = randomBytes(1024 * 1024);
    const file = join(job.dir, 'body.bin');
    writeFileSync(file, body);
    const post = await job.run([
      ...['curl', '-sS', '--fail', '--max-time', '20', '-H', 'content-type: application/octet-stream'],
      ...['--data-binary', `@${file}`, `${job.url}/upload`],
    ]);
    expect(post.stderr).toBe('');
    expect(JSON.parse(post.stdout)).toEqual({ sha256: sha(body), bytes: body.length });

    const out = join(job.dir, 'download.bin');
    const get = await job.run([
      'curl',
      '-sS',
      '--fail',
      '--max-time',
      '20',
      '-o',
      out,
      `${job.url}/download?mib=1`,
    ]);
    expect(get).toMatchObject({ code: 0, stderr: '' });
    const got = readFileSync(out);
    expect(got.length).toBe(1024 * 1024);
    expect(sha(got)).toBe(up.api.downloadSha);
  },

  async injectedCredential(job, up) {
    const r = await job.run(['curl', '-sS', '--fail', '--max-time', '10', `${job.url}/hello?who=job`]);
    expect(r).toMatchObject({ code: 0, stdout: '{"hello":"world"}' });
    const seen = up.api.seen.findLast((s) => s.url === '/hello?who=job');
    expect(rawValues(seen?.rawHeaders ?? [], 'authorization')).toEqual([`Bearer ${up.secrets.API_TOKEN}`]);
    // The API demands the token: without it (what the job could send on its own) it is 401.
    const direct = await run(
      [
        ...['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', up.apiCaFile],
        `https://localhost:${up.api.port}/hello`,
      ],
      { PATH: job.env.PATH as string },
    );
    expect(direct.stdout).toBe('401');
  },

  auditTraffic(events, exit) {
    const requests = events.filter((e) => e.type === 'http.request');
    expect(requests.map((e) => e.data)).toContainEqual(
      expect.objectContaining({ method: 'GET', path: '/hello', status: 200, exit }),
    );
  },

  async hold(job, up) {
    const before = up.api.seen.filter((s) => s.url === '/slow').length;
    const s = await dial(job.port);
    void exchange(s, 'GET /slow HTTP/1.1\r\nHost: api\r\n\r\n', { timeoutMs: 120_000 }).catch(() => {});
    await waitFor(
      () => up.api.seen.filter((x) => x.url === '/slow').length > before,
      10_000,
      'the upstream to get the request',
    );
    return held(s);
  },

  // Requests still being served upstream (see ApiUpstream.inFlight for why not idle sockets).
  upstreamOpen: async (up) => up.api.inFlight.size,
  upstreamAccepted: async (up) => up.api.accepted,
};
