// Where the job's ID token comes from: an environment variable (`CIPORT_ID_TOKEN`, or the one
// `--token-env` names: GitLab `id_tokens:` put it there), or, on GitHub Actions, the runner's
// token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`, needs `permissions: id-token: write`).
import { CiportError } from '../errors/errors.js';
import { oneLine } from './errors.js';

export const DEFAULT_TOKEN_ENV = 'CIPORT_ID_TOKEN';

export interface TokenOptions {
  env: NodeJS.ProcessEnv;
  /** `--token-env NAME`; the variable must then be set (no fallback to GitHub). */
  tokenEnv?: string | undefined;
  /**
   * Audience requested from GitHub: `--audience`, else what the gateway advertises. A function
   * is called only when the token is fetched from GitHub.
   */
  audience: string | (() => Promise<string>);
  timeoutMs?: number;
}

export interface AcquiredToken {
  token: string;
  /** Where it came from, for messages: `env:CIPORT_ID_TOKEN` or `github-actions`. */
  source: string;
  /** The variable holding it, which `exec` removes from the command's environment. */
  envName?: string | undefined;
}

const TOKEN_ENV_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export async function acquireToken(options: TokenOptions): Promise<AcquiredToken> {
  const { env } = options;
  const name = options.tokenEnv ?? DEFAULT_TOKEN_ENV;
  if (!TOKEN_ENV_RE.test(name)) {
    throw new CiportError('CIPORT_E_USAGE', `--token-env: "${name}" is not an environment variable name`);
  }
  const value = env[name]?.trim();
  if (value) return { token: value, source: `env:${name}`, envName: name };
  if (options.tokenEnv === undefined) {
    const url = env.ACTIONS_ID_TOKEN_REQUEST_URL;
    const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
    if (url && requestToken) {
      const token = await fetchGithubActionsToken({
        requestUrl: url,
        requestToken,
        audience: typeof options.audience === 'string' ? options.audience : await options.audience(),
        timeoutMs: options.timeoutMs,
      });
      return { token, source: 'github-actions' };
    }
  }
  const hint =
    options.tokenEnv === undefined
      ? `set ${DEFAULT_TOKEN_ENV} (GitLab: id_tokens:), or grant "id-token: write" on GitHub Actions`
      : `the variable named by --token-env is empty or unset`;
  throw new CiportError('CIPORT_E_NO_TOKEN', `no ID token: ${name} is not set; ${hint}`);
}

export interface GithubTokenRequest {
  requestUrl: string;
  requestToken: string;
  audience: string;
  timeoutMs?: number | undefined;
}

/**
 * GitHub Actions' OIDC endpoint: `GET <ACTIONS_ID_TOKEN_REQUEST_URL>&audience=<aud>` with
 * `Authorization: Bearer <ACTIONS_ID_TOKEN_REQUEST_TOKEN>` answers `{"value": "<jwt>"}`.
 * Neither the request token nor the answer appears in any error message.
 */
export async function fetchGithubActionsToken(req: GithubTokenRequest): Promise<string> {
  let url: URL;
  try {
    url = new URL(req.requestUrl);
  } catch {
    throw new CiportError('CIPORT_E_TOKEN_UNAVAILABLE', 'ACTIONS_ID_TOKEN_REQUEST_URL is not a valid URL');
  }
  url.searchParams.set('audience', req.audience);
  const where = `GitHub Actions token endpoint ${url.host}`;
  let res: Response;
  try {
    res = await fetch(url, {
      headers: { authorization: `Bearer ${req.requestToken}`, accept: 'application/json; api-version=2.0' },
      signal: AbortSignal.timeout(req.timeoutMs ?? 15_000),
      redirect: 'error',
    });
  } catch (err) {
    const cause = err as Error & { cause?: { code?: string; message?: string } };
    const reason =
      cause.name === 'TimeoutError'
        ? 'timed out'
        : (cause.cause?.code ?? cause.cause?.message ?? cause.message);
    throw new CiportError('CIPORT_E_TOKEN_UNAVAILABLE', `${where}: request failed (${oneLine(reason)})`, {
      cause: err,
    });
  }
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  if (!res.ok) {
    const hint = res.status === 401 || res.status === 403 ? ' (does the job have "id-token: write"?)' : '';
    throw new CiportError('CIPORT_E_TOKEN_UNAVAILABLE', `${where} answered HTTP ${res.status}${hint}`);
  }
  const value = (body as { value?: unknown } | undefined)?.value;
  if (typeof value !== 'string' || value.split('.').length !== 3) {
    throw new CiportError('CIPORT_E_TOKEN_UNAVAILABLE', `${where} answered without a token in "value"`);
  }
  return value;
}

/** The audience to ask for by default: the gateway URL without a trailing slash. */
export function defaultAudience(gatewayUrl: URL): string {
  return gatewayUrl.href.replace(/\/+$/, '');
}
