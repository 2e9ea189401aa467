// `GET /v1/info`: what a gateway tells anyone before authentication, so that clients need no
// out-of-band settings to talk to it. Today: its version and, per issuer, the audiences it
// accepts (a GitHub Actions job must ask its token endpoint for one of them). Nothing here is
// secret: audiences are in every token the gateway accepts. Both sides read this module.

import { CIPORT_VERSION } from '../version.js';

export { CIPORT_VERSION };

export interface GatewayInfoIssuer {
  name: string;
  kind: 'gitlab' | 'github' | 'oidc';
  audiences: string[];
}

export interface GatewayInfo {
  version: string;
  issuers: GatewayInfoIssuer[];
}

export function gatewayInfo(
  issuers: readonly { name: string; kind: GatewayInfoIssuer['kind']; audience: string | readonly string[] }[],
): GatewayInfo {
  return {
    version: CIPORT_VERSION,
    issuers: issuers.map((i) => ({
      name: i.name,
      kind: i.kind,
      audiences: typeof i.audience === 'string' ? [i.audience] : [...i.audience],
    })),
  };
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
  return valid ? { version, issuers } : undefined;
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
