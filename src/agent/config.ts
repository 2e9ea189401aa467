// The agent's configuration (docs/agent.md): where the gateway is, which CA to trust, the agent's
// name and data dir, its one-time enrollment token, and the targets it exits to (same shape as
// the gateway's `targets:`; their credentials never leave the agent).
import { z } from 'zod';
import { durationSchema, secretSchema } from '../config/fields.js';
import { formatPath, parseYaml, readConfigFile, secretsIn, validate } from '../config/load.js';
import type { Secret } from '../config/secret.js';
import { targetSchema } from '../config/targets/index.js';
import { checkVaultUse, vaultConfigSchema } from '../config/vault.js';
import { ConfigError } from '../errors/index.js';

export const agentConfigSchema = z
  .strictObject({
    gateway: z.url().meta({ description: 'The gateway URL (https://host:port), as in its public_url.' }),
    ca_file: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "PEM bundle the gateway's certificate must chain to (default: system CAs)." }),
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/i)
      .meta({ description: 'This agent, as operators see it (the enrollment names it too).' }),
    data_dir: z.string().min(1).default('./ciport-agent-data'),
    enrollment_token: secretSchema.optional().meta({
      description: 'One-time token from `ciport agents enroll`; needed only until the agent has registered.',
    }),
    connect_timeout: durationSchema.prefault('10s'),
    targets: z.array(targetSchema).min(1),
    vault: vaultConfigSchema,
  })
  .superRefine((cfg, ctx) => {
    checkVaultUse(cfg, ctx);
    const seen = new Set<string>();
    cfg.targets.forEach((t, i) => {
      if (seen.has(t.name)) {
        ctx.addIssue({ code: 'custom', path: ['targets', i, 'name'], message: `duplicate name "${t.name}"` });
      }
      seen.add(t.name);
    });
  });

export type AgentConfig = z.output<typeof agentConfigSchema>;

export interface AgentLoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Resolve the targets' secrets (default true; `config check --agent --skip-secrets`: no). */
  resolveSecrets?: boolean;
}

export function loadAgentConfig(file: string, options: AgentLoadOptions = {}): AgentConfig {
  return parseAgentConfig(readConfigFile(file), file, options);
}

/**
 * Parse and validate; resolve the targets' secrets now. The enrollment token is resolved only
 * when the agent has no credential yet (`resolveEnrollmentToken`).
 */
export function parseAgentConfig(text: string, file: string, options: AgentLoadOptions = {}): AgentConfig {
  const { data, locate } = parseYaml(text, file);
  const cfg = validate(agentConfigSchema, data, file, locate);
  if (options.resolveSecrets === false) return cfg;
  // The vault block's own token or secret_id too; provider secrets are read at start (async).
  for (const [path, secret] of [...secretsIn(cfg.targets, ['targets']), ...secretsIn(cfg.vault, ['vault'])]) {
    secret.resolve(options.env ?? process.env, `${file}:${locate(path)}: ${formatPath(path)}`);
  }
  return cfg;
}

export function resolveEnrollmentToken(cfg: AgentConfig, env: NodeJS.ProcessEnv = process.env): string {
  const secret: Secret | undefined = cfg.enrollment_token;
  if (!secret) {
    throw new ConfigError(
      'CIPORT_E_SECRET_UNAVAILABLE',
      `agent ${cfg.name} has no credential in ${cfg.data_dir} and no enrollment_token is configured`,
    );
  }
  if (!secret.resolved) secret.resolve(env, 'enrollment_token');
  return secret.reveal();
}
