// Protocol `http`: how a target's credentials become the one header the exit injects. Which
// scheme the fields describe (bearer, basic, a custom header, none) is decided with the schema's
// own rules (src/config/targets/http.ts), so the load and the exit can never disagree.
import { validateHeaderName, validateHeaderValue } from 'node:http';
import type { Secret } from '../../config/secret.js';
import {
  HTTP_INJECTION_KINDS,
  type HttpCredentialFields,
  type HttpInjectionKind,
  httpInjectionKind,
} from '../../config/targets/http.js';
import { ConfigError } from '../../errors/index.js';
import { JOB_SIGNING_HEADERS, type SigV4Spec } from './sigv4.js';

export { HTTP_INJECTION_KINDS, type HttpInjectionKind };

/** What the exit puts on every upstream request. Secrets stay wrapped until a request is sent. */
export type HttpInjection =
  | { readonly kind: 'none' }
  | { readonly kind: 'bearer'; readonly token: Secret }
  | { readonly kind: 'basic'; readonly user: string; readonly password: Secret }
  | { readonly kind: 'header'; readonly header: string; readonly value: Secret }
  /** Not a header: the exit signs each request (sigv4.ts). */
  | ({ readonly kind: 'aws_sigv4' } & Readonly<SigV4Spec>);

/** The credential fields `httpInjectionFrom` reads (an http target's `credentials`). */
export interface HttpCredentialsInput extends HttpCredentialFields {
  password?: Secret | undefined;
  token?: Secret | undefined;
  aws_sigv4?: SigV4Spec | undefined;
}

/**
 * The injection spec of an `http` target, from its `credentials`. Throws
 * ConfigError(CIPORT_E_CONFIG_INVALID) when the fields do not describe exactly one scheme (the
 * schema refuses those at load; a target built in code gets the same answer here).
 * Secrets need not be resolved yet; `checkHttpInjection` validates their values later.
 */
export function httpInjectionFrom(target: {
  name: string;
  credentials?: HttpCredentialsInput | undefined;
}): HttpInjection {
  const c = target.credentials ?? {};
  const resolved = httpInjectionKind(c);
  const { user, password, token, header } = c;
  const kind = 'kind' in resolved ? resolved.kind : undefined;
  if (kind === 'none') return { kind };
  if (kind === 'aws_sigv4' && c.aws_sigv4) return { kind, ...c.aws_sigv4 };
  if (kind === 'bearer' && token) return { kind, token };
  if (kind === 'basic' && user !== undefined && password) return { kind, user, password };
  if (kind === 'header' && header !== undefined && token) return { kind, header, value: token };
  throw new ConfigError(
    'CIPORT_E_CONFIG_INVALID',
    `targets.${target.name}.credentials: ${'error' in resolved ? resolved.error : 'incomplete'}`,
    { details: { target: target.name } },
  );
}

/** The header (lower-case name) the exit sets, or undefined for `none`. Reveals the secret. */
export function injectedHeader(injection: HttpInjection): { name: string; value: string } | undefined {
  switch (injection.kind) {
    case 'none':
    case 'aws_sigv4':
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
 * `authorization` (ciport holds that position) and the injected header's own name; for
 * `aws_sigv4`, every header of a SigV4 signature.
 */
export function replacedHeaders(injection: HttpInjection): Set<string> {
  const names = new Set(['authorization']);
  if (injection.kind === 'header') names.add(injection.header.toLowerCase());
  // A signature of the job's own (with credentials it should not have) never reaches AWS.
  if (injection.kind === 'aws_sigv4') for (const name of JOB_SIGNING_HEADERS) names.add(name);
  return names;
}

/**
 * Check that the injection can be sent: its secrets are resolved and form a valid header value
 * (no CR, LF or NUL). Errors name the target and the secret's origin, never its value.
 */
export function checkHttpInjection(targetName: string, injection: HttpInjection): void {
  const secret = injectedSecret(injection);
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

/** The secret an injection sends, if any. */
export function injectedSecret(injection: HttpInjection): Secret | undefined {
  return injection.kind === 'bearer'
    ? injection.token
    : injection.kind === 'basic'
      ? injection.password
      : injection.kind === 'header'
        ? injection.value
        : undefined;
}

/**
 * The upstream answered 401 to an injected credential: a provider secret is read again (rate
 * limited), so the next request carries a rotated value.
 */
export function noteUpstreamStatus(injection: HttpInjection, status: number): void {
  if (status === 401) void injectedSecret(injection)?.refused();
}
