// Issue 15: an http target with `credentials: {aws_sigv4: …}`, at the exit (src/exits/http). The
// upstream is the AWS fixture, which re-signs every request with @smithy/signature-v4 and the
// credentials it knows: a 200 there means the exit's signature is what AWS would accept. The
// job's own Authorization and signing headers never reach it; bodies are hashed (buffered up to
// 8 MiB, 413 beyond), except S3 over TLS, which streams with UNSIGNED-PAYLOAD.
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curl, type ExitListener, makePki, startExit } from '../exits/http/helpers.js';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';

const ROLE = 'arn:aws:iam::123456789012:role/search-writer';
let aws: AwsFixture;
let api: ExitListener;
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  aws = await startAwsFixture();
  // The exit's credentials come from the SDK's provider chain: the environment, here.
  Object.assign(process.env, aws.env());
  api = await startExit({
    address: new URL(aws.url).host,
    injection: { kind: 'aws_sigv4', service: 'execute-api', region: 'eu-west-1' },
  });
});
afterAll(async () => {
  await api?.close();
  await aws?.stop();
});

const lastOf = (service: string) => aws.requests.filter((r) => r.service === service).at(-1);

describe('SigV4 signing at the exit', () => {
  it('a GET verifies as the base identity; the job’s Authorization and x-amz signing headers are replaced', async () => {
    const r = await curl([
      '-H',
      'Authorization: AWS4-HMAC-SHA256 Credential=AKIAJOBJOBJOB/20200101/eu-west-1/execute-api/aws4_request, SignedHeaders=host, Signature=00',
      '-H',
      'X-Amz-Date: 20200101T000000Z',
      '-H',
      'X-Amz-Security-Token: job-session-token',
      '-H',
      'X-Amz-Content-Sha256: UNSIGNED-PAYLOAD',
      '-H',
      'X-Amz-Target: Service.Operation',
      `${api.url}/prod/items?b=2&a=1&a=0&q=x%20y%2Bz`,
    ]);
    expect(r.status).toBe(200);
    const echo = JSON.parse(r.body);
    expect(echo.caller).toBe(aws.base.arn);
    expect(echo.query).toMatchObject({ b: '2', q: 'x y+z' });
    const seen = lastOf('execute-api');
    expect(seen?.caller?.arn).toBe(aws.base.arn);
    expect(seen?.headers.authorization).toContain(`Credential=${aws.base.accessKeyId}/`);
    expect(seen?.headers.authorization).toMatch(/SignedHeaders=[^,]*x-amz-target/);
    expect(seen?.headers['x-amz-date']).not.toBe('20200101T000000Z');
    expect(seen?.headers['x-amz-security-token']).toBeUndefined();
    expect(seen?.headers['x-amz-content-sha256']).toBe(sha(''));
    expect(seen?.headers['x-amz-target']).toBe('Service.Operation');
    expect(JSON.stringify(seen?.headers)).not.toContain('AKIAJOBJOBJOB');
  });

  it('a POST body (Content-Length, chunked, Expect: 100-continue) is hashed into the signature', async () => {
    const small = await curl(['-X', 'POST', '--data-binary', '{"hello":"world"}', `${api.url}/prod/items`]);
    expect(small.status).toBe(200);
    expect(JSON.parse(small.body).body).toBe('{"hello":"world"}');
    expect(lastOf('execute-api')?.headers['x-amz-content-sha256']).toBe(sha('{"hello":"world"}'));

    const chunked = await curl([
      '-X',
      'PUT',
      '-H',
      'Transfer-Encoding: chunked',
      '--data-binary',
      'chunk-one-chunk-two',
      `${api.url}/prod/items/1`,
    ]);
    expect(chunked.status).toBe(200);
    expect(JSON.parse(chunked.body).body).toBe('chunk-one-chunk-two');

    const big = Buffer.alloc(2 * 1024 * 1024, 'x').toString();
    const file = join(mkdtempSync(join(tmpdir(), 'ciport-sigv4-')), 'big.json');
    writeFileSync(file, big);
    const expect100 = await curl([
      '-X',
      'POST',
      '-H',
      'Expect: 100-continue',
      '--data-binary',
      `@${file}`,
      `${api.url}/prod/big`,
    ]);
    expect(expect100.headers).toMatch(/^HTTP\/1\.1 200/);
    expect(JSON.parse(expect100.body).body).toHaveLength(big.length);
    expect(api.events.at(-1)).toMatchObject({
      method: 'POST',
      path: '/prod/big',
      status: 200,
      bytes_in: big.length,
    });
  });

  it('a body over 8 MiB is refused with 413 CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE, announced or chunked', async () => {
    const before = aws.requests.length;
    const body = Buffer.alloc(8 * 1024 * 1024 + 1, 'y');
    const post = (headers: Record<string, string>) =>
      fetch(`${api.url}/prod/upload`, { method: 'POST', headers, body, duplex: 'half' } as RequestInit);
    const announced = await post({ 'content-type': 'application/octet-stream' });
    expect(announced.status).toBe(413);
    expect(announced.headers.get('ciport-error')).toBe('CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE');
    expect(((await announced.json()) as { error: { code: string } }).error.code).toBe(
      'CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE',
    );
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < body.length; i += 1 << 20) c.enqueue(body.subarray(i, i + (1 << 20)));
        c.close();
      },
    });
    const chunked = await fetch(`${api.url}/prod/upload`, {
      method: 'POST',
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(chunked.headers.get('ciport-error')).toBe('CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE');
    expect(aws.requests.length).toBe(before);
    const refused = api.events.filter((e) => e.error === 'CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE');
    expect(refused.map((e) => e.status)).toEqual([413, 413]);
    // Just under the bound still passes.
    const ok = await fetch(`${api.url}/prod/upload`, { method: 'POST', body: body.subarray(1) });
    expect(ok.status).toBe(200);
  });

  it('an Upgrade (WebSocket) request is signed too, then relayed both ways', async () => {
    const socket = connect(api.port, '127.0.0.1');
    socket.write(
      'GET /prod/ws?stage=1 HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Authorization: Bearer job-token\r\nX-Amz-Date: 20200101T000000Z\r\n\r\n',
    );
    let received = '';
    const until = (text: string) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (received.includes(text)) {
            socket.off('data', onData);
            resolve();
          }
        };
        const onData = (d: Buffer) => {
          received += d.toString('latin1');
          check();
        };
        socket.on('data', onData);
        socket.once('close', () => reject(new Error(`closed before ${text}: ${received}`)));
        check();
      });
    await until('\r\n\r\n');
    expect(received).toMatch(/^HTTP\/1\.1 101 /);
    socket.write('ping-through-the-upgrade');
    await until('ping-through-the-upgrade');
    socket.destroy();
    const seen = lastOf('execute-api');
    expect(seen).toMatchObject({ path: '/prod/ws', caller: { arn: aws.base.arn } });
    expect(seen?.headers.authorization).not.toContain('job-token');
  });

  it('hundreds of requests on kept-alive connections all verify', async () => {
    const before = aws.verified('execute-api').length;
    const results = await Promise.all(
      Array.from({ length: 8 }, async (_, worker) => {
        const statuses: number[] = [];
        for (let i = 0; i < 40; i++) {
          const r = await fetch(`${api.url}/prod/n/${worker}/${i}?i=${i}`, {
            method: i % 2 ? 'POST' : 'GET',
            ...(i % 2 ? { body: `body-${worker}-${i}` } : {}),
          });
          await r.arrayBuffer();
          statuses.push(r.status);
        }
        return statuses;
      }),
    );
    expect(results.flat().filter((s) => s !== 200)).toEqual([]);
    expect(aws.verified('execute-api').length - before).toBe(320);
  });
});

