// One bounded, authenticated JSON GET against a CI platform's API: a deadline over the whole
// exchange, a size cap on the body, no redirects (the credential header must never travel to
// another URL), and failures sorted into kinds the poller acts on. Error messages name the URL
// and the HTTP status, never the credential: the caller's token is scrubbed from any text
// that came back from the server, as a second line of defence.
import { isRateLimitResponse, rateLimitResumeAt } from './rate-limit.js';

/** Why a job API request failed. */
export type JobApiFailure =
  /** Connection refused or reset, DNS failure, TLS failure. */
  | 'network'
  /** No complete answer within the deadline. */
  | 'timeout'
  /** 401, or 403 that is not a rate limit: the token is wrong, expired or lacks a scope. */
  | 'auth'
  /** 404: the job, or its project/repository, is not visible to the token. */
  | 'not_found'
  /** 429, or 403 with rate-limit headers. */
  | 'rate_limited'
  /** 5xx and any other unexpected status. */
  | 'http'
  /** A 2xx whose body is not the JSON object expected, or is too large. */
  | 'malformed';

export class JobApiError extends Error {
  override readonly name = 'JobApiError';
  readonly kind: JobApiFailure;
  readonly status: number | undefined;
  /** Rate limit: no request before this time (epoch ms), when the server said so. */
  readonly resumeAt: number | undefined;

  constructor(
    kind: JobApiFailure,
    message: string,
    options: { status?: number; resumeAt?: number | undefined; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.status = options.status;
    this.resumeAt = options.resumeAt;
  }
}

export interface ApiRequestOptions {
  fetch: typeof fetch;
  /** Deadline of the whole exchange in milliseconds. */
  timeoutMs: number;
  /** Largest accepted body in bytes. */
  maxBytes: number;
  /** Clock for rate-limit arithmetic (epoch ms). */
  now: () => number;
  /** Aborts the request early (service shutdown). */
  signal?: AbortSignal | undefined;
}

export interface ApiResponse {
  status: number;
  body: Record<string, unknown>;
  /** Rate limit exhausted: no request before this time (epoch ms). */
  resumeAt: number | undefined;
}

/** Largest error body read for its message; the rest is discarded. */
const ERROR_BODY_BYTES = 4096;

/**
 * GET `url` with `headers`.
 * @param secret the credential inside `headers`, scrubbed from anything that reaches a message
 * @throws JobApiError
 */
export async function apiGet(
  url: URL,
  headers: Record<string, string>,
  secret: string,
  options: ApiRequestOptions,
): Promise<ApiResponse> {
  const where = `GET ${url.href}`;
  const timeout = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
  let response: Response;
  try {
    response = await options.fetch(url, { method: 'GET', headers, redirect: 'error', signal });
  } catch (err) {
    throw transportError(where, err, options.timeoutMs, secret);
  }
  const now = options.now();
  const resumeAt = rateLimitResumeAt(response.headers, now);
  if (response.status < 200 || response.status > 299) {
    const detail = await errorDetail(response, secret);
    const message = `${where}: HTTP ${response.status}${detail ? ` (${detail})` : ''}`;
    const status = response.status;
    if (isRateLimitResponse(status, response.headers)) {
      throw new JobApiError('rate_limited', message, { status, resumeAt });
    }
    const kind: JobApiFailure =
      status === 401 || status === 403 ? 'auth' : status === 404 ? 'not_found' : 'http';
    throw new JobApiError(kind, message, { status, resumeAt });
  }
  let text: string;
  try {
    text = await readLimited(response, options.maxBytes);
  } catch (err) {
    if (err instanceof JobApiError) throw new JobApiError(err.kind, `${where}: ${err.message}`);
    throw transportError(where, err, options.timeoutMs, secret);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new JobApiError('malformed', `${where}: response is not JSON`, { status: response.status });
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new JobApiError('malformed', `${where}: response is not a JSON object`, {
      status: response.status,
    });
  }
  return { status: response.status, body: body as Record<string, unknown>, resumeAt };
}

async function readLimited(response: Response, maxBytes: number): Promise<string> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new JobApiError('malformed', `response of ${declared} bytes exceeds ${maxBytes}`);
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new JobApiError('malformed', `response exceeds ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The `message` of a JSON error body (GitLab and GitHub both send one), short and scrubbed. */
async function errorDetail(response: Response, secret: string): Promise<string> {
  let text = '';
  try {
    if (response.body) {
      const reader = response.body.getReader();
      const chunks: Uint8Array[] = [];
      let size = 0;
      while (size < ERROR_BODY_BYTES) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        size += value.byteLength;
      }
      await reader.cancel().catch(() => undefined);
      text = Buffer.concat(chunks).toString('utf8').slice(0, ERROR_BODY_BYTES);
    }
  } catch {
    return '';
  }
  let message: unknown;
  try {
    const parsed = JSON.parse(text) as { message?: unknown; error?: unknown };
    message = parsed.message ?? parsed.error;
  } catch {
    return '';
  }
  if (typeof message !== 'string') return '';
  // Control characters out, length bounded: this text goes into logs.
  return Array.from(scrub(message, secret), (ch) => (ch < ' ' || ch === '\u007f' ? ' ' : ch))
    .join('')
    .slice(0, 200);
}

function transportError(where: string, err: unknown, timeoutMs: number, secret: string): JobApiError {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError') {
    return new JobApiError('timeout', `${where}: no answer within ${timeoutMs} ms`, { cause: err });
  }
  if (e?.name === 'AbortError') {
    return new JobApiError('network', `${where}: aborted`, { cause: err });
  }
  // undici reports the socket error (ECONNREFUSED, ECONNRESET, ENOTFOUND…) as the cause.
  const detail = e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
  return new JobApiError('network', `${where}: ${scrub(detail, secret)}`);
}

/** Replace every occurrence of `secret` in `text`. */
export function scrub(text: string, secret: string): string {
  return secret.length >= 4 ? text.split(secret).join('[redacted]') : text;
}
