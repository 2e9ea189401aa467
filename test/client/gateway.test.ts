// The client's gateway connection against real sockets: TLS trust, unreachable gateways,
// error answers mapped to codes and exit codes.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorFromResponse, GatewayClient, gatewayUrl, trustedCas } from '../../src/client/gateway.js';
import { PortSession } from '../../src/client/session.js';
import { CiportError } from '../../src/errors/index.js';
import { FakeGateway } from '../fixtures/fake-gateway.js';

let gw: FakeGateway;
const dir = mkdtempSync(join(tmpdir(), 'ciport-gwclient-'));

beforeAll(async () => {
  gw = await FakeGateway.start({
    targets: [{ name: 'db', protocol: 'tcp', address: '127.0.0.1:9' }],
    tokens: { good: { allow: ['db'] }, denied: 'deny' },
  });
});
afterAll(async () => {
  await gw.close();
  rmSync(dir, { recursive: true, force: true });
});

function client(url = gw.url, opts: { trust?: boolean; connectTimeoutMs?: number } = {}) {
  const ca = opts.trust === false ? undefined : trustedCas({ CIPORT_CA_FILE: gw.caFile });
  return new GatewayClient({ url: new URL(url), ca, connectTimeoutMs: opts.connectTimeoutMs ?? 5000 });
}

async function failure(p: Promise<unknown>): Promise<CiportError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CiportError);
    return err as CiportError;
  }
  throw new Error('expected a failure');
}

