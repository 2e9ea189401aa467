// The longest lifetime (`exp` − `iat`) a token may claim. A signed token valid for years (or
// `exp: 1e20`) is a standing credential, not a job token; bounding it bounds what a leaked
// token is worth. Both times are the issuer's own, so no clock leeway applies.
//
// Defaults per kind, from what the platforms mint:
//   github  1h   GitHub Actions ID tokens live 5 min (exp − iat = 300 s); 1h leaves room for GHES.
//   gitlab  24h  GitLab `id_tokens` live as long as the job's timeout (default 1h, hosted
//                runners at most 3h); a self-managed project may allow longer jobs: raise it.
//   oidc    24h  Keycloak (5 min), Okta (1h) and Entra ID (60–90 min, configurable up to 1 day).

import { formatDuration } from '../config/duration.js';
import type { IssuerConfig } from '../config/schema.js';
import { reject } from './rejections.js';

const HOUR = 3_600_000;

export const DEFAULT_MAX_TOKEN_LIFETIME_MS: Readonly<Record<IssuerConfig['kind'], number>> = {
  github: HOUR,
  gitlab: 24 * HOUR,
  oidc: 24 * HOUR,
};

/** The issuer's `max_token_lifetime`, or its kind's default, in milliseconds. */
export function maxTokenLifetimeMs(config: Pick<IssuerConfig, 'kind' | 'max_token_lifetime'>): number {
  return config.max_token_lifetime ?? DEFAULT_MAX_TOKEN_LIFETIME_MS[config.kind];
}

/**
 * @throws TokenRejectedError CIPORT_E_TOKEN_LIFETIME_TOO_LONG when `exp − iat` exceeds the
 * issuer's maximum. `exp` and `iat` were checked as present numbers by the verifier.
 */
export function assertLifetime(config: IssuerConfig, claims: Record<string, unknown>): void {
  const lifetimeMs = ((claims.exp as number) - (claims.iat as number)) * 1000;
  const maxMs = maxTokenLifetimeMs(config);
  if (!(lifetimeMs <= maxMs)) {
    throw reject(
      'CIPORT_E_TOKEN_LIFETIME_TOO_LONG',
      `token lifetime (exp − iat) exceeds ${formatDuration(maxMs)}, the maximum for issuer "${config.name}" (max_token_lifetime)`,
    );
  }
}
