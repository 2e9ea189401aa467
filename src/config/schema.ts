// The gateway configuration, as one zod schema. It is the single source of truth: the loader
// validates with it, `ciport config schema` emits JSON Schema from it, and the types below are
// inferred from it. Objects are strict: an unknown key is an error, not a silent no-op.
import { z } from 'zod';
import { parseDuration } from './duration.js';
import { HEADER_NAME_RE, HTTP_INJECTION_KINDS, RESERVED_HEADERS } from './http-credentials.js';
import { Secret } from './secret.js';

const name = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_-]{0,62}$/,
    'lowercase letters, digits, "-" and "_", starting with a letter or digit',
  );

export const durationSchema = z
  .string()
  .regex(/^\d+(ms|s|m|h|d)$/, 'a duration such as 30s, 15m or 2h')
  .transform((text) => parseDuration(text) as number)
  .meta({ description: 'Duration: a whole number followed by ms, s, m, h or d (30s, 15m, 2h).' });

export const secretSchema = z
  .union([
    z.strictObject({
      env: z.string().min(1).meta({ description: 'Environment variable holding the value.' }),
    }),
    z.strictObject({ file: z.string().min(1).meta({ description: 'File holding the value.' }) }),
  ])
  .transform((source) => new Secret(source))
  .meta({ description: 'A secret: {env: NAME} or {file: PATH}. Resolved at load, never printed.' });

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'host:port (IPv6 in brackets)');

// ---- policy matchers ---------------------------------------------------------------------

const scalar = z.union([z.string(), z.number(), z.boolean()]);
export type Scalar = z.infer<typeof scalar>;

const ignoreCase = z.boolean().optional().meta({ description: 'Compare without regard to case.' });

export type MatcherInput =
  | Scalar
  | Scalar[]
  | { exact: Scalar; ignore_case?: boolean | undefined }
  | { one_of: Scalar[]; ignore_case?: boolean | undefined }
  | { glob: string; ignore_case?: boolean | undefined }
  | { regex: string; ignore_case?: boolean | undefined }
  | { present: boolean }
  | { not: MatcherInput }
  | { all: MatcherInput[] }
  | { any: MatcherInput[] }
  | { gt?: number | undefined; gte?: number | undefined; lt?: number | undefined; lte?: number | undefined };

export const matcherSchema: z.ZodType<MatcherInput> = z.lazy(() =>
  z.union([
    scalar,
    z.array(scalar).min(1),
    z.strictObject({ exact: scalar, ignore_case: ignoreCase }),
    z.strictObject({ one_of: z.array(scalar).min(1), ignore_case: ignoreCase }),
    z.strictObject({ glob: z.string().min(1), ignore_case: ignoreCase }),
    z.strictObject({ regex: z.string().min(1), ignore_case: ignoreCase }),
    z.strictObject({ present: z.boolean() }),
    z.strictObject({ not: matcherSchema }),
    z.strictObject({ all: z.array(matcherSchema).min(1) }),
    z.strictObject({ any: z.array(matcherSchema).min(1) }),
    z
      .strictObject({
        gt: z.number().optional(),
        gte: z.number().optional(),
        lt: z.number().optional(),
        lte: z.number().optional(),
      })
      .refine((o) => Object.values(o).some((v) => v !== undefined), 'a comparison needs gt, gte, lt or lte'),
  ]),
);

// ---- sections ----------------------------------------------------------------------------

export const issuerSchema = z.strictObject({
  name,
  kind: z.enum(['gitlab', 'github', 'oidc']),
  issuer: z.url().meta({ description: 'Expected `iss`; https, or http on a loopback address only.' }),
  audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
  jwks_uri: z.url().optional(),
  jwks_file: z.string().min(1).optional(),
  algorithms: z
    .array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']))
    .min(1)
    .default(['RS256', 'ES256']),
  leeway: durationSchema.prefault('30s'),
  /** Minimum time between two JWKS refetches caused by unknown key ids. */
  jwks_cooldown: durationSchema.prefault('30s'),
  /** How long fetched keys are used before a background refresh. */
  jwks_max_age: durationSchema.prefault('10m'),
  /** Set by `ciport dev issuer` configs: a development issuer, warned about at every start. */
  dev: z.boolean().default(false),
  /** CI job API (gitlab/github kinds): sessions end when their job does (docs/job-liveness.md). */
  job_api: z
    .strictObject({
      url: z.url().meta({ description: 'API base (GitLab …/api/v4, https://api.github.com).' }),
      token: secretSchema.meta({ description: 'GitLab: read_api token. GitHub: token with actions:read.' }),
      poll_interval: durationSchema.prefault('10s'),
      webhook_secret: secretSchema.optional().meta({ description: 'GitLab Job Hook secret token.' }),
    })
    .optional(),
  /** A token's `jti` opens at most one session (a token without `jti` is refused). */
  single_use_jti: z.boolean().default(false),
});

