// Which URLs ciport may fetch keys from. Keys decide who gets in, so they must come over TLS;
// plain http is tolerated only on the loopback interface, where a local dev or test issuer
// runs and nothing on the network can tamper with the response.
import { isIPv4 } from 'node:net';
import { ConfigError } from '../errors/index.js';

/** True for `localhost`, 127.0.0.0/8 and `::1` (as `URL.hostname` spells them). */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/\.$/, '');
  if (host === 'localhost') return true;
  if (host === '[::1]' || host === '::1') return true;
  return isIPv4(host) && host.startsWith('127.');
}

/** Why `url` may not serve keys, or undefined when it may. */
export function keyUrlProblem(url: URL): string | undefined {
  if (url.protocol === 'https:') return undefined;
  if (url.protocol === 'http:') {
    return isLoopbackHost(url.hostname)
      ? undefined
      : `plain http is only allowed on a loopback address (127.0.0.0/8, ::1, localhost), not ${url.hostname}; use https`;
  }
  return `unsupported scheme ${url.protocol.replace(/:$/, '')}; use https`;
}

/**
 * Parse and vet an issuer or JWKS URL from the configuration.
 * @throws ConfigError CIPORT_E_CONFIG_INVALID naming `what` (e.g. `issuers[gitlab].jwks_uri`)
 */
export function requireKeyUrl(text: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch (cause) {
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `${what}: not a URL: ${text}`, { cause });
  }
  const problem = keyUrlProblem(url);
  if (problem) throw new ConfigError('CIPORT_E_CONFIG_INVALID', `${what}: ${problem}`);
  if (url.username || url.password) {
    throw new ConfigError('CIPORT_E_CONFIG_INVALID', `${what}: credentials in the URL are not supported`);
  }
  return url;
}

/**
 * A development issuer: marked `dev: true`, or served over plain http (which only loopback
 * issuers may be, i.e. `ciport dev issuer` or a test fixture). A gateway trusting one says so
 * loudly at every start: anyone who can run a process on that host can mint tokens for it.
 */
export function isDevelopmentIssuer(issuer: { issuer: string; dev: boolean }): boolean {
  return issuer.dev || issuer.issuer.startsWith('http:');
}
