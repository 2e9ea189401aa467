import { createHash } from 'node:crypto';
import forge from 'node-forge';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  clearSaltedPasswordCache,
  makeScramVerifier,
  ScramClient,
  ScramError,
  ScramServer,
  saltedPassword,
  saltedPasswordCacheStats,
  saslPrep,
  tlsServerEndPoint,
} from '../../../src/exits/postgres/scram.js';

// RFC 7677 section 3.
const V = {
  password: 'pencil',
  clientNonce: 'rOprNGfwEbeRWgbNEkqO',
  serverNonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal:
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};

beforeEach(() => clearSaltedPasswordCache());

describe('SCRAM-SHA-256 (RFC 7677 test vector)', () => {
  it('client side produces the vector’s messages and accepts the server signature', async () => {
    const c = new ScramClient({ password: V.password, username: 'user', nonce: V.clientNonce });
    expect(c.mechanism).toBe('SCRAM-SHA-256');
    expect(c.clientFirst()).toBe(V.clientFirst);
    expect(await c.clientFinal(V.serverFirst)).toBe(V.clientFinal);
    expect(() => c.verifyServerFinal(V.serverFinal)).not.toThrow();
    expect(() => c.verifyServerFinal('v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=')).toThrow(ScramError);
    expect(() => c.verifyServerFinal('e=invalid-proof')).toThrow(/invalid-proof/);
  });

  it('server side produces the vector’s messages and checks the proof', async () => {
    const verifier = await makeScramVerifier(V.password, {
      salt: Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'),
      iterations: 4096,
    });
    const s = new ScramServer(verifier, { nonce: V.serverNonce });
    expect(s.serverFirst(V.clientFirst)).toBe(V.serverFirst);
    expect(s.serverFinal(V.clientFinal)).toBe(V.serverFinal);
  });

  it('server returns undefined for a wrong password and throws on tampering', async () => {
    const verifier = await makeScramVerifier('right');
    const run = async (password: string, tamper?: (m: string) => string) => {
      const s = new ScramServer(verifier);
      const c = new ScramClient({ password });
      const first = s.serverFirst(c.clientFirst());
      const final = await c.clientFinal(first);
      return s.serverFinal(tamper ? tamper(final) : final);
    };
    expect(await run('right')).toMatch(/^v=/);
    expect(await run('wrong')).toBeUndefined();
    await expect(run('right', (m) => m.replace(/r=[^,]+/, 'r=other'))).rejects.toThrow(/nonce/);
    await expect(run('right', (m) => m.replace('c=biws', 'c=eSws'))).rejects.toThrow(/GS2/);
    await expect(run('right', (m) => m.replace(/,p=.*/, ''))).rejects.toThrow(/proof/);
  });

  it('server refuses channel binding and authzids on the plaintext listener', async () => {
    const s = new ScramServer(await makeScramVerifier('x'));
    expect(() => s.serverFirst('p=tls-server-end-point,,n=,r=abc')).toThrow(/channel binding/);
    expect(() => s.serverFirst('n,a=admin,n=,r=abc')).toThrow(/authorization/);
    expect(() => s.serverFirst('garbage')).toThrow(ScramError);
    // 'y' (client could bind, thinks we cannot) is fine.
    expect(s.serverFirst('y,,n=,r=abc')).toMatch(/^r=abc/);
  });

  it('client rejects a server nonce that does not extend its own, and absurd iteration counts', async () => {
    const c = new ScramClient({ password: 'p', nonce: 'abc' });
    c.clientFirst();
    await expect(c.clientFinal('r=xyz123,s=c2FsdA==,i=4096')).rejects.toThrow(/nonce/);
    await expect(c.clientFinal('r=abc123,s=c2FsdA==,i=999999999')).rejects.toThrow(/iteration/);
    await expect(c.clientFinal('r=abc123,s=c2FsdA==')).rejects.toThrow(/lacks/);
  });

  it('channel binding: -PLUS mechanism, p= header, binding data in c=', async () => {
    const cb = Buffer.from('0123456789abcdef0123456789abcdef');
    const c = new ScramClient({ password: 'p', nonce: 'abc', channelBinding: cb });
    expect(c.mechanism).toBe('SCRAM-SHA-256-PLUS');
    expect(c.clientFirst()).toBe('p=tls-server-end-point,,n=,r=abc');
    const final = await c.clientFinal('r=abcdef,s=c2FsdA==,i=1');
    const cAttr = /^c=([^,]+)/.exec(final)?.[1] as string;
    expect(Buffer.from(cAttr, 'base64')).toEqual(
      Buffer.concat([Buffer.from('p=tls-server-end-point,,'), cb]),
    );
    expect(new ScramClient({ password: 'p', couldBind: true }).clientFirst()).toMatch(/^y,,/);
  });
});

describe('salted password cache', () => {
  it('derives once per (password, salt, iterations)', async () => {
    const salt = Buffer.from('salt-one');
    const a = await saltedPassword('pw', salt, 4096);
    const b = await saltedPassword('pw', salt, 4096);
    expect(b).toEqual(a);
    expect(saltedPasswordCacheStats()).toEqual({ size: 1, hits: 1, misses: 1 });
    await saltedPassword('pw', salt, 4097);
    await saltedPassword('pw2', salt, 4096);
    await saltedPassword('pw', Buffer.from('salt-two'), 4096);
    expect(saltedPasswordCacheStats()).toMatchObject({ size: 4, misses: 4 });
  });

  it('is bounded', async () => {
    for (let i = 0; i < 300; i++) await saltedPassword('pw', Buffer.from(`s${i}`), 1);
    expect(saltedPasswordCacheStats().size).toBe(256);
  });
});

describe('SASLprep', () => {
  it('leaves ASCII alone, maps spaces and compatibility characters', () => {
    expect(saslPrep('plain ASCII ~!')).toBe('plain ASCII ~!');
    expect(saslPrep('a\u00a0b')).toBe('a b');
    expect(saslPrep('a\u00adb')).toBe('ab');
    expect(saslPrep('\u2168')).toBe('IX');
    // Prohibited output: used as-is, like PostgreSQL.
    expect(saslPrep('é\u0007')).toBe('é\u0007');
  });
});

describe('tls-server-end-point', () => {
  const keys = forge.pki.rsa.generateKeyPair({ bits: 1024, e: 0x10001 });
  const certDer = (md: forge.md.MessageDigest) => {
    const cert = forge.pki.createCertificate();
    cert.publicKey = keys.publicKey;
    cert.serialNumber = '01';
    cert.validity.notBefore = new Date();
    cert.validity.notAfter = new Date(Date.now() + 3600_000);
    cert.setSubject([{ name: 'commonName', value: 'x' }]);
    cert.setIssuer([{ name: 'commonName', value: 'x' }]);
    cert.sign(keys.privateKey, md);
    return Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), 'binary');
  };

  it('hashes with the signature algorithm’s hash, SHA-1 upgraded to SHA-256', () => {
    const d384 = certDer(forge.md.sha384.create());
    expect(tlsServerEndPoint(d384)).toEqual(createHash('sha384').update(d384).digest());
    const d1 = certDer(forge.md.sha1.create());
    expect(tlsServerEndPoint(d1)).toEqual(createHash('sha256').update(d1).digest());
  });

  it('gives undefined for garbage', () => {
    expect(tlsServerEndPoint(Buffer.from('not a certificate'))).toBeUndefined();
  });
});
