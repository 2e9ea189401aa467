// The client's loopback container-credentials endpoint on its own, fed by a real loopback
// listener: the token gate (the tunnel is never opened for a missing or wrong token), relaying the
// exit's answer, and closing while a request is in flight (answered 410, then nothing listens).
import { createServer, type Server } from 'node:net';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { AwsEndpoint, LOCAL_CREDENTIALS_PATH } from '../../src/client/aws-endpoint.js';

const TOKEN = 'tok-0123456789abcdefghijklmnopqrstuvwxyz';
let server: Server | undefined;

afterEach(() => server?.close());

/** An endpoint behind a loopback listener; `open` is what the tunnel would be. */
async function endpoint(open: () => Promise<unknown>) {
  let opened = 0;
  const ep = new AwsEndpoint({
    target: 'deploy',
    token: TOKEN,
    open: () => {
      opened++;
      return open() as never;
    },
    warn: () => {},
  });
  server = createServer({ pauseOnConnect: true }, (socket) => ep.accept(socket));
  await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}${LOCAL_CREDENTIALS_PATH}`;
  return { ep, url, opened: () => opened };
}

/** A stand-in tunnel stream whose far end answers `answer` once it has the request. */
function tunnel(answer: string) {
  const stream = new PassThrough();
  const fake = Object.assign(stream, {
    close: () => stream.destroy(),
    end: (chunk: string) => {
      expect(chunk).toMatch(/^GET \/v1\/aws\/credentials HTTP\/1\.1\r\n/);
      setImmediate(() => {
        stream.push(answer);
        stream.push(null);
      });
      return fake;
    },
  });
  return fake;
}

describe('the loopback credentials endpoint', () => {
  it('refuses a missing or wrong token without opening a tunnel', async () => {
    const { url, opened } = await endpoint(async () => {
      throw new Error('must not be called');
    });
    const missing = await fetch(url);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('ciport-error')).toBe('CIPORT_E_AWS_AUTHORIZATION_MISSING');
    for (const wrong of [`${TOKEN}x`, TOKEN.slice(1), 'Bearer x', TOKEN.toUpperCase()]) {
      const r = await fetch(url, { headers: { Authorization: wrong } });
      expect(r.status).toBe(403);
      expect(r.headers.get('ciport-error')).toBe('CIPORT_E_AWS_AUTHORIZATION_WRONG');
    }
    expect(
      (await fetch(url.replace('/aws/credentials', '/other'), { headers: { Authorization: TOKEN } })).status,
    ).toBe(404);
    expect(opened()).toBe(0);
  });

  it("relays the exit's answer, status and code included", async () => {
    const body =
      '{"AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2026-01-01T00:00:00Z"}';
    const ok = await endpoint(async () =>
      tunnel(
        `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      ),
    );
    const r = await fetch(ok.url, { headers: { Authorization: TOKEN } });
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(await r.text()).toBe(body);
    server?.close();
    const err = '{"error":{"code":"CIPORT_E_AWS_ASSUME_ROLE_DENIED","message":"no"}}';
    const denied = await endpoint(async () =>
      tunnel(`HTTP/1.1 403 Error\r\nciport-error: CIPORT_E_AWS_ASSUME_ROLE_DENIED\r\n\r\n${err}`),
    );
    const d = await fetch(denied.url, { headers: { Authorization: TOKEN } });
    expect(d.status).toBe(403);
    expect(d.headers.get('ciport-error')).toBe('CIPORT_E_AWS_ASSUME_ROLE_DENIED');
    expect(await d.text()).toBe(err);
  });

  it('closing answers a request in flight with 410 CIPORT_E_SESSION_ENDED and stops serving', async () => {
    let reached: () => void = () => {};
    const inFlight = new Promise<void>((r) => {
      reached = r;
    });
    const { ep, url } = await endpoint(() => {
      reached();
      return new Promise(() => {}); // the tunnel never opens
    });
    const pending = fetch(url, { headers: { Authorization: TOKEN } });
    await inFlight;
    await ep.close();
    const r = await pending;
    expect(r.status).toBe(410);
    expect(r.headers.get('ciport-error')).toBe('CIPORT_E_SESSION_ENDED');
    const after = await fetch(url, { headers: { Authorization: TOKEN } }).then(
      (x) => x.status,
      () => 'refused',
    );
    expect(after === 'refused' || after === 410).toBe(true);
  });
});
