// What every target has, and the pieces several protocols share. A protocol's own fields are in
// its file beside this one (postgres.ts, mysql.ts, …); index.ts makes the union on `protocol`.
import { z } from 'zod';
import { hostPortSchema, nameSchema, secretSchema, targetSecretSchema } from '../fields.js';

const quoted = (keys: readonly string[]) => keys.map((k) => `"${k}"`).join(', ');

/**
 * A strict object whose unknown keys are reported with what the object is and the keys it does
 * have: a key that belongs to another protocol reads "unknown key "sslmode" for a redis target
 * (its keys: …)", at the line of the key (config/load.ts).
 */
export function keysOf<S extends z.core.$ZodLooseShape>(what: string, shape: S) {
  const known = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `unknown key${issue.keys.length > 1 ? 's' : ''} ${quoted(issue.keys)} for ${what} (its keys: ${known})`
        : undefined,
  });
}

/** One member of the target union: the common keys around the protocol's own. */
export function targetMember<P extends string, S extends z.core.$ZodLooseShape>(
  protocol: P,
  description: string,
  shape: S,
) {
  return addresslessMember(protocol, description, {
    address: hostPortSchema.meta({
      description: 'Upstream host:port, dialled by the gateway (or the agent).',
    }),
    ...shape,
  });
}

/**
 * A member whose exit dials no address of its own (aws: the exit calls STS through the SDK's
 * endpoint resolution), so it has no `address` key.
 */
export function addresslessMember<P extends string, S extends z.core.$ZodLooseShape>(
  protocol: P,
  description: string,
  shape: S,
) {
  return keysOf(`a ${protocol} target`, {
    name: nameSchema,
    protocol: z
      .literal(protocol)
      .meta({ description: 'What the port speaks: which exit serves it, and which other keys it takes.' }),
    ...shape,
    tags: z
      .array(z.string().min(1))
      .default([])
      .meta({ description: 'Labels such as `production` that policy lint reads.' }),
    description: z.string().optional().meta({ description: 'Free text for people.' }),
  }).meta({ description });
}

/** TLS to the upstream, verified: `true` (system roots, the address's host) or `{ca, servername}`. */
export const upstreamTlsSchema = z
  .union([
    z.boolean(),
    keysOf('tls', {
      ca: secretSchema.optional().meta({ description: 'PEM CA bundle that replaces the system roots.' }),
      servername: z
        .string()
        .min(1)
        .optional()
        .meta({ description: "Name to verify and send as SNI (default: the address's host)." }),
    }),
  ])
  .optional();

export type UpstreamTls = z.output<typeof upstreamTlsSchema>;

/** `query` audit events of a database target (postgres, mysql). */
export const queryAuditFields = {
  query_audit: z.boolean().optional().meta({ description: 'Write `query` audit events (default true).' }),
  query_max_length: z.int().min(16).max(1_048_576).optional().meta({
    description: 'Text kept per statement in `query` events, bytes (default 4096).',
  }),
};

/** What per-session database accounts (`role`: postgres, `user`: mysql) are made with. */
export function dynamicFields(account: 'role' | 'user') {
  return {
    admin: keysOf('credentials.dynamic.admin', {
      user: z.string().min(1),
      password: targetSecretSchema,
    }).meta({
      description: `The ${account} that creates and drops per-session ${account}s (docs/credentials.md).`,
    }),
    grant: z
      .array(z.string().min(1))
      .default([])
      .meta({
        description: `Roles each per-session ${account} is granted (a rule's \`grants\` replace them).`,
      }),
    create: z
      .enum(['first_connection', 'session_start'])
      .default('first_connection')
      .meta({ description: `When the ${account} is created.` }),
  };
}

/** `credentials.vault_database`: a user and password per session, minted by Vault (docs/secrets.md). */
export const vaultDatabaseFields = keysOf('credentials.vault_database', {
  // Spliced into /v1/<mount>/creds/<role>: no `.` or `..` segment (the URL parser resolves them).
  role: z.string().regex(/^(?!\.{1,2}$)[A-Za-z0-9_.-]{1,128}$/, 'a Vault database role name'),
  mount: z
    .string()
    .regex(/^(?!(?:.*\/)?\.{1,2}(?:\/|$))[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/, 'a Vault mount path')
    .default('database')
    .meta({ description: 'Where the database secrets engine is mounted (default database).' }),
})
  .optional()
  .meta({
    description:
      'Per-session credentials minted by Vault (GET <mount>/creds/<role>) at the first connection, ' +
      'the lease revoked when the session ends. Needs the top-level `vault:` block.',
  });

/** A user and a password injected at the exit. */
export const userPasswordFields = {
  user: z.string().min(1).optional().meta({ description: 'User injected at the exit.' }),
  password: targetSecretSchema.optional().meta({ description: 'Password injected at the exit.' }),
};

/** An AWS region (eu-west-1, us-gov-west-1, cn-north-1). */
export const awsRegionSchema = z
  .string()
  .regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'an AWS region such as eu-west-1')
  .meta({ description: 'The AWS region of the service (it is part of the signature).' });

/** An IAM role ARN, any partition. */
export const awsRoleSchema = z
  .string()
  .regex(
    /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]+$/,
    'an IAM role ARN (arn:aws:iam::123456789012:role/name)',
  );

/** IAM database authentication (RDS, Aurora): a token per connection, made at the exit. */
export const awsRdsIamSchema = keysOf('credentials.aws_rds_iam', {
  user: z
    .string()
    .min(1)
    .meta({ description: 'The database user (granted rds_iam / AWSAuthenticationPlugin).' }),
  region: awsRegionSchema,
  role: awsRoleSchema.optional().meta({
    description: "A role the exit assumes to sign the token; default: the exit's own AWS credentials.",
  }),
}).meta({
  description:
    'Log in upstream with an RDS/Aurora IAM authentication token generated per connection with the ' +
    "exit's AWS credentials (docs/aws.md). Needs verified TLS; excludes user, password and dynamic.",
});

/**
 * What `aws_rds_iam` excludes, judged on the whole target: another credential, or a connection
 * whose TLS is not verified (the token travels as a cleartext password, and is good for 15
 * minutes against that database: only a server proven to be the one may see it).
 */
export function rdsIamProblems(target: {
  protocol: string;
  tls?: unknown;
  sslmode?: string | undefined;
  credentials?: { aws_rds_iam?: unknown; user?: unknown; password?: unknown; dynamic?: unknown } | undefined;
}): { path: string[]; message: string }[] {
  const c = target.credentials;
  if (c?.aws_rds_iam === undefined) return [];
  const problems: { path: string[]; message: string }[] = [];
  const extra = (['user', 'password', 'dynamic'] as const).filter((f) => c[f] !== undefined);
  if (extra.length > 0) {
    problems.push({
      path: ['credentials', 'aws_rds_iam'],
      message: `aws_rds_iam cannot be combined with ${extra.join(', ')} (its user is aws_rds_iam.user)`,
    });
  }
  const verified =
    target.tls !== undefined &&
    target.tls !== false &&
    (target.protocol !== 'postgres' || (target.sslmode ?? 'verify-full') === 'verify-full');
  if (!verified) {
    problems.push({
      path: ['credentials', 'aws_rds_iam'],
      message:
        target.protocol === 'postgres'
          ? 'aws_rds_iam needs verified TLS to the upstream: set tls (and sslmode verify-full, the default with tls)'
          : 'aws_rds_iam needs verified TLS to the upstream: set tls',
    });
  }
  return problems;
}
