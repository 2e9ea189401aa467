// SSH certificates (docs/ssh.md): the gateway's `ssh:` section (its user CA) and what a rule's
// `ssh:` says per target (narrower principals, extensions beyond the default `permit-pty`).
import { z } from 'zod';
import { SSH_PERMITS } from '../credentials/ssh-keys.js';
import { nameSchema, secretSchema } from './fields.js';
import { sshPrincipalSchema } from './targets/ssh.js';

export const sshSectionSchema = z
  .strictObject({
    ca_key: secretSchema.optional().meta({
      description:
        'The user CA private key (Ed25519, OpenSSH or PKCS#8 PEM). Without it: generated in data_dir (ssh_user_ca, mode 0600) on first use. `ciport ssh-ca` prints its public key.',
    }),
  })
  .optional()
  .meta({ description: 'The CA that signs per-session SSH certificates for ssh targets (docs/ssh.md).' });

export const ruleSshSchema = z
  .record(
    nameSchema,
    z.strictObject({
      principals: z.array(sshPrincipalSchema).min(1).optional().meta({
        description:
          "The principals this rule grants on the target: a subset of the target's (default: all of them).",
      }),
      permit: z.array(z.enum(SSH_PERMITS)).optional().meta({
        description:
          'Certificate extensions granted (`permit-<name>`); default [pty]. Agent and port forwarding only when listed here.',
      }),
    }),
  )
  .optional()
  .meta({
    description: 'Per ssh target: what certificates for sessions granted by this rule carry (docs/ssh.md).',
  });

export type RuleSsh = z.output<typeof ruleSshSchema>;

/** A rule's `ssh:` speaks of targets the rule allows (anything else is a typo that grants nothing). */
export function checkRuleSsh(rule: { allow: string[]; ssh?: RuleSsh }, ctx: z.RefinementCtx): void {
  for (const target of Object.keys(rule.ssh ?? {})) {
    if (!rule.allow.includes(target)) {
      ctx.addIssue({
        code: 'custom',
        path: ['ssh', target],
        message: `ssh settings for ${target}, which the rule does not allow`,
      });
    }
  }
}

/**
 * A rule's `ssh:` for a target this config defines: the gateway's own target wins over any
 * agent's, so a non-ssh target or principals disjoint from the target's would refuse every
 * certificate at run time (CIPORT_E_SSH_CERTIFICATE_REFUSED). Say so at load instead.
 */
export function checkRuleSshTargets(
  cfg: {
    targets: readonly { name: string; protocol: string; principals?: readonly string[] }[];
    rules: readonly { ssh?: RuleSsh }[];
  },
  ctx: z.RefinementCtx,
): void {
  const byName = new Map(cfg.targets.map((t) => [t.name, t]));
  cfg.rules.forEach((rule, i) => {
    for (const [name, settings] of Object.entries(rule.ssh ?? {})) {
      const target = byName.get(name);
      if (!target) continue; // an agent's target: checked when its certificate is asked for
      const path = ['rules', i, 'ssh', name];
      if (target.protocol !== 'ssh') {
        ctx.addIssue({
          code: 'custom',
          path,
          message: `ssh settings for ${name}, a ${target.protocol} target`,
        });
      } else if (settings.principals && !settings.principals.some((p) => target.principals?.includes(p))) {
        ctx.addIssue({
          code: 'custom',
          path: [...path, 'principals'],
          message: `none of these is among ${name}'s principals (${target.principals?.join(', ')}): every certificate would be refused`,
        });
      }
    }
  });
}