export const targetSchema = z.strictObject({
  name,
  protocol: z.enum(['postgres', 'mysql', 'redis', 'http', 'tcp']),
  address: hostPort,
  database: z.string().min(1).optional(),
  tls: z
    .union([z.boolean(), z.strictObject({ ca: secretSchema.optional(), servername: z.string().optional() })])
    .optional(),
  sslmode: z
    .enum(['disable', 'require', 'verify-ca', 'verify-full'])
    .optional()
    .meta({
      description:
        'protocol postgres: TLS to the upstream. Default: verify-full when `tls` is set, disable otherwise. ' +
        '`tls.ca` / `tls.servername` give the CA bundle and the name checked.',
    }),
  query_audit: z
    .boolean()
    .optional()
    .meta({ description: 'protocol postgres: write `query` audit events (default true).' }),
  query_max_length: z
    .int()
    .min(16)
    .max(1_048_576)
    .optional()
    .meta({ description: 'protocol postgres: statement text kept in `query` events, bytes (default 4096).' }),
  credentials: z
    .strictObject({
      user: z.string().min(1).optional(),
      password: secretSchema.optional(),
      dynamic: z
        .strictObject({
          admin: z.strictObject({ user: z.string().min(1), password: secretSchema }),
          grant: z.array(z.string().min(1)).default([]),
          owner: z.string().min(1),
          create: z.enum(['first_connection', 'session_start']).default('first_connection'),
        })
        .optional()
        .meta({
          description:
            'protocol postgres: a LOGIN role per session (ciport_<id>, VALID UNTIL the session expiry, ' +
            'IN ROLE the granted roles), dropped at session end; objects it owns go to `owner`.',
        }),
      token: secretSchema.optional(),
      kind: z
        .enum(HTTP_INJECTION_KINDS)
        .optional()
        .meta({
          description:
            'protocol http: how the credential is injected. bearer: `Authorization: Bearer <token>`; ' +
            'basic: `Authorization: Basic base64(user:password)`; header: `<header>: <token>`. ' +
            'Default: inferred (token -> bearer, user + password -> basic, header + token -> header).',
        }),
      header: z
        .string()
        .regex(HEADER_NAME_RE, 'an HTTP header name such as X-API-Key')
        .refine((h) => !RESERVED_HEADERS.has(h.toLowerCase()), 'this header cannot be injected')
        .optional()
        .meta({
          description: 'protocol http, kind header: the header that carries `token` (e.g. X-API-Key).',
        }),
    })
    .optional(),
  tags: z
    .array(z.string().min(1))
    .default([])
    .meta({ description: 'Labels such as `production` that policy lint reads.' }),
  description: z.string().optional(),
});

export const ruleSchema = z
  .strictObject({
    name,
    description: z.string().optional(),
    deny: z.boolean().default(false),
    issuer: name,
    when: z.record(z.string().min(1), matcherSchema).default({}),
    allow: z.array(name).default([]),
    max_ttl: durationSchema.optional(),
    grants: z
      .record(name, z.array(z.string().min(1)))
      .optional()
      .meta({
        description:
          "Per target: the database roles a per-session role gets (overrides the target's dynamic.grant).",
      }),
    limits: z
      .strictObject({
        connections: z.int().positive().optional(),
        bytes: z.int().positive().optional(),
      })
      .optional(),
  })
  .superRefine((rule, ctx) => {
    if (rule.deny && rule.allow.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['allow'], message: 'a deny rule cannot also allow targets' });
    }
    if (!rule.deny && rule.allow.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['allow'],
        message: 'an allowing rule must name at least one target',
      });
    }
  });

const storeSchema = z.union([
  z.strictObject({ sqlite: z.strictObject({ path: z.string().min(1) }) }),
  z.strictObject({ postgres: z.strictObject({ url: z.union([z.string().min(1), secretSchema]) }) }),
]);

