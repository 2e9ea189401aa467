// The gateway configuration, as one zod schema. It is the single source of truth: the loader
// validates with it, `ciport config schema` emits JSON Schema from it, and the types below are
// inferred from it. Objects are strict: an unknown key is an error, not a silent no-op.
import { z } from 'zod';
import { adminTokenSchema, uniqueAdminTokenNames } from './admin-tokens.js';
import { approvalsSectionSchema, ruleApprovalSchema } from './approvals.js';
import { auditSinkSchema } from './audit-sinks.js';
import { parseClaimPath } from './claim-path.js';
import { durationSchema, hostPortSchema, nameSchema as name, secretSchema } from './fields.js';
import { sessionPolicySchema } from './session-policy.js';
import { checkRuleSsh, checkRuleSshTargets, ruleSshSchema, sshSectionSchema } from './ssh.js';
import { ssoSchema } from './sso.js';
import { type TargetConfig, targetSchema } from './targets/index.js';
import { checkVaultUse, vaultConfigSchema } from './vault.js';

export type { TargetConfig };

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

/** `policy.disclose` levels, from least to most detail (src/policy/disclose.ts). */
export const DISCLOSE_LEVELS = ['minimal', 'condition', 'full'] as const;

// ---- sections ----------------------------------------------------------------------------

export const issuerSchema = z.strictObject({
  name,
  kind: z
    .enum(['gitlab', 'github', 'oidc'])
    .meta({ description: 'Claim normalisation: GitLab CI, GitHub Actions, or any OIDC provider.' }),
  issuer: z.url().meta({ description: 'Expected `iss`; https, or http on a loopback address only.' }),
  audience: z
    .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
    .meta({ description: 'Accepted `aud` value(s); a token must carry one of them.' }),
  jwks_uri: z.url().optional().meta({ description: 'JWKS URL (default: from OIDC discovery).' }),
  jwks_file: z
    .string()
    .min(1)
    .optional()
    .meta({ description: 'Local JWKS file instead of fetching keys (air-gapped gateways).' }),
  algorithms: z
    .array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']))
    .min(1)
    .default(['RS256', 'ES256'])
    .meta({ description: 'Signature algorithms accepted (never `none` or HMAC).' }),
  leeway: durationSchema
    .prefault('30s')
    .meta({ description: 'Clock skew allowed on `exp`, `nbf` and `iat`.' }),
  max_token_lifetime: durationSchema.optional().meta({
    description:
      'Longest accepted token lifetime (`exp` − `iat`); longer tokens are refused. ' +
      'Default by kind: github 1h, gitlab 24h, oidc 24h (docs/identity.md).',
  }),
  jwks_cooldown: durationSchema
    .prefault('30s')
    .meta({ description: 'Minimum time between two JWKS refetches caused by unknown key ids.' }),
  jwks_max_age: durationSchema
    .prefault('10m')
    .meta({ description: 'How long fetched keys are used before a background refresh.' }),
  dev: z
    .boolean()
    .default(false)
    .meta({
      description:
        'A development issuer (`ciport dev issuer`): warned about at every start; never in production. ' +
        'An issuer served over plain http (loopback only) counts as one too.',
    }),
  /** CI job API (gitlab/github kinds): sessions end when their job does (docs/job-liveness.md). */
  job_api: z
    .strictObject({
      url: z.url().meta({ description: 'API base (GitLab …/api/v4, https://api.github.com).' }),
      token: secretSchema.meta({ description: 'GitLab: read_api token. GitHub: token with actions:read.' }),
      poll_interval: durationSchema.prefault('10s').meta({ description: 'How often live jobs are polled.' }),
      webhook_secret: secretSchema.optional().meta({ description: 'GitLab Job Hook secret token.' }),
    })
    .optional()
    .meta({ description: 'CI job API (gitlab/github kinds): sessions end when their job does.' }),
  single_use_jti: z.boolean().default(false).meta({
    description: "A token's `jti` opens at most one session (a token without `jti` is refused).",
  }),
});

