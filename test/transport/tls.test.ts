// TLS material: a private CA and server certificate generated in data_dir (and reused), or the
// operator's certificate from `tls:`.
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseGatewayConfig } from '../../src/config/load.js';
import { startGateway } from '../../src/gateway/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { ensureGeneratedTls, loadTlsMaterial, serverNames } from '../../src/transport/tls.js';
import { api, Capture, connectClient, tempDir } from '../gateway/helpers.js';

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function dir(): string {
  const t = tempDir('ciport-tls-');
  cleanups.push(t.cleanup);
  return t.dir;
}

describe('generated TLS material', () => {
  it('creates a CA and a server certificate covering the gateway names, keys 0600', () => {
    const d = dir();
    const names = serverNames({ listen: '10.1.2.3:8443', public_url: 'https://ciport.example.com:8443' });
    expect(names).toEqual(
      expect.arrayContaining(['localhost', '127.0.0.1', '::1', '10.1.2.3', 'ciport.example.com']),
    );
    const m = ensureGeneratedTls(d, names);
    expect(m.origin).toBe('generated');
    expect(m.caFile).toBe(join(d, 'ca.crt'));
    expect(readFileSync(join(d, 'ca.crt'), 'utf8')).toBe(m.caPem);
    expect(statSync(join(d, 'ca.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(d, 'server.key')).mode & 0o777).toBe(0o600);

    const ca = new X509Certificate(m.caPem as string);
    const cert = new X509Certificate(m.cert);
    expect(ca.ca).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.checkIssued(ca)).toBe(true);
    for (const host of ['localhost', 'ciport.example.com']) expect(cert.checkHost(host)).toBe(host);
    for (const ip of ['127.0.0.1', '::1', '10.1.2.3']) expect(cert.checkIP(ip)).toBe(ip);
    expect(cert.checkHost('evil.example.com')).toBeUndefined();
    expect(m.key).not.toContain('ENCRYPTED');
  });

  it('reuses the material on restart, and reissues only the server certificate for new names', () => {
    const d = dir();
    const first = ensureGeneratedTls(d, ['localhost', '127.0.0.1']);
    const again = ensureGeneratedTls(d, ['localhost', '127.0.0.1']);
    expect(again.origin).toBe('reused');
    expect(again.cert).toBe(first.cert);
    expect(again.caPem).toBe(first.caPem);
    const moved = ensureGeneratedTls(d, ['localhost', '127.0.0.1', 'gw.example.net']);
    expect(moved.caPem).toBe(first.caPem);
    expect(moved.cert).not.toBe(first.cert);
    expect(new X509Certificate(moved.cert).checkHost('gw.example.net')).toBe('gw.example.net');
  });

  it('is what the gateway serves: a client trusting only ca.crt connects by name and by address', async () => {
    const d = dir();
    const stderr = new Capture();
    const cfg = parseGatewayConfig(stringify({ listen: '127.0.0.1:0', data_dir: d }), 'tls.yaml');
    const gw = await startGateway(cfg, { logger: silentLogger(), stderr });
    cleanups.push(() => gw.close());
    expect(stderr.text).toContain(join(d, 'ca.crt'));
    expect(stderr.text.trim().split('\n')).toHaveLength(1);
    const ca = readFileSync(join(d, 'ca.crt'), 'utf8');
    for (const url of [`https://localhost:${gw.port}`, `https://127.0.0.1:${gw.port}`]) {
      const c = await connectClient(url, ca);
      expect((await api(c, 'GET', '/healthz')).status).toBe(200);
      c.destroy();
    }
    // ALPN: h2 first, HTTP/1.1 accepted.
    for (const [offer, expected] of [
      [['h2', 'http/1.1'], 'h2'],
      [['http/1.1'], 'http/1.1'],
    ] as const) {
      const alpn = await new Promise<string | false | null>((resolve, reject) => {
        const s = tlsConnect({
          host: '127.0.0.1',
          port: gw.port,
          ca,
          ALPNProtocols: [...offer],
          servername: 'localhost',
        });
        s.once('secureConnect', () => {
          resolve(s.alpnProtocol);
          s.destroy();
        });
        s.once('error', reject);
      });
      expect(alpn).toBe(expected);
    }
  });
});

describe('configured TLS', () => {
  it('serves the operator certificate and generates nothing', async () => {
    const own = dir();
    const material = ensureGeneratedTls(own, ['localhost', '127.0.0.1']);
    const certFile = join(own, 'server.crt');
    const keyFile = join(own, 'server.key');
    const data = dir();
    const cfg = parseGatewayConfig(
      stringify({
        listen: '127.0.0.1:0',
        data_dir: data,
        tls: { cert: { file: certFile }, key: { file: keyFile } },
      }),
      'tls.yaml',
    );
    expect(loadTlsMaterial(cfg).origin).toBe('configured');
    const stderr = new Capture();
    const gw = await startGateway(cfg, { logger: silentLogger(), stderr });
    cleanups.push(() => gw.close());
    expect(gw.caPem).toBeUndefined();
    expect(stderr.text).toBe('');
    expect(() => statSync(join(data, 'ca.crt'))).toThrow();
    const c = await connectClient(`https://localhost:${gw.port}`, material.caPem);
    expect((await api(c, 'GET', '/healthz')).status).toBe(200);
    c.destroy();
  });

  it('fails at start with a configuration error for an unusable certificate', () => {
    const d = dir();
    writeFileSync(join(d, 'bad.crt'), 'not a certificate\n');
    writeFileSync(join(d, 'bad.key'), 'not a key\n');
    const cfg = parseGatewayConfig(
      stringify({
        data_dir: d,
        tls: { cert: { file: join(d, 'bad.crt') }, key: { file: join(d, 'bad.key') } },
      }),
      'tls.yaml',
    );
    expect(() => loadTlsMaterial(cfg)).toThrow(expect.objectContaining({ code: 'CIPORT_E_CONFIG_INVALID' }));
  });
});