export const gatewayConfigSchema = z
  .strictObject({
    listen: hostPort.default('127.0.0.1:8443'),
    public_url: z.url().optional(),
    tls: z.strictObject({ cert: secretSchema, key: secretSchema }).optional(),
    data_dir: z.string().min(1).default('./ciport-data'),
    store: storeSchema.optional(),
    admin_tokens: z.array(secretSchema).default([]),
    sessions: z
      .strictObject({
        default_ttl: durationSchema.prefault('15m'),
        lease_timeout: durationSchema.prefault('30s'),
        max_connections: z.int().positive().default(256),
        /** Session creation: a token bucket per CI job, and a ceiling per issuer. */
        rate_limit: z
          .strictObject({
            per_minute: z.number().positive().default(30).meta({
              description:
                'Sessions one CI job may create per minute (GitLab job_id; GitHub check_run_id, else the run attempt; else the subject).',
            }),
            burst: z
              .int()
              .positive()
              .default(10)
              .meta({ description: 'Sessions one CI job may create at once.' }),
            per_issuer: z
              .strictObject({
                per_minute: z.number().positive().default(600),
                burst: z.int().positive().default(200),
              })
              .prefault({})
              .meta({
                description: 'A ceiling over all jobs of one issuer (token bucket: per_minute, burst).',
              }),
          })
          .prefault({}),
        /** A tunnel connection with no bytes either way for this long is reset. */
        connection_idle_timeout: durationSchema.prefault('15m'),
        /** How long a TCP connect to a target may take before 502. */
        connect_timeout: durationSchema.prefault('10s'),
      })
      .prefault({}),
    /** Limits of the gateway's HTTP/2 + HTTP/1.1 port. */
    server: z
      .strictObject({
        /** Whole API request (headers and body) must arrive within this. */
        request_timeout: durationSchema.prefault('10s'),
        /** TLS handshake must complete within this. */
        handshake_timeout: durationSchema.prefault('10s'),
        /** A client connection with no open stream and no traffic for this long is closed. */
        idle_timeout: durationSchema.prefault('2m'),
        /** Largest accepted API request body. */
        max_body_bytes: z.int().positive().default(65_536),
        /** Largest accepted request header block (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE). */
        max_header_bytes: z.int().min(1024).default(16_384),
        /** HTTP/2 streams one client connection may have open at once. */
        max_concurrent_streams: z.int().positive().default(1000),
        /** SIGTERM: live tunnels get this long before their sessions end. */
        drain_grace: durationSchema.prefault('10s'),
      })
      .prefault({}),
    /** What the audit log records of repeated denials (docs/audit.md, "Denials"). */
    audit: z
      .strictObject({
        denials: z
          .strictObject({
            window: durationSchema.prefault('1m').meta({
              description:
                'Identical denials (issuer, rule, failing claim, project, code) after the first in this window are counted into one session.denied_summary.',
            }),
            max_per_issuer: z.int().positive().default(100).meta({
              description:
                'session.denied events one issuer may write per window; past it its denials are counted into one overflow summary.',
            }),
          })
          .prefault({}),
      })
      .prefault({}),
    issuers: z.array(issuerSchema).default([]),
    targets: z.array(targetSchema).default([]),
    rules: z.array(ruleSchema).default([]),
  })
  .superRefine((cfg, ctx) => {
    unique(cfg.issuers, 'issuers', ctx);
    unique(cfg.targets, 'targets', ctx);
    unique(cfg.rules, 'rules', ctx);
    const issuerNames = new Set(cfg.issuers.map((i) => i.name));
    cfg.rules.forEach((rule, i) => {
      if (!issuerNames.has(rule.issuer)) {
        ctx.addIssue({
          code: 'custom',
          path: ['rules', i, 'issuer'],
          message: `no issuer named "${rule.issuer}" (known: ${[...issuerNames].join(', ') || 'none'})`,
        });
      }
    });
  });

function unique(items: { name: string }[], section: string, ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  items.forEach((item, i) => {
    if (seen.has(item.name)) {
      ctx.addIssue({ code: 'custom', path: [section, i, 'name'], message: `duplicate name "${item.name}"` });
    }
    seen.add(item.name);
  });
}

export type GatewayConfig = z.output<typeof gatewayConfigSchema>;
export type IssuerConfig = z.output<typeof issuerSchema>;
export type TargetConfig = z.output<typeof targetSchema>;
export type RuleConfig = z.output<typeof ruleSchema>;

/** The JSON Schema editors use (`ciport config schema`), generated from the same zod schema. */
export function gatewayJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(gatewayConfigSchema, { io: 'input', unrepresentable: 'any' }),
    title: 'ciport gateway configuration',
  };
}
