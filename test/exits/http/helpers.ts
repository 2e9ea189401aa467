// Fixtures of the HTTP exit tests: a private PKI made in-test (node:crypto keys, node-forge
// certificates), an HTTPS upstream on loopback that requires the injected credential and records
// what it saw, and a TCP listener standing in for the tunnel hop.
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import forge from 'node-forge';
import { Secret } from '../../../src/config/secret.js';
import {
  createHttpExit,
  type HttpExit,
  type HttpExitOptions,
  type HttpExitTarget,
  type HttpInjection,
  type HttpRequestEvent,
  type HttpUpstreamTls,
} from '../../../src/exits/http/index.js';

// ---- PKI ----------------------------------------------------------------------------------------

export interface Pki {
  caPem: string;
  certPem: string;
  keyPem: string;
}

function keyPair(): { privateKey: string; publicKey: string } {
  return generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
}

function newCert(publicPem: string, days = 1): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicPem);
  cert.serialNumber = `01${randomBytes(8).toString('hex')}`;
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + days * 86_400_000);
  return cert;
}

/** A throwaway CA and a server certificate for localhost / 127.0.0.1 signed by it. */
export function makePki(cn = 'ciport test CA'): Pki {
  const caKeys = keyPair();
  const caKey = forge.pki.privateKeyFromPem(caKeys.privateKey);
  const ca = newCert(caKeys.publicKey);
  const caSubject = [{ name: 'commonName', value: `${cn} ${randomBytes(3).toString('hex')}` }];
  ca.setSubject(caSubject);
  ca.setIssuer(caSubject);
  ca.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ]);
  ca.sign(caKey, forge.md.sha256.create());

  const leafKeys = keyPair();
  const leaf = newCert(leafKeys.publicKey);
  leaf.setSubject([{ name: 'commonName', value: 'localhost' }]);
  leaf.setIssuer(caSubject);
  leaf.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: [
        { type: 2, value: 'localhost' },
        { type: 7, ip: '127.0.0.1' },
      ],
    },
  ]);
  leaf.sign(caKey, forge.md.sha256.create());
  return {
    caPem: forge.pki.certificateToPem(ca),
    certPem: forge.pki.certificateToPem(leaf),
    keyPem: leafKeys.privateKey,
  };
}

// ---- upstream -------------------------------------------------------------------------------------

export interface SeenRequest {
  method: string;
  url: string;
  rawHeaders: string[];
}

export interface Upstream {
  port: number;
  address: string;
  server: HttpsServer;
  seen: SeenRequest[];
  /** Upgrade requests seen. */
  seenUpgrades: SeenRequest[];
  /** Body bytes the /upload-slow handler has read so far. */
  uploadRead: number;
  /** Let a paused /upload-slow handler read on. */
  releaseUpload(): void;
  /** Bytes the /download handler has written so far (accepted by res.write). */
  downloadWritten: number;
  /** SHA-256 (hex) of the last /download body, once written completely. */
  downloadSha: string | undefined;
  close(): Promise<void>;
}

/** All values of a header (case-insensitive) in a raw header list. */
export function rawValues(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() === name.toLowerCase()) out.push(raw[i + 1] as string);
  }
  return out;
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export function wsAccept(key: string): string {
  return createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');
}

/**
 * An HTTPS API on 127.0.0.1 that answers 401 unless the request carries exactly one
 * `auth.name` header equal to `auth.value`. Routes:
 *   GET  /hello            200 {"hello":"world"}
 *   POST /upload           streams and hashes the body: 200 {"sha256","bytes"}
 *   POST /upload-slow      like /upload, but pauses after 1 MiB until releaseUpload()
 *   POST /reject           (Expect: 100-continue) 413 without reading the body
 *   GET  /download?mib=N   N MiB of random bytes, written with backpressure
 *   GET  /slow             never answers
 *   GET  /flaky            destroys the connection when it is a reused one (keep-alive)
 *   upgrade websocket      RFC 6455 handshake, then echoes one text frame
 *   upgrade on /ws-refuse  403
 */
