// SSH key and certificate formats, through sshpk (Joyent's maintained library): parsing public
// key lines, writing OpenSSH private keys, and signing OpenSSH user certificates. Nothing here
// hand-rolls a wire format; the only bytes built here are the value of a critical option, which
// PROTOCOL.certkeys defines as an SSH string (sshpk carries option values opaquely).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import sshpk from 'sshpk';

/** The extensions a certificate may carry (PROTOCOL.certkeys); ciport grants only these. */
export const SSH_EXTENSIONS = [
  'permit-pty',
  'permit-port-forwarding',
  'permit-agent-forwarding',
  'permit-X11-forwarding',
  'permit-user-rc',
] as const;
export type SshExtension = (typeof SSH_EXTENSIONS)[number];

/** What a rule's `ssh.<target>.permit` names: the extension without its `permit-` prefix. */
export const SSH_PERMITS = [
  'pty',
  'port-forwarding',
  'agent-forwarding',
  'X11-forwarding',
  'user-rc',
] as const;
export type SshPermit = (typeof SSH_PERMITS)[number];

/** A principal (login name): no whitespace, commas or control characters (sshd splits on them). */
export const SSH_PRINCIPAL_RE = /^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$/;

/**
 * The principal a certificate carries for `login` on `target`: `ciport:<target>:<login>`. An
 * OpenSSH certificate names login names only, no host: a bare `root` signed for db1 would log
 * in as root on every host whose AuthorizedPrincipalsFile lists root for another target's jobs.
 * Scoped, a host lists per user the targets it is (`ciport:web1:deploy` in auth_principals/deploy)
 * and a certificate for db1 matches nothing there. sshd compares the lines as plain strings (`:`
 * means nothing to it; only whitespace splits off options, and commas a certificate's list).
 */
export function certificatePrincipal(target: string, login: string): string {
  return `ciport:${target}:${login}`;
}

/** A public key line `ssh-ed25519 AAAA… [comment]`: its key, or an error message. */
export function parsePublicKeyLine(line: string): sshpk.Key | string {
  try {
    const key = sshpk.parseKey(line.trim(), 'ssh');
    if (key.type === 'dsa') return 'DSA keys are not accepted';
    if (key.type === 'rsa' && key.size < 2048) return `an RSA key of ${key.size} bits is too short`;
    return key;
  } catch (err) {
    return `not an OpenSSH public key line (${(err as Error).message})`;
  }
}

/** `ssh-ed25519 AAAA…` without a comment: what known_hosts and authorized files take. */
export function publicKeyLine(key: sshpk.Key): string {
  return key.toString('ssh').split(' ').slice(0, 2).join(' ');
}

/** A new Ed25519 key pair: the private key in OpenSSH format (for a 0600 file), the public line. */
export function generateEd25519(comment: string): { privateOpenssh: string; publicLine: string } {
  const { privateKey } = generateKeyPairSync('ed25519');
  const key = sshpk.parsePrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' }), 'pkcs8');
  key.comment = comment;
  return { privateOpenssh: key.toString('openssh'), publicLine: publicKeyLine(key.toPublic()) };
}

/** An Ed25519 private key from OpenSSH or PKCS#8 PEM text (a CA key). */
export function parseEd25519Private(text: string): sshpk.PrivateKey | string {
  try {
    const key = sshpk.parsePrivateKey(text, 'auto');
    return key.type === 'ed25519' ? key : `an ${key.type} key (the CA must be Ed25519)`;
  } catch (err) {
    return `not an OpenSSH or PKCS#8 private key (${(err as Error).message})`;
  }
}

export interface UserCertificateRequest {
  /** The job's public key. */
  subject: sshpk.Key;
  keyId: string;
  principals: string[];
  validAfter: Date;
  validBefore: Date;
  extensions: SshExtension[];
  /** `source-address` critical option: CIDR list (absent: any address). */
  sourceAddress?: string[] | undefined;
}

export interface SignedCertificate {
  /** The certificate line `ssh-ed25519-cert-v01@openssh.com AAAA…` (what `CertificateFile` holds). */
  line: string;
  /** Decimal, as `ssh-keygen -L` and sshd's log show it. */
  serial: string;
}

/** An SSH string (uint32 length, bytes): the value of a critical option (PROTOCOL.certkeys). */
function sshString(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const out = Buffer.alloc(4 + bytes.length);
  out.writeUInt32BE(bytes.length, 0);
  bytes.copy(out, 4);
  return out;
}

/**
 * Sign an OpenSSH user certificate with `ca`. Built as sshpk's own Certificate and signed by its
 * openssh format alone (Certificate.create would also sign an X.509 form, which user principals
 * cannot have); options and extensions in lexical order, as OpenSSH writes them.
 */
export function signUserCertificate(
  ca: sshpk.PrivateKey,
  request: UserCertificateRequest,
): SignedCertificate {
  const serial = randomBytes(8);
  serial[0] = (serial[0] as number) & 0x7f;
  const critical = request.sourceAddress?.length
    ? [{ critical: true, name: 'source-address', data: sshString(request.sourceAddress.join(',')) }]
    : [];
  const extensions = [...new Set(request.extensions)]
    .sort()
    .map((name) => ({ critical: false, name, data: Buffer.alloc(0) }));
  const cert = new sshpk.Certificate({
    subjects: request.principals.map((p) => sshpk.identityForUser(p)),
    // OpenSSH certificates name no issuer (only its key): sshpk reads them with this wildcard.
    issuer: sshpk.identityForHost('**'),
    subjectKey: request.subject,
    issuerKey: ca.toPublic(),
    signatures: { openssh: { keyId: request.keyId, exts: [...critical, ...extensions] } },
    serial,
    validFrom: request.validAfter,
    validUntil: request.validBefore,
  } as unknown as sshpk.CertificateOptions);
  const formats = sshpk.Certificate.formats as unknown as Record<
    string,
    { sign(cert: sshpk.Certificate, key: sshpk.PrivateKey): boolean }
  >;
  if (!formats.openssh?.sign(cert, ca)) throw new Error('sshpk could not sign the OpenSSH certificate');
  return { line: cert.toString('openssh'), serial: serial.readBigUInt64BE(0).toString() };
}

/** `SHA256:…` fingerprint, as ssh-keygen -l prints it. */
export function fingerprint(key: sshpk.Key): string {
  return key.fingerprint('sha256').toString();
}
