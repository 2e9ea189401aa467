// The job's side of an ssh target (docs/ssh.md): a key pair made in memory, its public half
// signed by the gateway for this session, and one private directory (0700, removed when the
// session ends) holding what ssh needs as files — the private key (0600; ssh reads only files),
// the certificate, a known_hosts from the target's pinned keys or host CA, and an ssh_config
// with one `Host <target>` entry pointing at the local port. The private key is written nowhere
// else and never printed; ssh gets only the config's path (-F), never key material in argv.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { generateEd25519 } from '../credentials/ssh-keys.js';
import { CiportError } from '../errors/errors.js';
import type { PortSession } from './session.js';

const certificateSchema = z.looseObject({
  certificate: z.string().regex(/^[a-z0-9-]+-cert-v01@openssh\.com [A-Za-z0-9+/=]+$/),
  principals: z.array(z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$/)).min(1),
  host_key_alias: z.string().regex(/^[A-Za-z0-9_.:-]{1,253}$/),
  host_keys: z.array(z.string().regex(/^[a-z0-9@.-]+ [A-Za-z0-9+/=]+( .*)?$/)).optional(),
  host_ca: z
    .string()
    .regex(/^[a-z0-9@.-]+ [A-Za-z0-9+/=]+( .*)?$/)
    .optional(),
  valid_before: z.string(),
});

/** A path in ssh_config: double-quoted (ssh_config's own quoting; tmp paths hold no quote). */
function quoted(path: string): string {
  if (/["\n]/.test(path)) throw new CiportError('CIPORT_E_USAGE', `unusable path for ssh_config: ${path}`);
  return `"${path}"`;
}

/** `type base64` of a key line, without its comment (known_hosts takes `marker host type key`). */
function keyPart(line: string): string {
  return line.trim().split(/\s+/).slice(0, 2).join(' ');
}

export interface SshFiles {
  /** The session directory (0700). */
  readonly dir: string;
  /** ssh_config path per ssh target. */
  readonly configs: ReadonlyMap<string, string>;
  /** Remove the directory and everything in it (idempotent). */
  remove(): void;
}

/**
 * For each `targets` entry (an ssh target and its local port): a key, its certificate, and the
 * files. On any failure the directory is removed before the error is thrown.
 */
export async function writeSshFiles(
  session: PortSession,
  targets: Array<{ name: string; port: number }>,
): Promise<SshFiles> {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-ssh-'));
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    rmSync(dir, { recursive: true, force: true });
  };
  const configs = new Map<string, string>();
  try {
    for (const t of targets) {
      const key = generateEd25519(`ciport-${session.id}-${t.name}`);
      const raw = await session.sshCertificate(t.name, key.publicLine);
      const parsed = certificateSchema.safeParse(raw);
      if (!parsed.success) {
        throw new CiportError(
          'CIPORT_E_GATEWAY_RESPONSE',
          `the gateway's SSH certificate answer for ${t.name} is unusable (${parsed.error.issues[0]?.message ?? 'invalid'})`,
        );
      }
      const cert = parsed.data;
      const base = join(dir, t.name);
      const file = (path: string, text: string) => writeFileSync(path, text, { mode: 0o600, flag: 'wx' });
      file(base, key.privateOpenssh);
      file(`${base}-cert.pub`, `${cert.certificate}\n`);
      const alias = cert.host_key_alias;
      const known = cert.host_ca
        ? [`@cert-authority ${alias} ${keyPart(cert.host_ca)}`]
        : (cert.host_keys ?? []).map((k) => `${alias} ${keyPart(k)}`);
      if (known.length === 0)
        throw new CiportError('CIPORT_E_GATEWAY_RESPONSE', `no host key or host CA for ${t.name}`);
      file(`${base}.known_hosts`, `${known.join('\n')}\n`);
      const config = [
        `# ciport session ${session.id}: ${t.name} through 127.0.0.1:${t.port}, certificate valid until ${cert.valid_before}`,
        `Host ${t.name}`,
        '  HostName 127.0.0.1',
        `  Port ${t.port}`,
        `  User ${cert.principals[0]}`,
        `  IdentityFile ${quoted(base)}`,
        `  CertificateFile ${quoted(`${base}-cert.pub`)}`,
        '  IdentitiesOnly yes',
        '  IdentityAgent none',
        '  PubkeyAuthentication yes',
        '  PasswordAuthentication no',
        '  KbdInteractiveAuthentication no',
        '  BatchMode yes',
        `  UserKnownHostsFile ${quoted(`${base}.known_hosts`)}`,
        '  GlobalKnownHostsFile /dev/null',
        `  HostKeyAlias ${alias}`,
        '  StrictHostKeyChecking yes',
        '  CheckHostIP no',
        '  UpdateHostKeys no',
        '  ForwardAgent no',
        // Keeps a quiet session (a long remote command) from the gateway's idle timeout.
        '  ServerAliveInterval 30',
        '  ControlMaster no',
        '  ControlPath none',
        '',
      ].join('\n');
      const configPath = join(dir, `${t.name}.config`);
      file(configPath, config);
      configs.set(t.name, configPath);
    }
  } catch (err) {
    remove();
    throw err;
  }
  return { dir, configs, remove };
}
