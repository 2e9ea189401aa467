// SSH key and certificate formats through sshpk: what the gateway signs is what OpenSSH reads
// (checked with ssh-keygen -L), and what an agent advertises is checked before it is signed with.
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  generateEd25519,
  parseEd25519Private,
  parsePublicKeyLine,
  signUserCertificate,
} from '../../src/credentials/ssh-keys.js';
import { advertisedSshInfo } from '../../src/exits/ssh/advertised.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-ssh-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function key(line: string) {
  const parsed = parsePublicKeyLine(line);
  if (typeof parsed === 'string') throw new Error(parsed);
  return parsed;
}

describe('signUserCertificate', () => {
  it('writes an OpenSSH user certificate with the key id, principals, validity, options and extensions asked for', () => {
    const ca = parseEd25519Private(generateEd25519('ca').privateOpenssh);
    if (typeof ca === 'string') throw new Error(ca);
    const job = generateEd25519('job');
    const validAfter = new Date('2030-01-02T03:04:00Z');
    const validBefore = new Date('2030-01-02T03:19:00Z');
    const signed = signUserCertificate(ca, {
      subject: key(job.publicLine),
      keyId: 'ciport session=ses_x project=acme/ledger',
      principals: ['deploy', 'git'],
      validAfter,
      validBefore,
      extensions: ['permit-port-forwarding', 'permit-pty'],
      sourceAddress: ['10.0.0.5/32', '10.1.0.0/16'],
    });
    expect(signed.line).toMatch(/^ssh-ed25519-cert-v01@openssh\.com [A-Za-z0-9+/=]+$/);
    writeFileSync(join(dir, 'job-cert.pub'), `${signed.line}\n`);
    const shown = execFileSync('ssh-keygen', ['-L', '-f', join(dir, 'job-cert.pub')], {
      encoding: 'utf8',
      env: { ...process.env, TZ: 'UTC' },
    });
    expect(shown).toContain('user certificate');
    expect(shown).toContain('Key ID: "ciport session=ses_x project=acme/ledger"');
    expect(shown).toContain(`Serial: ${signed.serial}`);
    expect(shown).toContain('Valid: from 2030-01-02T03:04:00 to 2030-01-02T03:19:00');
    expect(shown).toMatch(/Principals: \n\s+deploy\n\s+git\n/);
    expect(shown).toMatch(/Critical Options: \n\s+source-address 10\.0\.0\.5\/32,10\.1\.0\.0\/16\n/);
    expect(shown).toMatch(/Extensions: \n\s+permit-port-forwarding\n\s+permit-pty\n/);
    expect(shown).not.toContain('permit-agent-forwarding');
  });

  it('refuses CA keys that are not Ed25519 and public keys that are weak or not keys', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    expect(parseEd25519Private(rsa)).toBe('an rsa key (the CA must be Ed25519)');
    expect(parsePublicKeyLine('ssh-ed25519 AAAAnope')).toMatch(/^not an OpenSSH public key line/);
  });
});

describe('advertisedSshInfo', () => {
  const line = generateEd25519('host').publicLine;
  const good = { principals: ['deploy'], host_keys: [line], host_key_alias: 'web1.internal' };

  it('keeps well-formed facts', () => {
    expect(advertisedSshInfo(good)).toEqual(good);
    expect(
      advertisedSshInfo({ ...good, host_keys: undefined, host_ca: line, source_address: ['10.0.0.1'] }),
    ).toEqual({
      principals: ['deploy'],
      host_ca: line,
      host_key_alias: 'web1.internal',
      source_address: ['10.0.0.1'],
    });
  });

  it.each([
    ['a principal sshd would split', { ...good, principals: ['deploy,root'] }],
    ['no principal', { ...good, principals: [] }],
    ['a host key that does not parse', { ...good, host_keys: ['ssh-ed25519 AAAAnope'] }],
    ['both host keys and a host CA', { ...good, host_ca: line }],
    ['neither', { ...good, host_keys: undefined }],
    ['a bad source address', { ...good, source_address: ['0.0.0.0/0 ,evil'] }],
    ['no alias', { ...good, host_key_alias: undefined }],
  ])('drops them for %s', (_what, value) => {
    expect(advertisedSshInfo(value)).toBeUndefined();
  });
});
