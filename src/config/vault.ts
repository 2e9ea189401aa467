// The `vault:` block of the gateway and the agent config (docs/secrets.md): how this process
// reaches HashiCorp Vault for `{vault: …}` secrets and `credentials.vault_database`. Its own
// secrets (token, AppRole secret_id) are {env}/{file}: Vault cannot hold its own way in.
import { z } from 'zod';
import { secretSchema } from './fields.js';
import { Secret } from './secret.js';
import type { TargetConfig } from './targets/index.js';

export const vaultConfigSchema = z
  .strictObject({
    address: z.url().meta({ description: 'Vault URL, e.g. https://vault.internal:8200.' }),
    namespace: z
      .string()
      .min(1)
      .optional()
      .meta({ description: 'Vault Enterprise namespace (X-Vault-Namespace).' }),
    ca: z
      .strictObject({ file: z.string().min(1).meta({ description: 'PEM bundle Vault must chain to.' }) })
      .optional()
      .meta({ description: "CA bundle for Vault's TLS certificate (default: system CAs)." }),
    auth: z
      .union([
        z.strictObject({
          token: secretSchema.meta({ description: 'A Vault token (renewed while renewable).' }),
        }),
        z.strictObject({
          approle: z.strictObject({
            role_id: z.string().min(1),
            secret_id: secretSchema,
            mount: z.string().min(1).default('approle').meta({ description: 'Default approle.' }),
          }),
        }),
      ])
      .meta({ description: '{token: <secret>} or {approle: {role_id, secret_id: <secret>, mount?}}.' }),
  })
  .optional()
  .meta({
    description: 'HashiCorp Vault, for {vault: …} secrets and credentials.vault_database (docs/secrets.md).',
  });

export type VaultConfig = NonNullable<z.output<typeof vaultConfigSchema>>;

/** Every `{vault: …}` secret or vault_database target needs the `vault:` block: say where. */
export function checkVaultUse(
  cfg: { vault?: VaultConfig | undefined; targets: readonly TargetConfig[] },
  ctx: z.RefinementCtx,
): void {
  cfg.targets.forEach((t, i) => {
    const c = (t as { credentials?: Record<string, unknown> }).credentials;
    if (c && 'vault_database' in c && c.vault_database !== undefined) {
      if ('dynamic' in c && c.dynamic !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['targets', i, 'credentials', 'vault_database'],
          message: 'vault_database and dynamic are two ways of making per-session accounts: choose one',
        });
      }
      if (!cfg.vault) {
        ctx.addIssue({
          code: 'custom',
          path: ['targets', i, 'credentials', 'vault_database'],
          message: 'needs the top-level `vault:` block (address and auth)',
        });
      }
    }
    if (cfg.vault) return;
    for (const path of vaultSecretPaths(t)) {
      ctx.addIssue({
        code: 'custom',
        path: ['targets', i, ...path],
        message: 'a {vault: …} secret needs the top-level `vault:` block (address and auth)',
      });
    }
  });
}

function vaultSecretPaths(value: unknown, path: Array<string | number> = []): Array<Array<string | number>> {
  if (value instanceof Secret) return 'vault' in value.source ? [path] : [];
  if (!value || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([k, v]) => vaultSecretPaths(v, [...path, k]));
}
