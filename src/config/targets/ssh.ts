// protocol ssh: the exit relays raw bytes to the host's sshd (src/exits/ssh); the job logs in
// with a certificate the gateway signs for its session (docs/ssh.md). The target says which
// principals may be granted and how the job's ssh verifies the host: pinned keys or a host CA.
import { z } from 'zod';
import { parsePublicKeyLine, SSH_PRINCIPAL_RE } from '../../credentials/ssh-keys.js';
import { targetMember } from './member.js';

const KEY_TYPE = /^(ssh-|ecdsa-|sk-)/;

const keyLine = z
  .string()
  .min(1)
  .superRefine((line, ctx) => {
    const parsed = parsePublicKeyLine(line);
    if (typeof parsed !== 'string') return;
    // `ssh-keyscan` prints `host type key`: the commonest paste, so name the fix.
    const [host, type] = line.trim().split(/\s+/);
    const keyscan =
      type && KEY_TYPE.test(type) && host && !KEY_TYPE.test(host)
        ? `; this looks like ssh-keyscan output: drop the host name "${host}"`
        : '';
    ctx.addIssue({ code: 'custom', message: `${parsed}${keyscan}` });
  });

export const sshPrincipalSchema = z
  .string()
  .regex(SSH_PRINCIPAL_RE, 'a principal is a login name: letters, digits, "_", ".", "@", "-"');

/** `10.0.0.0/8` or a single address (IPv4 or IPv6), as `source-address` takes it. */
const cidr = z.string().regex(/^[0-9A-Fa-f:.]+(\/\d{1,3})?$/, 'an address or CIDR block such as 10.0.0.5/32');

export const sshTargetSchema = targetMember(
  'ssh',
  "SSH: raw bytes to the host's sshd; the job logs in with a per-session certificate (docs/ssh.md).",
  {
    principals: z.array(sshPrincipalSchema).min(1).meta({
      description:
        'Login names a certificate for this target may carry (a rule may narrow them: `ssh.<target>.principals`).',
    }),
    host_keys: z
      .array(keyLine)
      .min(1)
      .optional()
      .meta({ description: "The host's public keys, pinned (`ssh-ed25519 AAAA…` lines)." }),
    host_ca: keyLine.optional().meta({
      description: 'The CA that signs the host key (`@cert-authority` in the known_hosts ciport writes).',
    }),
    host_key_alias: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,253}$/, 'a host name')
      .optional()
      .meta({
        description:
          "The name the host key is checked under (HostKeyAlias; a host certificate must list it). Default: the address's host.",
      }),
    source_address: z.array(cidr).min(1).optional().meta({
      description:
        "The certificate's `source-address`: where sshd sees the exit's connections come from (the gateway's or agent's egress address).",
    }),
  },
).superRefine((target, ctx) => {
  if ((target.host_keys === undefined) === (target.host_ca === undefined)) {
    ctx.addIssue({
      code: 'custom',
      path: ['host_keys'],
      message: 'an ssh target needs exactly one of host_keys (pinned keys) or host_ca (a host CA)',
    });
  }
});

export type SshTarget = z.output<typeof sshTargetSchema>;

/** The name the job's ssh checks the host key under. */
export function hostKeyAlias(target: Pick<SshTarget, 'address' | 'host_key_alias'>): string {
  if (target.host_key_alias) return target.host_key_alias;
  const i = target.address.lastIndexOf(':');
  return target.address.slice(0, i).replace(/^\[|\]$/g, '');
}
