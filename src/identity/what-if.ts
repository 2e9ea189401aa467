// The offline what-if of `ciport policy explain --claims` and the console's explain box: a claims
// object (not a token: nothing is verified) made into the principal and facts policy matches,
// for the issuer named, or the one whose `issuer` equals the claims' `iss`, or the only one.
import type { GatewayConfig, IssuerConfig } from '../config/schema.js';
import { ConfigError, UsageError } from '../errors/index.js';
import { type ClaimFacts, normalize, type Principal } from './principal.js';

export interface WhatIfSubject {
  issuer: IssuerConfig;
  principal: Principal;
  facts: ClaimFacts;
}

/**
 * `claims` as policy would see them from `issuerName` (or the issuer picked by `iss`).
 * `source` names where the claims came from, for messages (`--claims FILE`, `the pasted claims`).
 * @throws CIPORT_E_CLAIMS_INVALID when `claims` is not one object or names no configured issuer.
 */
export function whatIfSubject(
  cfg: Pick<Readonly<GatewayConfig>, 'issuers'>,
  claims: unknown,
  issuerName: string | undefined,
  source: string,
): WhatIfSubject {
  if (!claims || typeof claims !== 'object' || Array.isArray(claims)) {
    throw new ConfigError('CIPORT_E_CLAIMS_INVALID', `${source}: must hold one JSON object of claims`);
  }
  const record = claims as Record<string, unknown>;
  const issuer = pickIssuer(cfg, record, issuerName, source);
  const { principal, facts } = normalize(issuer.kind, issuer.name, record);
  return { issuer, principal, facts };
}

function pickIssuer(
  cfg: Pick<Readonly<GatewayConfig>, 'issuers'>,
  claims: Record<string, unknown>,
  name: string | undefined,
  source: string,
): IssuerConfig {
  const known = cfg.issuers.map((i) => i.name).join(', ') || 'none';
  if (name) {
    const byName = cfg.issuers.find((i) => i.name === name);
    if (!byName) throw new UsageError(`--issuer: no issuer named "${name}" (known: ${known})`);
    return byName;
  }
  const byIss = cfg.issuers.find((i) => i.issuer === claims.iss);
  if (byIss) return byIss;
  if (claims.iss === undefined && cfg.issuers.length === 1) return cfg.issuers[0]!;
  const iss = claims.iss === undefined ? 'no "iss"' : `"iss" ${JSON.stringify(claims.iss)}`;
  throw new ConfigError(
    'CIPORT_E_CLAIMS_INVALID',
    `${source}: ${iss} matches no configured issuer; pass --issuer NAME (known: ${known})`,
  );
}
