// Protocol `http`: how a target's credentials become the one header the exit injects.
//
// A target's `credentials` carry `user`, `password`, `token`, and for HTTP which scheme
// (`kind`) and, for a custom header, its name (`header`). Without `kind`, it is inferred:
//
//   token                     -> bearer   Authorization: Bearer <token>
//   user + password           -> basic    Authorization: Basic base64(user:password)
//   header + token            -> header   <header>: <token>
//   nothing                   -> none     (no injection; client Authorization is still removed)
//
// Anything ambiguous or incomplete is a configuration error naming the target, never a guess.
import { validateHeaderName, validateHeaderValue } from 'node:http';
import type { Secret } from '../../config/secret.js';
import { ConfigError } from '../../errors/index.js';

export type HttpInjectionKind = (typeof HTTP_INJECTION_KINDS)[number];

/** What the exit puts on every upstream request. Secrets stay wrapped until a request is sent. */
export type HttpInjection =
  | { readonly kind: 'none' }
  | { readonly kind: 'bearer'; readonly token: Secret }
  | { readonly kind: 'basic'; readonly user: string; readonly password: Secret }
  | { readonly kind: 'header'; readonly header: string; readonly value: Secret };

import { HEADER_NAME_RE, HTTP_INJECTION_KINDS, RESERVED_HEADERS } from '../../config/http-credentials.js';

export { HTTP_INJECTION_KINDS };

/** The credential fields `httpInjectionFrom` reads (targetSchema.credentials). */
export interface HttpCredentialsInput {
  user?: string | undefined;
  password?: Secret | undefined;
  token?: Secret | undefined;
  kind?: HttpInjectionKind | undefined;
  header?: string | undefined;
}

/**
 * The injection spec of an `http` target, from its `credentials`. Throws
 * ConfigError(CIPORT_E_CONFIG_INVALID) when the fields do not describe exactly one scheme.
 * Secrets need not be resolved yet; `checkHttpInjection` validates their values later.
 */
export function httpInjectionFrom(target: {
  name: string;
  credentials?: HttpCredentialsInput | undefined;
}): HttpInjection {
  const where = `targets.${target.name}.credentials`;
  const c = target.credentials ?? {};
  const invalid = (message: string) =>
    new ConfigError('CIPORT_E_CONFIG_INVALID', `${where}: ${message}`, { details: { target: target.name } });
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
    throw invalid(
      has.token
        ? 'both a token and user/password are set; say which one to inject with kind: bearer|basic|header'
        : 'user without password: basic authentication needs both',
    );
  }
  const forbid = (fields: (keyof typeof has)[], k: string) => {
    const extra = fields.filter((f) => has[f]);
    if (extra.length > 0) throw invalid(`kind ${k} does not use ${extra.join(', ')}`);
  };
  switch (kind) {
    case 'none':
      return { kind: 'none' };
    case 'bearer':
      if (!c.token) throw invalid('kind bearer needs token');
      forbid(['user', 'password', 'header'], kind);
      return { kind, token: c.token };
    case 'basic':
      if (c.user === undefined || !c.password) throw invalid('kind basic needs user and password');
      if (c.user.includes(':')) throw invalid('a basic-auth user cannot contain ":"');
      forbid(['token', 'header'], kind);
      return { kind, user: c.user, password: c.password };
    case 'header': {
      if (c.header === undefined || !c.token) throw invalid('kind header needs header and token');
      if (!HEADER_NAME_RE.test(c.header)) throw invalid(`"${c.header}" is not a valid header name`);
      if (RESERVED_HEADERS.has(c.header.toLowerCase()))
        throw invalid(`header ${c.header} cannot be injected`);
      forbid(['user', 'password'], kind);
      return { kind, header: c.header, value: c.token };
    }
  }
}

/** The header (lower-case name) the exit sets, or undefined for `none`. Reveals the secret. */
export function injectedHeader(injection: HttpInjection): { name: string; value: string } | undefined {
  switch (injection.kind) {
    case 'none':
      return undefined;
    case 'bearer':
      return { name: 'authorization', value: `Bearer ${injection.token.reveal()}` };
    case 'basic': {
      const pair = `${injection.user}:${injection.password.reveal()}`;
      return { name: 'authorization', value: `Basic ${Buffer.from(pair, 'utf8').toString('base64')}` };
    }
    case 'header':
      return { name: injection.header.toLowerCase(), value: injection.value.reveal() };
  }
}

/**
 * Headers a client may send that the exit always removes before the upstream sees them:
 * `authorization` (ciport holds that position) and the injected header's own name.
 */
export function replacedHeaders(injection: HttpInjection): Set<string> {
  const names = new Set(['authorization']);
  if (injection.kind === 'header') names.add(injection.header.toLowerCase());
  return names;
}

/**
 * Check that the injection can be sent: its secrets are resolved and form a valid header value
 * (no CR, LF or NUL). Errors name the target and the secret's origin, never its value.
 */
export function checkHttpInjection(targetName: string, injection: HttpInjection): void {
  const secret =
    injection.kind === 'bearer'
      ? injection.token
      : injection.kind === 'basic'
        ? injection.password
        : injection.kind === 'header'
          ? injection.value
          : undefined;
  if (!secret) return;
  const where = `targets.${targetName}.credentials`;
  // reveal() throws CIPORT_E_SECRET_UNAVAILABLE when the secret was never resolved.
  if (secret.reveal().trim() === '') {
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `${where}: ${secret.origin} is empty`, {
      details: { target: targetName },
    });
  }
  const header = injectedHeader(injection);
  try {
    if (header) {
      validateHeaderName(header.name);
      validateHeaderValue(header.name, header.value);
    }
  } catch {
    throw new ConfigError(
      'CIPORT_E_CONFIG_INVALID',
      `${where}: ${secret.origin} holds characters not allowed in an HTTP header (CR, LF, NUL or control characters)`,
      { details: { target: targetName } },
    );
  }
}
