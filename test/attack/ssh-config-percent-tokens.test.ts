// Attack: ssh expands `%` tokens (and reads `%%` as a literal `%`) in the ssh_config paths the
// client writes — IdentityFile, CertificateFile, UserKnownHostsFile. A $TMPDIR holding `%h`
// made UserKnownHostsFile name another file (`%h` → 127.0.0.1, the HostName): a file someone
// else on a shared runner can create first, with their own host key in it, turning
// `StrictHostKeyChecking yes` against the pinned key into a check against theirs.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { PortSession } from '../../src/client/session.js';
import { writeSshFiles } from '../../src/client/ssh.js';
import {
  generateEd25519,
  parseEd25519Private,
  parsePublicKeyLine,
  signUserCertificate,
} from '../../src/credentials/ssh-keys.js';

const base = mkdtempSync(join(tmpdir(), 'ciport-ssh-pct-'));
const shared = join(base, 'runner%h%d');
mkdirSync(shared);
afterAll(() => rmSync(base, { recursive: true, force: true }));

const ca = parseEd25519Private(generateEd25519('ca').privateOpenssh);

const session = {
  id: 'ses_pct',
  async sshCertificate(_target: string, publicLine: string) {
    if (typeof ca === 'string') throw new Error(ca);
    const subject = parsePublicKeyLine(publicLine);
    if (typeof subject === 'string') throw new Error(subject);
    const signed = signUserCertificate(ca, {
      subject,
      keyId: 'ciport session=ses_pct',
      principals: ['deploy'],
      validAfter: new Date(Date.now() - 60_000),
      validBefore: new Date(Date.now() + 600_000),
      extensions: ['permit-pty'],
    });
    return {
      certificate: signed.line,
      principals: ['deploy'],
      host_key_alias: 'web.internal',
      host_keys: [generateEd25519('host').publicLine],
      valid_before: new Date(Date.now() + 600_000).toISOString(),
    };
  },
} as unknown as PortSession;

describe('ssh_config paths under a $TMPDIR holding % tokens', () => {
  it('name the files written, not what ssh expands the tokens to', async () => {
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = shared;
    let files: Awaited<ReturnType<typeof writeSshFiles>> | undefined;
    try {
      files = await writeSshFiles(session, [{ name: 'web1', port: 2222 }]);
    } finally {
      process.env.TMPDIR = saved;
    }
    try {
      expect(files.dir.startsWith(shared)).toBe(true);
      const shown = execFileSync('ssh', ['-G', '-F', files.configs.get('web1') as string, 'web1'], {
        encoding: 'utf8',
      });
      const option = (name: string) => shown.match(new RegExp(`^${name} (.*)$`, 'm'))?.[1];
      expect(option('userknownhostsfile')).toBe(join(files.dir, 'web1.known_hosts'));
      // ssh -G shows these two before expansion: `%%` there is the literal `%` ssh opens.
      expect(option('certificatefile')?.replaceAll('%%', '%')).toBe(join(files.dir, 'web1-cert.pub'));
      expect(option('identityfile')?.replaceAll('%%', '%')).toBe(join(files.dir, 'web1'));
      expect(option('identityfile')).not.toMatch(/(^|[^%])%[^%]/);
    } finally {
      files.remove();
    }
  });
});
