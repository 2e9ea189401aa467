// The unauthenticated downloads for jobs (src/gateway/downloads.ts): the runner client, its
// .sha256 and the gateway's CA, fetched from a real gateway with curl over verified TLS, as a
// job does (docs/client.md, "Installing the client on a runner").
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { makePki } from '../exits/http/helpers.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { waitFor } from '../fixtures/wait-for.js';
import { tempDir } from './helpers.js';

const { dir, cleanup } = tempDir('ciport-downloads-');
const CLIENT_SIZE = 16 << 20;
const clientFile = join(dir, 'client-under-test');
let clientSha: string;
let gateway: RunningGateway;

interface Curl {
  code: number;
  status: number;
  httpVersion: string;
  headers: Record<string, string>;
  rawHeaders: string;
  body: Buffer;
  stderr: string;
}

let curlN = 0;
/** curl ARGS… URL-PATH against `gw`, trusting its CA unless `cacert` says otherwise. */
function curl(
  gw: { url: string; caFile?: string | undefined },
  path: string,
  args: string[] = [],
  cacert = gw.caFile,
): Promise<Curl> {
  const n = curlN++;
  const headerFile = join(dir, `headers-${n}`);
  const bodyFile = join(dir, `body-${n}`);
  writeFileSync(bodyFile, '');
  return new Promise((resolve) => {
    execFile(
      'curl',
      [
        '-sS',
        '--path-as-is',
        '--cacert',
        cacert as string,
        '-D',
        headerFile,
        '-o',
        bodyFile,
        '-w',
        '%{http_code} %{http_version}',
        ...args,
        `${gw.url}${path}`,
      ],
      { encoding: 'utf8', timeout: 60_000 },
      (err, stdout, stderr) => {
        const [status, httpVersion] = stdout.trim().split(' ');
        const headers: Record<string, string> = {};
        let raw = '';
        try {
          raw = readFileSync(headerFile, 'utf8');
        } catch {
          // no response
        }
        for (const line of raw.split(/\r?\n/).slice(1)) {
          const i = line.indexOf(':');
          if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        resolve({
          code: err ? ((err as { code?: number }).code ?? 1) : 0,
          status: Number(status),
          httpVersion: httpVersion ?? '',
          headers,
          rawHeaders: raw,
          body: readFileSync(bodyFile),
          stderr,
        });
      },
    );
  });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function startGw(doc: Record<string, unknown>, name: string) {
  return startTestGateway(gatewayConfig({ listen: '127.0.0.1:0', data_dir: join(dir, name), ...doc }));
}

beforeAll(async () => {
  const bytes = randomBytes(CLIENT_SIZE);
  writeFileSync(clientFile, bytes);
  clientSha = sha256(bytes);
  gateway = await startGw({ client: { linux_x64: clientFile } }, 'main');
}, 60_000);

afterAll(async () => {
  await gateway?.close();
  cleanup();
});

describe('GET /v1/client/linux-x64', () => {
  for (const version of ['--http2', '--http1.1']) {
    it(`streams the client with its checksum headers (${version})`, async () => {
      const r = await curl(gateway, '/v1/client/linux-x64', [version]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(200);
      expect(r.httpVersion).toBe(version === '--http2' ? '2' : '1.1');
      expect(r.body.length).toBe(CLIENT_SIZE);
      expect(sha256(r.body)).toBe(clientSha);
      expect(r.headers).toMatchObject({
        'content-type': 'application/octet-stream',
        'content-length': String(CLIENT_SIZE),
        'content-disposition': 'attachment; filename=ciport',
        'x-ciport-sha256': clientSha,
        etag: `"sha256-${clientSha}"`,
        'cache-control': 'public, no-cache',
      });
    });

    it(`HEAD gives the same headers and no body (${version})`, async () => {
      const r = await curl(gateway, '/v1/client/linux-x64', [version, '-I']);
      expect(r.status).toBe(200);
      expect(r.headers['content-length']).toBe(String(CLIENT_SIZE));
      expect(r.headers['x-ciport-sha256']).toBe(clientSha);
      // curl -I writes the headers where the body would go: nothing follows them.
      expect(r.body.toString()).toBe(r.rawHeaders);
    });
  }

  it('answers 304 to a copy whose ETag is current, and the body to one that is not', async () => {
    const same = await curl(gateway, '/v1/client/linux-x64', ['-H', `If-None-Match: "sha256-${clientSha}"`]);
    expect(same.status).toBe(304);
    expect(same.body.length).toBe(0);
    const other = await curl(gateway, '/v1/client/linux-x64', [
      '-H',
      `If-None-Match: "sha256-${'0'.repeat(64)}"`,
    ]);
    expect(other.status).toBe(200);
    expect(sha256(other.body)).toBe(clientSha);
  });

  it('publishes the checksum in sha256sum format, which checks the download', async () => {
    const sum = await curl(gateway, '/v1/client/linux-x64.sha256');
    expect(sum.status).toBe(200);
    expect(sum.body.toString()).toBe(`${clientSha}  ciport\n`);
    const bin = await curl(gateway, '/v1/client/linux-x64');
    writeFileSync(join(dir, 'ciport'), bin.body);
    writeFileSync(join(dir, 'ciport.sha256'), sum.body);
    const check = await new Promise<number>((resolve) =>
      execFile('sha256sum', ['-c', 'ciport.sha256'], { cwd: dir }, (err) => resolve(err ? 1 : 0)),
    );
    expect(check).toBe(0);
  });

  it('hashes the file again when it changes, not per request', async () => {
    const replaced = join(dir, 'client-replaced');
    const first = randomBytes(4096);
    writeFileSync(replaced, first);
    const gw = await startGw({ client: { linux_x64: replaced } }, 'replace');
    try {
      expect((await curl(gw, '/v1/client/linux-x64.sha256')).body.toString()).toBe(
        `${sha256(first)}  ciport\n`,
      );
      const second = randomBytes(8192);
      writeFileSync(replaced, second);
      const r = await curl(gw, '/v1/client/linux-x64');
      expect(r.headers['x-ciport-sha256']).toBe(sha256(second));
      expect(sha256(r.body)).toBe(sha256(second));
    } finally {
      await gw.close();
    }
  });

  it('streams 20 parallel downloads intact without holding the file in memory', async () => {
    // Each curl pipes into sha256sum: nothing lands on disk or in this process but the gateway's.
    const download = (flag: string) =>
      new Promise<string>((resolve) =>
        execFile(
          'sh',
          ['-c', `curl -fsS ${flag} --cacert "$CA" "$URL" | sha256sum`],
          { env: { ...process.env, CA: gateway.caFile, URL: `${gateway.url}/v1/client/linux-x64` } },
          (err, stdout, stderr) => resolve(err ? `failed: ${stderr}` : stdout),
        ),
      );
    const before = process.memoryUsage().arrayBuffers;
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
    }, 10);
    let sums: string[];
    try {
      sums = await Promise.all(
        Array.from({ length: 20 }, (_, i) => download(i % 2 ? '--http1.1' : '--http2')),
      );
    } finally {
      clearInterval(sampler);
    }
    expect(sums).toEqual(Array.from({ length: 20 }, () => `${clientSha}  -\n`));
    // 20 whole copies would be 320 MiB; streamed, each download holds a few read buffers and its
    // HTTP/2 window (Node 24 peaked at 71 MiB in CI under load, Node 20 lower).
    expect(peak).toBeLessThan(128 << 20);
  }, 120_000);
});

describe('download limits', () => {
  let busy: RunningGateway;
  let slow: ChildProcess | undefined;
  beforeAll(async () => {
    busy = await startGw(
      { client: { linux_x64: clientFile, max_downloads: 1, stall_timeout: '3s' } },
      'busy',
    );
  });
  afterAll(async () => {
    slow?.kill('SIGKILL');
    await busy?.close();
  });

  it('refuses downloads past client.max_downloads with 429 and Retry-After; a stalled one loses its slot', async () => {
    // A runner that reads a little, then nothing: its curl blocks on a full pipe, and the
    // gateway's stream on flow control, holding the one slot.
    slow = spawn('curl', ['-sS', '--cacert', busy.caFile as string, `${busy.url}/v1/client/linux-x64`], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const out = slow.stdout as NodeJS.ReadableStream;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the slow download never started')), 10_000);
      out.once('data', () => {
        clearTimeout(timer);
        out.pause();
        resolve();
      });
    });
    const refused = await curl(busy, '/v1/client/linux-x64');
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe('5');
    expect(refused.headers['ciport-error']).toBe('CIPORT_E_RATE_LIMITED');
    expect(refused.headers['content-disposition']).toBeUndefined();
    expect(JSON.parse(refused.body.toString()).error.message).toMatch(/client\.max_downloads/);
    // HEAD and the checksum take no download slot.
    expect((await curl(busy, '/v1/client/linux-x64', ['-I'])).status).toBe(200);
    expect((await curl(busy, '/v1/client/linux-x64.sha256')).status).toBe(200);

    // The reader is alive but takes nothing: after client.stall_timeout its download is cut
    // and the slot is free again, whether or not its connection ever closes.
    const again = await waitFor(
      async () => {
        const r = await curl(busy, '/v1/client/linux-x64');
        return r.status === 429 ? undefined : r;
      },
      20_000,
      'the stalled download to free its slot (anything but 429)',
    );
    expect(again.status).toBe(200);
    expect(sha256(again.body)).toBe(clientSha);
  }, 60_000);
});

