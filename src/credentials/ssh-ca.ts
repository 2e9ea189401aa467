// The gateway's SSH user CA (docs/ssh.md): `ssh.ca_key` from a secret, else an Ed25519 key
// generated in data_dir on first use (`ssh_user_ca`, mode 0600, created exclusively so two
// gateways starting on one data_dir agree on one key) beside its public line
// (`ssh_user_ca.pub`). Agents never hold it: the gateway signs, agents only relay to sshd.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type sshpk from 'sshpk';
import type { GatewayConfig } from '../config/schema.js';
import { CiportError } from '../errors/index.js';
import { fingerprint, generateEd25519, parseEd25519Private, publicKeyLine } from './ssh-keys.js';

export const SSH_CA_FILE = 'ssh_user_ca';

export interface SshCa {
  readonly key: sshpk.PrivateKey;
  /** `ssh-ed25519 AAAA… ciport-user-ca`: what hosts put in TrustedUserCAKeys. */
  readonly publicLine: string;
  readonly fingerprint: string;
  /** Where it came from (`ssh.ca_key` origin or the generated file), never the key. */
  readonly origin: string;
  /** This call made the data_dir key (the first use of that data_dir). */
  readonly generated?: boolean;
}

function fromText(text: string, origin: string): SshCa {
  const key = parseEd25519Private(text);
  if (typeof key === 'string') throw new CiportError('CIPORT_E_SSH_CA_INVALID', `${origin}: ${key}`);
  const pub = key.toPublic();
  return { key, publicLine: `${publicKeyLine(pub)} ciport-user-ca`, fingerprint: fingerprint(pub), origin };
}

/** The CA of this config: loaded from `ssh.ca_key`, or from (or generated in) data_dir. */
export function loadSshCa(config: Pick<GatewayConfig, 'ssh' | 'data_dir'>): SshCa {
  const secret = config.ssh?.ca_key;
  if (secret) return fromText(secret.reveal(), `ssh.ca_key (${secret.origin})`);
  const file = join(config.data_dir, SSH_CA_FILE);
  let generated = false;
  if (!existsSync(file)) {
    mkdirSync(config.data_dir, { recursive: true, mode: 0o700 });
    const made = generateEd25519('ciport-user-ca');
    try {
      writeFileSync(file, made.privateOpenssh, { mode: 0o600, flag: 'wx' });
      writeFileSync(`${file}.pub`, `${made.publicLine} ciport-user-ca\n`, { mode: 0o644 });
      generated = true;
    } catch (err) {
      // Another process made it first: use theirs.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  chmodSync(file, 0o600);
  return { ...fromText(readFileSync(file, 'utf8'), file), generated };
}

/**
 * The CA, loaded once and on first use (a gateway without ssh targets makes no key). A
 * configured `ssh.ca_key` is checked at once, so a bad one fails the start.
 */
export function lazySshCa(config: Pick<GatewayConfig, 'ssh' | 'data_dir'>): () => SshCa {
  let ca: SshCa | undefined = config.ssh?.ca_key ? loadSshCa(config) : undefined;
  return () => {
    ca ??= loadSshCa(config);
    return ca;
  };
}
