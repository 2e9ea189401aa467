// TLS material for the gateway's one port. With `tls:` in the config the operator's certificate
// and key are used as given. Without it, a private CA and a server certificate signed by it are
// generated in `data_dir` on first start and reused afterwards; clients trust the CA through
// CIPORT_CA_FILE=<data_dir>/ca.crt. Keys are RSA-2048, generated natively by node:crypto (fast)
// and signed with node-forge (Node has no certificate builder).
import { createPrivateKey, generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import forge from 'node-forge';
import type { GatewayConfig } from '../config/schema.js';
import { ConfigError } from '../errors/index.js';

export interface TlsMaterial {
  /** PEM certificate chain the server presents. */
  cert: string;
  /** PEM private key of `cert`. */
  key: string;
  /** PEM of the generated CA, when ciport generated the material (undefined with `tls:`). */
  caPem: string | undefined;
  /** Path of the generated CA certificate (`<data_dir>/ca.crt`), when generated. */
  caFile: string | undefined;
  /** What happened, for the one line the gateway prints at start. */
  origin: 'configured' | 'generated' | 'reused';
  /**
   * The bytes `GET /v1/ca.crt` serves: the generated CA file, or the file of `tls.ca` as it is
   * on disk (so `sha256sum` of that file is the fingerprint a job pins). Undefined with `tls:`
   * and no `tls.ca`.
   */
  publishedCa: Buffer | undefined;
}

export const CA_FILE = 'ca.crt';
const CA_KEY_FILE = 'ca.key';
const SERVER_CERT_FILE = 'server.crt';
const SERVER_KEY_FILE = 'server.key';

const CA_VALIDITY_DAYS = 3650;
const SERVER_VALIDITY_DAYS = 397;
/** A server certificate this close to its end is renewed at start. */
const RENEW_BEFORE_MS = 30 * 86_400_000;

/** The certificate and key the gateway serves with, from the config or from data_dir. */
export function loadTlsMaterial(cfg: Readonly<GatewayConfig>): TlsMaterial {
  if (cfg.tls) {
    const cert = cfg.tls.cert.reveal();
    const key = cfg.tls.key.reveal();
    try {
      createPrivateKey(key);
      new X509Certificate(cert);
    } catch (err) {
      throw new ConfigError(
        'CIPORT_E_CONFIG_INVALID',
        `tls: cannot use the configured certificate/key (${(err as Error).message})`,
        {
          cause: err,
        },
      );
    }
    const publishedCa = cfg.tls.ca ? configuredCa(cfg.tls.ca.file, cert) : undefined;
    return { cert, key, caPem: undefined, caFile: undefined, origin: 'configured', publishedCa };
  }
  return ensureGeneratedTls(cfg.data_dir, serverNames(cfg));
}

/**
 * `tls.ca`: read once, and refused unless one of its certificates issues the served chain (a
 * job that pins and trusts it must then be able to verify the gateway).
 */
function configuredCa(file: string, chainPem: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `tls.ca: cannot read ${file} (${reason})`);
  }
  let cas: X509Certificate[];
  let chain: X509Certificate[];
  try {
    cas = pemCertificates(bytes.toString('utf8'));
    chain = pemCertificates(chainPem);
  } catch (err) {
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `tls.ca: ${file}: ${(err as Error).message}`);
  }
  if (cas.length === 0) {
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `tls.ca: ${file} holds no PEM certificate`);
  }
  if (!chainsTo(chain, cas)) {
    throw new ConfigError(
      'CIPORT_E_CONFIG_INVALID',
      `tls.ca: no certificate in ${file} issues the certificate chain of tls.cert`,
    );
  }
  return bytes;
}

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

function pemCertificates(pem: string): X509Certificate[] {
  return (pem.match(PEM_CERT_RE) ?? []).map((block) => new X509Certificate(block));
}

/** Whether the leaf of `chain`, through the chain's own intermediates, is signed by one of `cas`. */
function chainsTo(chain: X509Certificate[], cas: X509Certificate[]): boolean {
  const signedBy = (cert: X509Certificate, by: X509Certificate) =>
    cert.checkIssued(by) && cert.verify(by.publicKey);
  let current = chain[0];
  for (let depth = 0; current && depth <= chain.length; depth++) {
    const cert: X509Certificate = current;
    if (cas.some((ca) => ca.fingerprint256 === cert.fingerprint256 || signedBy(cert, ca))) return true;
    current = chain.find((c) => c !== cert && signedBy(cert, c));
  }
  return false;
}

/** Host names and addresses the generated server certificate must cover. */
export function serverNames(cfg: Pick<GatewayConfig, 'listen' | 'public_url'>): string[] {
  const names = new Set<string>(['localhost', '127.0.0.1', '::1']);
  const listenHost = hostOf(cfg.listen);
  if (listenHost === '0.0.0.0' || listenHost === '::') names.add(hostname());
  else names.add(listenHost);
  if (cfg.public_url) names.add(new URL(cfg.public_url).hostname.replace(/^\[|\]$/g, ''));
  return [...names].filter((n) => n !== '');
}