describe('paths that are not the client', () => {
  const hostile = [
    '/v1/client/../',
    '/v1/client/..%2f..%2fetc%2fpasswd',
    '/v1/client/linux-x64%00',
    '/v1/client/linux-x64%2500',
    '/v1/client/linux-x64/',
    '/v1/client/linux-x64.sha256/x',
    '/v1/client/linux-X64',
    '/v1/client/linux-arm64',
    '/v1/client/darwin-arm64',
    '/v1/client/windows-x64.exe',
    '/v1/client/',
    '/v1/client',
    '/v1/ca.crt.key',
    '/v1/ca.key',
  ];
  for (const path of hostile) {
    it(`${path}: a clean 404 with the error body`, async () => {
      const r = await curl(gateway, path);
      expect(r.status).toBe(404);
      expect(r.headers['ciport-error']).toBe('CIPORT_E_NOT_FOUND');
      expect(JSON.parse(r.body.toString()).error.code).toBe('CIPORT_E_NOT_FOUND');
    });
  }

  it('refuses other methods on the download paths', async () => {
    const r = await curl(gateway, '/v1/client/linux-x64', ['-X', 'POST', '--data', 'x']);
    expect(r.status).toBe(405);
    expect(r.headers['ciport-error']).toBe('CIPORT_E_METHOD_NOT_ALLOWED');
  });
});

