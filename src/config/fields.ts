// The field types every section of the configuration is built from (schema.ts, targets/): names,
// durations, secrets, addresses. Zod and the pure helpers of this folder only.
import { z } from 'zod';
import { parseDuration } from './duration.js';
import { Secret } from './secret.js';

/** A name of an issuer, target or rule: what rules, bindings and the audit log refer to it by. */
export const nameSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_-]{0,62}$/,
    'lowercase letters, digits, "-" and "_", starting with a letter or digit',
  );

/**
 * An approval group (a rule's `approval.groups`, an admin token's `groups`, later an SSO group
 * claim's values): compared exactly, so printable and without blanks that would hide a mismatch.
 */
export const groupNameSchema = z
  .string()
  .regex(/^[^\s\p{Cc}\p{Cf}]{1,128}$/u, 'a group name: 1 to 128 printable characters, no blanks')
  .meta({ description: 'An approval group, compared exactly (case included).' });

export const durationSchema = z
  .string()
  .regex(/^\d+(ms|s|m|h|d)$/, 'a duration such as 30s, 15m or 2h')
  .transform((text) => parseDuration(text) as number)
  .meta({ description: 'Duration: a whole number followed by ms, s, m, h or d (30s, 15m, 2h).' });

const envSource = z.strictObject({
  env: z.string().min(1).meta({ description: 'Environment variable holding the value.' }),
});
const fileSource = z.strictObject({
  file: z.string().min(1).meta({ description: 'File holding the value.' }),
});

export const secretSchema = z
  .union([envSource, fileSource])
  .transform((source) => new Secret(source))
  .meta({ description: 'A secret: {env: NAME} or {file: PATH}. Resolved at load, never printed.' });

const refreshSchema = durationSchema
  .optional()
  .meta({ description: 'How often the value is read again (default 5m); also re-read when refused.' });

const awsSecretsManagerSource = z.strictObject({
  aws_secretsmanager: z.strictObject({
    secret_id: z.string().min(1).meta({ description: 'Name or ARN of the secret.' }),
    key: z
      .string()
      .min(1)
      .optional()
      .meta({ description: 'A field of the JSON SecretString (absent: the whole string).' }),
    version_stage: z.string().min(1).optional().meta({ description: 'Default AWSCURRENT.' }),
    region: z.string().min(1).optional().meta({ description: "Default: the SDK's (AWS_REGION)." }),
    refresh: refreshSchema,
  }),
});

const vaultSource = z.strictObject({
  vault: z.strictObject({
    path: z
      .string()
      .regex(/^[^/\s]+\/[^\s]*[^/\s]$/, '<mount>/<path> of a KV v2 secret, e.g. secret/ci/db')
      // Spliced into /v1/<mount>/data/<path>: `..` would climb out of the mount (the URL parser
      // resolves it: sys/…), `?`/`#` would cut the path, `%` and `\` would be decoded or rewritten.
      .refine((p) => !/[?#%\\]/.test(p) && !p.split('/').some((seg) => seg === '.' || seg === '..'), {
        message: 'a KV v2 path has no `.` or `..` segment and no `?`, `#`, `%` or `\\`',
      })
      .meta({ description: 'KV v2 secret as <mount>/<path> (first segment: the mount), e.g. secret/ci/db.' }),
    key: z.string().min(1).meta({ description: "Field of the secret's data." }),
    refresh: refreshSchema,
  }),
});

/**
 * A target credential (docs/secrets.md): `{env}`, `{file}`, or a provider that is read at start
 * and re-read on rotation: `{aws_secretsmanager: {secret_id, key?}}`, `{vault: {path, key}}`.
 */
export const targetSecretSchema = z
  .union([envSource, fileSource, awsSecretsManagerSource, vaultSource])
  .transform((source) => new Secret(source))
  .meta({
    description:
      'A secret: {env}, {file}, {aws_secretsmanager: {secret_id, key?}} or {vault: {path, key}} (docs/secrets.md).',
  });

export const hostPortSchema = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'host:port (IPv6 in brackets)');