function hostOf(hostPort: string): string {
  const i = hostPort.lastIndexOf(':');
  return hostPort.slice(0, i).replace(/^\[|\]$/g, '');
}

/**
 * Generate (or reuse) a CA and a server certificate for `names` under `dir`. The CA is kept for
 * as long as it exists, so clients keep trusting it; the server certificate is reissued when it
 * no longer covers `names` or is about to expire.
 */
export function ensureGeneratedTls(dir: string, names: string[]): TlsMaterial {
  const root = resolve(dir);
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const caFile = join(root, CA_FILE);
  const caKeyFile = join(root, CA_KEY_FILE);
  const certFile = join(root, SERVER_CERT_FILE);
  const keyFile = join(root, SERVER_KEY_FILE);

  let origin: TlsMaterial['origin'] = 'reused';
  let caPem: string;
  let caKeyPem: string;
  if (existsSync(caFile) && existsSync(caKeyFile)) {
    caPem = readFileSync(caFile, 'utf8');
    caKeyPem = readFileSync(caKeyFile, 'utf8');
  } else {
    const ca = createCa();
    caPem = ca.cert;
    caKeyPem = ca.key;
    writeAtomic(caKeyFile, caKeyPem, 0o600);
    writeAtomic(caFile, caPem, 0o644);
    origin = 'generated';
  }

  let cert: string | undefined;
  let key: string | undefined;
  if (origin === 'reused' && existsSync(certFile) && existsSync(keyFile)) {
    cert = readFileSync(certFile, 'utf8');
    key = readFileSync(keyFile, 'utf8');
    if (!serverCertUsable(cert, caPem, names)) {
      cert = undefined;
      key = undefined;
    }
  }
  if (cert === undefined || key === undefined) {
    const issued = issueServerCert(caPem, caKeyPem, names);
    cert = issued.cert;
    key = issued.key;
    writeAtomic(keyFile, key, 0o600);
    writeAtomic(certFile, cert, 0o644);
    if (origin === 'reused') origin = 'generated';
  }
  return { cert, key, caPem, caFile, origin, publishedCa: Buffer.from(caPem) };
}

function serverCertUsable(certPem: string, caPem: string, names: string[]): boolean {
  try {
    const cert = new X509Certificate(certPem);
    const ca = new X509Certificate(caPem);
    if (!cert.verify(ca.publicKey)) return false;
    if (Date.parse(cert.validTo) - Date.now() < RENEW_BEFORE_MS) return false;
    const san = cert.subjectAltName ?? '';
    return names.every((n) =>
      isIP(n) ? cert.checkIP(n) !== undefined : san.includes(`DNS:${n}`) || cert.checkHost(n) !== undefined,
    );
  } catch {
    return false;
  }
}

function rsaKeyPair(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { privatePem: privateKey, publicPem: publicKey };
}

function serial(): string {
  // Positive 128-bit serial: clear the top bit.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] as number) & 0x7f;
  return bytes.toString('hex');
}

function validity(cert: forge.pki.Certificate, days: number): void {
  const notBefore = new Date(Date.now() - 5 * 60_000); // tolerate small clock skew
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = new Date(notBefore.getTime() + days * 86_400_000);
}

function createCa(): { cert: string; key: string } {
  const pair = rsaKeyPair();
  const key = forge.pki.privateKeyFromPem(pair.privatePem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(pair.publicPem);
  cert.serialNumber = serial();
  validity(cert, CA_VALIDITY_DAYS);
  const subject = [
    { name: 'commonName', value: `ciport private CA ${randomBytes(4).toString('hex')}` },
    { name: 'organizationName', value: 'ciport' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(key, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: pair.privatePem };
}

function issueServerCert(caPem: string, caKeyPem: string, names: string[]): { cert: string; key: string } {
  const ca = forge.pki.certificateFromPem(caPem);
  const caKey = forge.pki.privateKeyFromPem(caKeyPem);
  const pair = rsaKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(pair.publicPem);
  cert.serialNumber = serial();
  validity(cert, SERVER_VALIDITY_DAYS);
  const dnsFirst = names.find((n) => isIP(n) === 0) ?? names[0] ?? 'localhost';
  cert.setSubject([{ name: 'commonName', value: dnsFirst }]);
  cert.setIssuer(ca.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: names.map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })),
    },
    { name: 'subjectKeyIdentifier' },
    {
      name: 'authorityKeyIdentifier',
      keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes(),
    },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: pair.privatePem };
}

function writeAtomic(file: string, content: string, mode: number): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, file);
}
