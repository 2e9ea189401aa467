// protocol http: the exit parses the application's requests and injects one header: bearer,
// basic or a custom header (src/exits/http, docs/http.md). Which one the credentials describe is
// decided here, so that an ambiguous or incomplete set is refused at load, with its path.
// `aws_sigv4` is the one kind that is not a header: the exit signs each request (docs/aws.md).
import { z } from 'zod';
import { targetSecretSchema } from '../fields.js';
import {
  awsRegionSchema,
  awsRoleSchema,
  keysOf,
  targetMember,
  upstreamTlsSchema,
  userPasswordFields,
} from './member.js';

export const HTTP_INJECTION_KINDS = ['bearer', 'basic', 'header'] as const;
export type HttpInjectionKind = (typeof HTTP_INJECTION_KINDS)[number];

/**
 * Header names an operator may not inject into: they frame the message or the connection, and
 * the exit owns them (Host, Content-Length, hop-by-hop headers, Expect).
 */
export const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'upgrade',
  'te',
  'trailer',
  'expect',
]);

/** RFC 9110 token: the characters a header field name may use. */
export const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The credential fields of an http target, secrets resolved or not. */
export interface HttpCredentialFields {
  user?: string | undefined;
  password?: unknown;
  token?: unknown;
  kind?: HttpInjectionKind | undefined;
  header?: string | undefined;
  aws_sigv4?: unknown;
}

/**
 * Which injection the fields describe. Without `kind`, it is inferred:
 *
 *   token                     -> bearer   Authorization: Bearer <token>
 *   user + password           -> basic    Authorization: Basic base64(user:password)
 *   header + token            -> header   <header>: <token>
 *   nothing                   -> none     (no injection; client Authorization is still removed)
 *
 * Anything ambiguous or incomplete is an error, never a guess.
 */
export function httpInjectionKind(
  c: HttpCredentialFields,
): { kind: HttpInjectionKind | 'none' | 'aws_sigv4' } | { error: string } {
  if (c.aws_sigv4 !== undefined) {
    // The signature covers the whole request: no other credential may ride along with it.
    const extra = (['user', 'password', 'token', 'kind', 'header'] as const).filter(
      (f) => c[f] !== undefined,
    );
    return extra.length > 0
      ? { error: `aws_sigv4 signs the request itself and cannot be combined with ${extra.join(', ')}` }
      : { kind: 'aws_sigv4' };
  }
  const has = {
    user: c.user !== undefined,
    password: c.password !== undefined,
    token: c.token !== undefined,
    header: c.header !== undefined,
  };
  const kind: HttpInjectionKind | 'none' | undefined =
    c.kind ??
    (has.header
      ? 'header'
      : has.token && !has.user && !has.password
        ? 'bearer'
        : !has.token && has.user && has.password
          ? 'basic'
          : !has.token && !has.user && !has.password
            ? 'none'
            : undefined);
  if (kind === undefined) {
    return {
      error: has.token
        ? 'both a token and user/password are set; say which one to inject with kind: bearer|basic|header'
        : 'basic authentication needs both user and password',
    };
  }
  const unused = (fields: (keyof typeof has)[]) => {
    const extra = fields.filter((f) => has[f]);
    return extra.length > 0 ? { error: `kind ${kind} does not use ${extra.join(', ')}` } : { kind };
  };
  switch (kind) {
    case 'none':
      return { kind };
    case 'bearer':
      if (!has.token) return { error: 'kind bearer needs token' };
      return unused(['user', 'password', 'header']);
    case 'basic':
      if (!has.user || !has.password) return { error: 'kind basic needs user and password' };
      if (c.user?.includes(':')) return { error: 'a basic-auth user cannot contain ":"' };
      return unused(['token', 'header']);
    case 'header':
      if (c.header === undefined || !has.token) return { error: 'kind header needs header and token' };
      if (!HEADER_NAME_RE.test(c.header)) return { error: `"${c.header}" is not a valid header name` };
      if (RESERVED_HEADERS.has(c.header.toLowerCase()))
        return { error: `header ${c.header} cannot be injected` };
      return unused(['user', 'password']);
  }
}

export const httpCredentialsSchema = keysOf('the credentials of an http target', {
  ...userPasswordFields,
  token: targetSecretSchema
    .optional()
    .meta({ description: 'The token injected (bearer, or the value of `header`).' }),
  kind: z
    .enum(HTTP_INJECTION_KINDS)
    .optional()
    .meta({
      description:
        'How the credential is injected. bearer: `Authorization: Bearer <token>`; ' +
        'basic: `Authorization: Basic base64(user:password)`; header: `<header>: <token>`. ' +
        'Default: inferred (token -> bearer, user + password -> basic, header + token -> header).',
    }),
  header: z
    .string()
    .regex(HEADER_NAME_RE, 'an HTTP header name such as X-API-Key')
    .refine((h) => !RESERVED_HEADERS.has(h.toLowerCase()), 'this header cannot be injected')
    .optional()
    .meta({ description: 'kind header: the header that carries `token` (e.g. X-API-Key).' }),
  aws_sigv4: keysOf('credentials.aws_sigv4 of an http target', {
    service: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]*$/, 'an AWS signing name such as execute-api, es, s3')
      .meta({ description: 'The signing name of the service (execute-api, es, aoss, s3, lambda, …).' }),
    region: awsRegionSchema,
    role: awsRoleSchema.optional().meta({
      description: "A role the exit assumes (with its own AWS credentials) to sign; default: the exit's own.",
    }),
  })
    .optional()
    .meta({
      description:
        "Sign every request with AWS SigV4 at the exit, with the exit's AWS credentials (or `role`'s); " +
        'the job never holds AWS credentials (docs/aws.md). Excludes token, user, password, header, kind.',
    }),
}).superRefine(
  (credentials, ctx) => {
    const resolved = httpInjectionKind(credentials);
    if ('error' in resolved) ctx.addIssue({ code: 'custom', message: resolved.error });
  },
  // The combination is judged once each field is valid (a bad header name is said once).
  { when: (payload) => payload.issues.length === 0 },
);

export const httpTargetSchema = targetMember(
  'http',
  'HTTP APIs: requests parsed at the exit, one header injected, each request audited (docs/http.md).',
  {
    tls: upstreamTlsSchema.meta({
      description: 'TLS to the upstream (https), verified; never off: true, or {ca, servername}.',
    }),
    credentials: httpCredentialsSchema
      .optional()
      .meta({ description: 'What the exit injects; the job never sees it. Without: nothing injected.' }),
  },
);

export type HttpTarget = z.output<typeof httpTargetSchema>;