async function listenRaw(onSocket: (s: Socket) => void): Promise<{ server: Server; url: string }> {
  const server = createServer(onSocket);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `https://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('gateway URL and trust', () => {
  it('takes --gateway, else CIPORT_GATEWAY, and insists on https', () => {
    expect(gatewayUrl({ gateway: 'https://gw:8443', env: { CIPORT_GATEWAY: 'https://other' } }).host).toBe(
      'gw:8443',
    );
    expect(gatewayUrl({ env: { CIPORT_GATEWAY: 'https://other' } }).host).toBe('other');
    expect(() => gatewayUrl({ env: {} })).toThrow(/CIPORT_GATEWAY/);
    expect(() => gatewayUrl({ gateway: 'http://gw', env: {} })).toThrow(/https/);
    expect(() => gatewayUrl({ gateway: 'https://u:p@gw', env: {} })).toThrow(/credentials/);
  });

  it('an unreadable or empty CIPORT_CA_FILE is a usage error (exit 2)', () => {
    const empty = join(dir, 'empty.pem');
    writeFileSync(empty, 'nothing here');
    for (const file of [join(dir, 'missing.pem'), empty]) {
      let err: unknown;
      try {
        trustedCas({ CIPORT_CA_FILE: file });
      } catch (e) {
        err = e;
      }
      expect((err as CiportError).exitCode).toBe(2);
    }
  });

  it('without the CA the handshake fails: CIPORT_E_TLS, exit 5, hint at CIPORT_CA_FILE', async () => {
    const c = client(gw.url, { trust: false });
    const err = await failure(c.connect());
    expect(err.code).toBe('CIPORT_E_TLS');
    expect(err.exitCode).toBe(5);
    expect(err.message).toMatch(/CIPORT_CA_FILE/);
    expect(err.message).not.toContain('\n');
    c.close();
  });

  it('a server that does not speak TLS: CIPORT_E_TLS', async () => {
    const { server, url } = await listenRaw((s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    try {
      const err = await failure(client(url).connect());
      expect(err.code).toBe('CIPORT_E_TLS');
    } finally {
      server.close();
    }
  });

  it('nothing listening: CIPORT_E_GATEWAY_UNREACHABLE, exit 5', async () => {
    const { server, url } = await listenRaw(() => {});
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const err = await failure(client(url).connect());
    expect(err.code).toBe('CIPORT_E_GATEWAY_UNREACHABLE');
    expect(err.exitCode).toBe(5);
    expect(err.message).toMatch(/ECONNREFUSED/);
  });

  it('a server that accepts and never answers: unreachable after the connect timeout', async () => {
    const sockets: Socket[] = [];
    const { server, url } = await listenRaw((s) => sockets.push(s));
    try {
      const started = Date.now();
      const err = await failure(client(url, { connectTimeoutMs: 300 }).connect());
      expect(err.code).toBe('CIPORT_E_GATEWAY_UNREACHABLE');
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      for (const s of sockets) s.destroy();
      server.close();
    }
  });
});

describe('session API', () => {
  it('creates a session, heartbeats and ends it with the secret as bearer', async () => {
    const c = client();
    const session = await PortSession.create(c, { token: 'good', targets: ['db'], ttl: '5m' });
    expect(session.info.targets).toEqual([{ name: 'db', protocol: 'tcp', ttl_ms: 600000 }]);
    expect(JSON.stringify(session)).not.toMatch(/cps_/);
    expect(JSON.stringify(session.info)).not.toMatch(/cps_/);
    const post = gw.requests.find((r) => r.method === 'POST' && r.path === '/v1/sessions');
    expect(post?.body).toEqual({ targets: ['db'], ttl: '5m' });
    expect(post?.authorization).toBe('Bearer good');
    expect(await session.heartbeat()).toBeUndefined();
    const fake = gw.sessions.get(session.id);
    expect(fake?.heartbeats).toBe(1);
    await session.end();
    expect(fake?.state).toBe('ended');
    expect(fake?.endReason).toBe('client_end');
    const del = gw.requests.find((r) => r.method === 'DELETE');
    expect(del?.authorization).toBe(`Bearer ${fake?.secret}`);
    c.close();
  });

  it('a heartbeat after the gateway ended the session reports why', async () => {
    const c = client();
    const session = await PortSession.create(c, { token: 'good', targets: [] });
    gw.end(session.id, 'revoked');
    const end = await session.heartbeat();
    expect(end?.reason).toBe('revoked');
    expect(end?.message).toMatch(/revoked by an operator/);
    c.close();
  });

  it('a denial keeps its code, exit 3, the explanation on one line, and the decision', async () => {
    const c = client();
    const err = await failure(PortSession.create(c, { token: 'denied', targets: ['db'] }));
    expect(err.code).toBe('CIPORT_E_POLICY_DENIED');
    expect(err.exitCode).toBe(3);
    expect(err.message).toBe(
      'no rule allows this token; nearest rule "main-only": ref_protected: expected true, got "false"',
    );
    expect(err.details?.decision).toMatchObject({ decision: 'deny' });
    c.close();
  });

  it('a rejected token keeps its code and exits 4', async () => {
    const c = client();
    const err = await failure(PortSession.create(c, { token: 'forged', targets: ['db'] }));
    expect(err.code).toBe('CIPORT_E_TOKEN_BAD_SIGNATURE');
    expect(err.exitCode).toBe(4);
    c.close();
  });

  it('maps codes this build does not know by HTTP status', () => {
    const e401 = errorFromResponse(
      { status: 401, headers: {}, body: { error: { code: 'CIPORT_E_FROM_THE_FUTURE', message: 'nope' } } },
      'POST /v1/sessions',
    );
    expect(e401.code).toBe('CIPORT_E_GATEWAY_RESPONSE');
    expect(e401.exitCode).toBe(4);
    expect(e401.message).toBe('CIPORT_E_FROM_THE_FUTURE: nope');
    expect(errorFromResponse({ status: 403, headers: {}, body: undefined }, 'x').exitCode).toBe(3);
    expect(errorFromResponse({ status: 502, headers: {}, body: 'html' }, 'x').exitCode).toBe(5);
    const fromHeader = errorFromResponse(
      { status: 429, headers: { 'ciport-error': 'CIPORT_E_RATE_LIMITED' }, body: {} },
      'x',
    );
    expect(fromHeader.code).toBe('CIPORT_E_RATE_LIMITED');
  });
});