describe('no client to serve', () => {
  it('a missing file: 404 CIPORT_E_CLIENT_UNAVAILABLE saying how to build it', async () => {
    const gw = await startGw({ client: { linux_x64: join(dir, 'not-built', 'ciport') } }, 'missing');
    try {
      for (const path of ['/v1/client/linux-x64', '/v1/client/linux-x64.sha256']) {
        const r = await curl(gw, path);
        expect(r.status).toBe(404);
        expect(r.headers['ciport-error']).toBe('CIPORT_E_CLIENT_UNAVAILABLE');
        const { error } = JSON.parse(r.body.toString());
        expect(error.code).toBe('CIPORT_E_CLIENT_UNAVAILABLE');
        expect(error.message).toMatch(/npm run build:client/);
        // The gateway host's paths are nobody's business.
        expect(error.message).not.toContain(dir);
      }
      // The rest of the API is unaffected.
      expect((await curl(gw, '/healthz')).status).toBe(200);
    } finally {
      await gw.close();
    }
  });

  it('client.linux_x64: false serves none', async () => {
    const gw = await startGw({ client: { linux_x64: false } }, 'disabled');
    try {
      const r = await curl(gw, '/v1/client/linux-x64');
      expect(r.status).toBe(404);
      expect(JSON.parse(r.body.toString()).error).toMatchObject({
        code: 'CIPORT_E_CLIENT_UNAVAILABLE',
        message: expect.stringMatching(/client\.linux_x64: false/),
      });
    } finally {
      await gw.close();
    }
  });
});

describe('GET /v1/ca.crt', () => {
  it('serves the generated <data_dir>/ca.crt byte for byte; curl then verifies the gateway with it', async () => {
    const r = await curl(gateway, '/v1/ca.crt', ['--http2']);
    const onDisk = readFileSync(gateway.caFile as string);
    expect(r.status).toBe(200);
    expect(r.body.equals(onDisk)).toBe(true);
    expect(r.headers['content-type']).toBe('application/x-pem-file');
    expect(r.headers['x-ciport-sha256']).toBe(sha256(onDisk));
    const saved = join(dir, 'downloaded-ca.crt');
    writeFileSync(saved, r.body);
    expect((await curl(gateway, '/healthz', [], saved)).status).toBe(200);
  });

  describe('with tls: configured', () => {
    const pki = makePki('operator CA');
    const files = {
      cert: join(dir, 'tls.crt'),
      key: join(dir, 'tls.key'),
      ca: join(dir, 'tls-ca.crt'),
      otherCa: join(dir, 'other-ca.crt'),
    };
    beforeAll(() => {
      writeFileSync(files.cert, pki.certPem);
      writeFileSync(files.key, pki.keyPem);
      // A trailing comment line: served unchanged, so sha256sum of the file is what a job pins.
      writeFileSync(files.ca, `${pki.caPem}\n# operator CA\n`);
      writeFileSync(files.otherCa, makePki('unrelated CA').caPem);
    });
    const tls = (ca?: string) => ({
      tls: { cert: { file: files.cert }, key: { file: files.key }, ...(ca ? { ca: { file: ca } } : {}) },
    });

    it('tls.ca: serves that file unchanged', async () => {
      const gw = await startGw(tls(files.ca), 'tls-ca');
      try {
        const r = await curl(gw, '/v1/ca.crt', [], files.ca);
        expect(r.status).toBe(200);
        expect(r.body.equals(readFileSync(files.ca))).toBe(true);
        expect(r.headers['x-ciport-sha256']).toBe(sha256(readFileSync(files.ca)));
      } finally {
        await gw.close();
      }
    });

    it('no tls.ca: 404 CIPORT_E_CA_UNAVAILABLE', async () => {
      const gw = await startGw(tls(), 'tls-no-ca');
      try {
        const r = await curl(gw, '/v1/ca.crt', [], files.ca);
        expect(r.status).toBe(404);
        expect(r.headers['ciport-error']).toBe('CIPORT_E_CA_UNAVAILABLE');
      } finally {
        await gw.close();
      }
    });

    it('a tls.ca that does not issue tls.cert is refused at start', async () => {
      await expect(startGw(tls(files.otherCa), 'tls-wrong-ca')).rejects.toMatchObject({
        code: 'CIPORT_E_CONFIG_INVALID',
        message: expect.stringMatching(/tls\.ca: no certificate in .* issues/),
      });
    });
  });
});