export async function startUpstream(pki: Pki, auth: { name: string; value: string }): Promise<Upstream> {
  let release: () => void = () => {};
  let released = new Promise<void>((r) => {
    release = r;
  });
  const served = new WeakMap<Socket, number>();
  const state: Upstream = {
    port: 0,
    address: '',
    server: undefined as unknown as HttpsServer,
    seen: [],
    seenUpgrades: [],
    uploadRead: 0,
    releaseUpload: () => release(),
    downloadWritten: 0,
    downloadSha: undefined,
    close: async () => {},
  };
  const authorized = (raw: string[]) => {
    const values = rawValues(raw, auth.name);
    return values.length === 1 && values[0] === auth.value;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    state.seen.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: [...req.rawHeaders] });
    const count = (served.get(req.socket) ?? 0) + 1;
    served.set(req.socket, count);
    const url = new URL(req.url ?? '/', 'https://upstream');
    if (!authorized(req.rawHeaders)) {
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' });
      res.end('{"error":"unauthorized"}');
      return;
    }
    switch (url.pathname) {
      case '/hello':
        res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'yes' });
        res.end(JSON.stringify({ hello: 'world' }));
        return;
      case '/empty':
        res.writeHead(204);
        res.end();
        return;
      case '/upload':
      case '/upload-slow': {
        const hash = createHash('sha256');
        let bytes = 0;
        let paused = false;
        for await (const chunk of req as AsyncIterable<Buffer>) {
          hash.update(chunk);
          bytes += chunk.length;
          state.uploadRead = bytes;
          if (url.pathname === '/upload-slow' && !paused && bytes >= 1024 * 1024) {
            paused = true;
            await released;
          }
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ sha256: hash.digest('hex'), bytes }));
        return;
      }
      case '/download': {
        const total = Number(url.searchParams.get('mib') ?? '1') * 1024 * 1024;
        const hash = createHash('sha256');
        state.downloadWritten = 0;
        state.downloadSha = undefined;
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
        const chunkSize = 64 * 1024;
        let gone = false;
        res.once('close', () => {
          gone = true;
          res.emit('drain');
        });
        while (state.downloadWritten < total) {
          const chunk = randomBytes(Math.min(chunkSize, total - state.downloadWritten));
          hash.update(chunk);
          state.downloadWritten += chunk.length;
          // Known before the last chunk leaves: a fast reader may finish before 'drain' fires.
          if (state.downloadWritten === total) state.downloadSha = hash.digest('hex');
          if (!res.write(chunk)) await once(res, 'drain');
          if (gone) return;
        }
        res.end();
        return;
      }
      case '/slow':
        return; // never answers
      case '/flaky':
        if (count > 1) {
          req.socket.destroy();
          return;
        }
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok');
        return;
      default:
        res.writeHead(404);
        res.end();
    }
  };

  const server = createHttpsServer({ key: pki.keyPem, cert: pki.certPem, keepAliveTimeout: 30_000 });
  server.on('request', (req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on('checkContinue', (req, res) => {
    if (req.url === '/reject') {
      state.seen.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: [...req.rawHeaders] });
      res.writeHead(413, { 'content-type': 'application/json', connection: 'close' });
      res.end('{"error":"too large"}');
      return;
    }
    res.writeContinue();
    server.emit('request', req, res);
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    state.seenUpgrades.push({
      method: req.method ?? '',
      url: req.url ?? '',
      rawHeaders: [...req.rawHeaders],
    });
    socket.on('error', () => socket.destroy());
    if (!authorized(req.rawHeaders) || req.url === '/ws-refuse') {
      const body = '{"error":"refused"}';
      socket.end(
        `HTTP/1.1 ${req.url === '/ws-refuse' ? '403 Forbidden' : '401 Unauthorized'}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    const key = rawValues(req.rawHeaders, 'sec-websocket-key')[0] ?? '';
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${wsAccept(key)}\r\n\r\n`,
    );
    let buf = head;
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      // One masked client frame, payload < 126 bytes: 2 header bytes, 4 mask bytes, payload.
      if (buf.length < 2) return;
      const len = (buf[1] as number) & 0x7f;
      if (buf.length < 6 + len) return;
      const mask = buf.subarray(2, 6);
      const payload = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ (mask[i % 4] as number)));
      buf = buf.subarray(6 + len);
      socket.write(Buffer.concat([Buffer.from([0x81, payload.length]), payload]));
    };
    socket.on('data', onData);
    if (head.length > 0) onData(Buffer.alloc(0));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  state.server = server;
  state.port = port;
  state.address = `127.0.0.1:${port}`;
  state.close = async () => {
    release();
    released = Promise.resolve();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return state;
}

// ---- the exit behind a TCP listener (stand-in for the tunnel hop) -----------------------------

export interface ExitListener {
  port: number;
  url: string;
  exit: HttpExit;
  events: HttpRequestEvent[];
  /** Resolves with the next event. */
  nextEvent(): Promise<HttpRequestEvent>;
  close(): Promise<void>;
}

export function secret(value: string, env = 'TEST_SECRET'): Secret {
  return new Secret({ env }, value);
}

export async function startExit(
  target: { name?: string; address: string; tls?: HttpUpstreamTls; injection: HttpInjection },
  options: HttpExitOptions = {},
): Promise<ExitListener> {
  const full: HttpExitTarget = { name: target.name ?? 'api', ...target };
  const exit = createHttpExit(full, options);
  const events: HttpRequestEvent[] = [];
  const waiters: ((e: HttpRequestEvent) => void)[] = [];
  const server: Server = createServer((sock) => {
    exit.serve(sock, {
      onRequest: (e) => {
        events.push(e);
        waiters.shift()?.(e);
      },
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    exit,
    events,
    nextEvent: () => new Promise((r) => waiters.push(r)),
    close: async () => {
      exit.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

// ---- clients --------------------------------------------------------------------------------------

export interface CurlResult {
  code: number;
  status: number;
  headers: string;
  body: string;
}

/** Run curl; `-sS`, response head written to a separate stream we parse. */
export function curl(args: string[]): Promise<CurlResult> {
  return new Promise((resolve, reject) => {
    execFile(
      'curl',
      ['-sS', '-D', '-', '--max-time', '20', ...args],
      { maxBuffer: 16 * 1024 * 1024, env: { PATH: process.env.PATH ?? '' } },
      (err, stdout) => {
        const code = err ? ((err as { code?: number }).code ?? 1) : 0;
        if (typeof code !== 'number') {
          reject(err);
          return;
        }
        // Head(s) then body; a 100 Continue head may come first.
        let rest = stdout;
        let head = '';
        while (/^HTTP\/[\d.]+ \d{3}/.test(rest)) {
          const end = rest.indexOf('\r\n\r\n');
          if (end < 0) break;
          head = rest.slice(0, end);
          rest = rest.slice(end + 4);
          if (!/^HTTP\/[\d.]+ 1\d\d/.test(head)) break;
        }
        const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(head)?.[1] ?? 0);
        resolve({ code, status, headers: head, body: rest });
      },
    );
  });
}