describe('S3', () => {
  let tlsFront: TlsServer;
  let s3Tls: ExitListener;
  let s3Plain: ExitListener;

  beforeAll(async () => {
    // TLS in front of the fixture (it speaks plain HTTP): S3 over TLS, as the exit sees it.
    const pki = makePki();
    const fixturePort = Number(new URL(aws.url).port);
    tlsFront = createTlsServer({ key: pki.keyPem, cert: pki.certPem }, (s) => {
      const up = connect(fixturePort, '127.0.0.1');
      s.on('error', () => up.destroy());
      up.on('error', () => s.destroy());
      s.pipe(up).pipe(s);
    });
    await new Promise<void>((r) => tlsFront.listen(0, '127.0.0.1', () => r()));
    const port = (tlsFront.address() as { port: number }).port;
    s3Tls = await startExit({
      name: 's3tls',
      address: `localhost:${port}`,
      tls: { ca: pki.caPem },
      injection: { kind: 'aws_sigv4', service: 's3', region: 'eu-west-1' },
    });
    s3Plain = await startExit({
      name: 's3plain',
      address: new URL(aws.url).host,
      injection: { kind: 'aws_sigv4', service: 's3', region: 'eu-west-1' },
    });
    aws.buckets.set('artifacts', new Map());
  });
  afterAll(async () => {
    await s3Tls?.close();
    await s3Plain?.close();
    await new Promise<void>((r) => (tlsFront ? tlsFront.close(() => r()) : r()));
  });

  it('over TLS a 9 MiB object streams with UNSIGNED-PAYLOAD (above the buffering bound)', async () => {
    const body = Buffer.alloc(9 * 1024 * 1024, 'z');
    const put = await fetch(`${s3Tls.url}/artifacts/big.bin`, { method: 'PUT', body });
    expect(put.status).toBe(200);
    const seen = lastOf('s3');
    expect(seen?.caller?.arn).toBe(aws.base.arn);
    expect(seen?.headers['x-amz-content-sha256']).toBe('UNSIGNED-PAYLOAD');
    expect(sha(aws.buckets.get('artifacts')?.get('big.bin') ?? '')).toBe(sha(body));
    const get = await fetch(`${s3Tls.url}/artifacts/big.bin`);
    expect(sha(Buffer.from(await get.arrayBuffer()))).toBe(sha(body));
  });

  it('over plain HTTP the body is hashed into the signature instead', async () => {
    const put = await fetch(`${s3Plain.url}/artifacts/small.txt`, { method: 'PUT', body: 'small' });
    expect(put.status).toBe(200);
    expect(lastOf('s3')?.headers['x-amz-content-sha256']).toBe(sha('small'));
    expect(aws.buckets.get('artifacts')?.get('small.txt')?.toString()).toBe('small');
  });
});

