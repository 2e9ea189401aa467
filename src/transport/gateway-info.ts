// `GET /v1/info`: what a gateway tells anyone before authentication, so that clients need no
// out-of-band settings to talk to it: its version, per issuer the audiences it accepts (a GitHub
// Actions job must ask its token endpoint for one of them) and, when operators sign in with SSO,
// where `ciport login` sends the browser (docs/login.md). Nothing here is secret: audiences are
// in every token the gateway accepts, and the provider and public client id are in every
// authorization URL a person's browser visits. Both sides read this module.

import { CIPORT_VERSION } from '../version.js';

export { CIPORT_VERSION };

export interface GatewayInfoIssuer {
  name: string;
  kind: 'gitlab' | 'github' | 'oidc';
  audiences: string[];
}

/** Operator sign-in for `ciport login`; present only with `sso.cli_client_id` configured. */
export interface GatewayInfoSso {
  /** The OpenID provider (its discovery document names the endpoints). */
  issuer: string;
  /** The public client the CLI's authorization requests name. */
  cli_client_id: string;
  /** Scopes to request ("openid" first). */
  scopes: string[];
  /** True when the provider offers the device authorization grant (`ciport login --device`). */
  device: boolean;
}

export interface GatewayInfo {
  version: string;
  issuers: GatewayInfoIssuer[];
  sso?: GatewayInfoSso;
}

export function gatewayInfo(
  issuers: readonly { name: string; kind: GatewayInfoIssuer['kind']; audience: string | readonly string[] }[],
  sso?: GatewayInfoSso,
): GatewayInfo {
  return {
    version: CIPORT_VERSION,
    issuers: issuers.map((i) => ({
      name: i.name,
      kind: i.kind,
      audiences: typeof i.audience === 'string' ? [i.audience] : [...i.audience],
    })),
    ...(sso ? { sso } : {}),
  };
}

/** The `sso` member of an answer, checked; undefined when absent or not that shape. */
export function parseGatewayInfoSso(value: unknown): GatewayInfoSso | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { issuer, cli_client_id, scopes, device } = value as Record<string, unknown>;
  if (typeof issuer !== 'string' || typeof cli_client_id !== 'string' || cli_client_id === '')
    return undefined;
  if (
    !Array.isArray(scopes) ||
    !scopes.every((s) => typeof s === 'string' && /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(s))
  ) {
    return undefined;
  }
  if (typeof device !== 'boolean') return undefined;
  return { issuer, cli_client_id, scopes, device };
}

/** The answer of a gateway, checked: undefined when it is not the shape above. */
export function parseGatewayInfo(body: unknown): GatewayInfo | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const { version, issuers } = body as Record<string, unknown>;
  if (typeof version !== 'string' || !Array.isArray(issuers)) return undefined;
  const valid = issuers.every(
    (i) =>
      typeof i === 'object' &&
      i !== null &&
      typeof i.name === 'string' &&
      ['gitlab', 'github', 'oidc'].includes(i.kind) &&
      Array.isArray(i.audiences) &&
      i.audiences.every((a: unknown) => typeof a === 'string' && a !== ''),
  );
  if (!valid) return undefined;
  const sso = parseGatewayInfoSso((body as Record<string, unknown>).sso);
  return { version, issuers, ...(sso ? { sso } : {}) };
}

/**
 * The audience a GitHub Actions job should request: `fallback` (the gateway URL) when a
 * `github` issuer accepts it, else the first audience of the first `github` issuer, else
 * `fallback` (a gateway with no GitHub issuer will refuse the token whatever it says).
 */
export function githubAudience(info: GatewayInfo, fallback: string): string {
  const github = info.issuers.filter((i) => i.kind === 'github');
  if (github.some((i) => i.audiences.includes(fallback))) return fallback;
  return github[0]?.audiences[0] ?? fallback;
}