export const ruleSchema = z
  .strictObject({
    name,
    description: z.string().optional().meta({ description: 'Free text for people.' }),
    deny: z
      .boolean()
      .default(false)
      .meta({ description: 'A deny rule: a match refuses the session whatever else allows it.' }),
    issuer: name.meta({ description: 'The issuer whose tokens this rule matches.' }),
    when: z
      .record(z.string().min(1), matcherSchema)
      .default({})
      .meta({
        description:
          'Claim matchers, all of which must hold. A key is a claim name, a normalised fact, or a path into nested claims ' +
          '(`realm_access.roles`; quote a name that contains dots: `resource_access."my.client".roles`).',
      }),
    allow: z.array(name).default([]).meta({ description: 'Targets the rule grants.' }),
    max_ttl: durationSchema
      .optional()
      .meta({ description: 'Longest session the rule grants (default: sessions.default_ttl).' }),
    grants: z
      .record(name, z.array(z.string().min(1)))
      .optional()
      .meta({
        description:
          "Per target: the database roles a per-session role gets (overrides the target's dynamic.grant).",
      }),
    ssh: ruleSshSchema,
    session_policy: sessionPolicySchema.optional(),
    limits: z
      .strictObject({
        connections: z.int().positive().optional(),
        bytes: z.int().positive().optional(),
      })
      .optional()
      .meta({
        description:
          'Per session granted by this rule: `connections` open at once, `bytes` carried (docs/gateway.md).',
      }),
    approval: ruleApprovalSchema.optional(),
  })
  .superRefine((rule, ctx) => {
    for (const key of Object.keys(rule.when)) {
      const parsed = parseClaimPath(key);
      if ('error' in parsed) ctx.addIssue({ code: 'custom', path: ['when', key], message: parsed.error });
    }
    checkRuleSsh(rule, ctx);
    if (rule.deny && rule.approval) {
      ctx.addIssue({ code: 'custom', path: ['approval'], message: 'a deny rule grants nothing to approve' });
    }
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
    listen: hostPortSchema
      .default('127.0.0.1:8443')
      .meta({ description: 'The one TLS port: API, tunnels, agents. Port 0 picks a free one.' }),
    public_url: z
      .url()
      .optional()
      .meta({ description: 'How clients and agents reach this gateway (default: the bound URL).' }),
    tls: z
      .strictObject({
        cert: secretSchema,
        key: secretSchema,
        ca: z
          .strictObject({
            file: z.string().min(1).meta({ description: 'PEM file of the CA certificate(s).' }),
          })
          .optional()
          .meta({
            description:
              'The CA that cert chains to, published unchanged at GET /v1/ca.crt for jobs to trust (checked at start to issue cert). Without it, /v1/ca.crt answers 404 CIPORT_E_CA_UNAVAILABLE.',
          }),
      })
      .optional()
      .meta({ description: 'PEM certificate chain and key. Without it: a private CA in data_dir.' }),
    data_dir: z
      .string()
      .min(1)
      .default('./ciport-data')
      .meta({ description: 'Generated CA, SQLite store and other state.' }),
    store: storeSchema.optional().meta({
      description: 'Sessions and audit: {sqlite: {path}} (default, in data_dir) or {postgres: {url}}.',
    }),
    admin_tokens: z.array(adminTokenSchema).default([]).meta({
      description:
        'Who may use the admin API (`ciport sessions`, `ciport agents`, `ciport review --gateway`), one entry per token holder, in either form: a bare secret ({env: VAR} or {file: PATH}; role admin, named admin-token-N after its 1-based position), or a named token with the keys below (name, token, role or roles, and groups: approval groups, docs/approvals.md). The audit log records names, never values. See docs/operators.md.',
    }),
    sso: ssoSchema.optional().meta({
      description:
        "Operator sign-in through the organisation's OpenID provider: the console (/ui) and `ciport login` (docs/sso.md).",
    }),
    sessions: z
      .strictObject({
        default_ttl: durationSchema
          .prefault('15m')
          .meta({ description: 'Session lifetime when the client asks for none.' }),
        lease_timeout: durationSchema
          .prefault('30s')
          .meta({ description: 'A session without a heartbeat for this long ends (lease_expired).' }),
        max_connections: z
          .int()
          .positive()
          .default(256)
          .meta({ description: 'Tunnel connections one session may have open at once.' }),
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
                description:
                  'A ceiling over the sessions of all jobs of one issuer (token bucket: per_minute, burst). Only sessions the policy allows take from it.',
              }),
            denied: z
              .strictObject({
                per_minute: z.number().positive().default(30).meta({
                  description:
                    'Requests the policy denies, per project of an issuer (GitLab project_id, GitHub repository_id, else the subject), per minute; beyond them: 429.',
                }),
                burst: z
                  .int()
                  .positive()
                  .default(20)
                  .meta({ description: 'Denied requests one project may make at once.' }),
                per_issuer: z
                  .strictObject({
                    per_minute: z.number().positive().default(300),
                    burst: z.int().positive().default(100),
                  })
                  .prefault({})
                  .meta({ description: 'A ceiling over the denied requests of all projects of one issuer.' }),
              })
              .prefault({})
              .meta({
                description:
                  'Denied requests have their own buckets, so that tokens no rule allows (anyone can mint them on a shared issuer) never spend the per_issuer ceiling of allowed jobs.',
              }),
          })
          .prefault({}),
        connection_idle_timeout: durationSchema
          .prefault('15m')
          .meta({ description: 'A tunnel connection with no bytes either way for this long is reset.' }),
        connect_timeout: durationSchema
          .prefault('10s')
          .meta({ description: 'How long a TCP connect to a target may take before 502.' }),
      })
      .prefault({}),
    /** Limits of the gateway's HTTP/2 + HTTP/1.1 port. */
    server: z
      .strictObject({
        request_timeout: durationSchema
          .prefault('10s')
          .meta({ description: 'Whole API request (headers and body) must arrive within this.' }),
        handshake_timeout: durationSchema
          .prefault('10s')
          .meta({ description: 'TLS handshake must complete within this.' }),
        idle_timeout: durationSchema.prefault('2m').meta({
          description: 'A client connection with no open stream and no traffic for this long is closed.',
        }),
        max_body_bytes: z
          .int()
          .positive()
          .default(65_536)
          .meta({ description: 'Largest accepted API request body.' }),
        max_header_bytes: z.int().min(1024).default(16_384).meta({
          description: 'Largest accepted request header block (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).',
        }),
        max_concurrent_streams: z
          .int()
          .positive()
          .default(1000)
          .meta({ description: 'HTTP/2 streams one client connection may have open at once.' }),
        drain_grace: durationSchema
          .prefault('10s')
          .meta({ description: 'SIGTERM: live tunnels get this long before their sessions end.' }),
      })
      .prefault({}),
    /** What the gateway serves to jobs that download the runner client (docs/gateway.md). */
    client: z
      .strictObject({
        linux_x64: z
          .union([z.string().min(1), z.literal(false)])
          .optional()
          .meta({
            description:
              'The self-contained runner client served at GET /v1/client/linux-x64 (default: dist/client/ciport of the installed package, when it exists); false: serve none.',
          }),
        max_downloads: z
          .int()
          .positive()
          .default(32)
          .meta({ description: 'Client downloads streamed at once; more get 429 with Retry-After.' }),
        stall_timeout: durationSchema.prefault('60s').meta({
          description: 'A download whose reader takes no byte for this long is cut, freeing its slot.',
        }),
      })
      .prefault({})
      .meta({
        description:
          'The runner client the gateway serves to jobs (docs/gateway.md, "Serving the client and the CA").',
      }),
    issuers: z
      .array(issuerSchema)
      .default([])
      .meta({ description: 'OIDC issuers whose job tokens are accepted (docs/identity.md).' }),
    targets: z.array(targetSchema).default([]).meta({ description: 'What ports lead to.' }),
    vault: vaultConfigSchema,
    ssh: sshSectionSchema,
    rules: z
      .array(ruleSchema)
      .default([])
      .meta({ description: 'Policy: which tokens get which targets (docs/policy.md).' }),
    policy: z
      .strictObject({
        disclose: z
          .enum(DISCLOSE_LEVELS)
          .default('condition')
          .meta({
            description:
              'What a denied job is told (403 bodies, /v1/whoami). minimal: only that policy denied; ' +
              "condition: the failing condition's claim and the token's own value, no expected values " +
              'or rule names; full: everything `policy explain` shows (docs/policy.md).',
          }),
      })
      .prefault({}),
    approvals: approvalsSectionSchema,
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
        sinks: z.array(auditSinkSchema).default([]).meta({
          description:
            'Where every audit event is also delivered, in chain order, at least once: webhook, syslog, file (docs/audit-sinks.md).',
        }),
      })
      .prefault({}),
  })
  .superRefine((cfg, ctx) => {
    unique(cfg.audit.sinks, ['audit', 'sinks'], ctx);
    unique(cfg.approvals.webhooks, ['approvals', 'webhooks'], ctx);
    unique(cfg.issuers, 'issuers', ctx);
    unique(cfg.targets, 'targets', ctx);
    unique(cfg.rules, 'rules', ctx);
    uniqueAdminTokenNames(cfg.admin_tokens, ctx);
    checkVaultUse(cfg, ctx);
    checkRuleSshTargets(cfg, ctx);
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

function unique(items: { name: string }[], section: string | string[], ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  const at = typeof section === 'string' ? [section] : section;
  items.forEach((item, i) => {
    if (seen.has(item.name)) {
      ctx.addIssue({ code: 'custom', path: [...at, i, 'name'], message: `duplicate name "${item.name}"` });
    }
    seen.add(item.name);
  });
}

export type GatewayConfig = z.output<typeof gatewayConfigSchema>;
export type IssuerConfig = z.output<typeof issuerSchema>;
export type RuleConfig = z.output<typeof ruleSchema>;

/** The JSON Schema editors use (`ciport config schema`), generated from the same zod schema. */
export function gatewayJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(gatewayConfigSchema, { io: 'input', unrepresentable: 'any' }),
    title: 'ciport gateway configuration',
  };
}