describe('with a role', () => {
  let viaRole: ExitListener;
  let denied: ExitListener;
  beforeAll(async () => {
    viaRole = await startExit({
      name: 'search',
      address: new URL(aws.url).host,
      injection: { kind: 'aws_sigv4', service: 'es', region: 'eu-west-1', role: ROLE },
    });
    denied = await startExit({
      name: 'other',
      address: new URL(aws.url).host,
      // Not a role ARN the fixture's STS accepts: AssumeRole is refused (AccessDenied).
      injection: {
        kind: 'aws_sigv4',
        service: 'es',
        region: 'eu-west-1',
        role: 'arn:aws:iam::123456789012:role/',
      },
    });
  });
  afterAll(async () => {
    await viaRole?.close();
    await denied?.close();
  });

  it('requests are signed with the assumed role, assumed once for many requests', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${viaRole.url}/_search`, { method: 'POST', body: '{"query":{}}' });
      expect(r.status).toBe(200);
      expect(((await r.json()) as { caller: string }).caller).toBe(
        'arn:aws:sts::123456789012:assumed-role/search-writer/ciport-search',
      );
    }
    const assumed = aws.assumed.filter((a) => a.roleArn === ROLE);
    expect(assumed).toHaveLength(1);
    expect(assumed[0]).toMatchObject({ roleSessionName: 'ciport-search', caller: aws.base.arn });
  });

  it('a role that cannot be assumed is a 502 CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE, and the exit goes on', async () => {
    const before = aws.requests.filter((r) => r.service === 'es').length;
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`${denied.url}/_search`);
      expect(r.status).toBe(502);
      expect(r.headers.get('ciport-error')).toBe('CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE');
      const text = await r.text();
      expect(text).toMatch(/target other: role arn:aws:iam::123456789012:role\/ could not be obtained/);
      expect(text).not.toContain(aws.base.secretAccessKey);
    }
    expect(aws.requests.filter((r) => r.service === 'es').length).toBe(before);
    expect((await fetch(`${viaRole.url}/_search`)).status).toBe(200);
  });
});
