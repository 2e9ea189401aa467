// Bounded JSON GET for discovery documents and key sets: a deadline, a size cap, no redirects.
// A key endpoint that stalls or streams forever must not stall or exhaust the gateway.

/** Why a fetch of keys or discovery failed, in words fit for an operator. */
export class KeyFetchError extends Error {
  override readonly name = 'KeyFetchError';
}

export interface FetchJsonOptions {
  fetch: typeof fetch;
  /** Abort the whole exchange (connect, headers, body) after this many milliseconds. */
  timeoutMs: number;
  /** Refuse bodies larger than this many bytes. */
  maxBytes: number;
}

export const DEFAULT_FETCH_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

export async function fetchJson(url: URL, options: FetchJsonOptions): Promise<unknown> {
  const signal = AbortSignal.timeout(options.timeoutMs);
  let response: Response;
  try {
    // redirect: 'error' — a redirect could lead from https to plain http or elsewhere; issuers
    // publish their final URLs, so following one would only widen what we trust.
    response = await options.fetch(url, {
      signal,
      redirect: 'error',
      headers: { accept: 'application/json, application/jwk-set+json' },
    });
  } catch (err) {
    throw new KeyFetchError(describeFailure(url, err, options.timeoutMs), { cause: err });
  }
  if (!response.ok) {
    await response.body?.cancel().catch(() => undefined);
    throw new KeyFetchError(`GET ${url.href}: HTTP ${response.status}`);
  }
  const text = await readLimited(response, url, options);
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new KeyFetchError(`GET ${url.href}: response is not JSON`, { cause });
  }
}

async function readLimited(response: Response, url: URL, options: FetchJsonOptions): Promise<string> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > options.maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new KeyFetchError(`GET ${url.href}: response of ${declared} bytes exceeds ${options.maxBytes}`);
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > options.maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw new KeyFetchError(`GET ${url.href}: response exceeds ${options.maxBytes} bytes`);
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof KeyFetchError) throw err;
    throw new KeyFetchError(describeFailure(url, err, options.timeoutMs), { cause: err });
  }
  return Buffer.concat(chunks).toString('utf8');
}

function describeFailure(url: URL, err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') {
    return `GET ${url.href}: no answer within ${timeoutMs} ms`;
  }
  // undici reports the socket error (ECONNREFUSED, ECONNRESET, ENOTFOUND…) as the cause.
  const detail = e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
  return `GET ${url.href}: ${detail}`;
}
