// The audience a GitHub Actions job asks its token endpoint for, by default: what the gateway
// says it accepts (`GET /v1/info`), so that `public_url` with or without its port, a load
// balancer's name or a custom audience all work without `--audience`. Asked only when the
// token does come from GitHub (GitLab puts the audience in the job's `id_tokens:`).
import { githubAudience, parseGatewayInfo } from '../transport/gateway-info.js';
import type { GatewayClient } from './gateway.js';
import { defaultAudience } from './token.js';

/**
 * @returns the audience of the gateway's `github` issuer, or the gateway URL when the gateway
 *   predates `/v1/info` (any non-200 or unreadable answer) or has no GitHub issuer.
 * @throws GatewayUnreachableError / TlsError: a gateway that cannot be reached now will not
 *   take the token either, and the job learns why sooner.
 */
export async function advertisedAudience(client: GatewayClient): Promise<string> {
  const fallback = defaultAudience(client.url);
  const res = await client.request('GET', '/v1/info', { timeoutMs: 10_000 });
  const info = res.status === 200 ? parseGatewayInfo(res.body) : undefined;
  return info ? githubAudience(info, fallback) : fallback;
}
