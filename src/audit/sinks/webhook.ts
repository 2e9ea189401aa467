// The webhook sink: each batch is one POST of a JSON array of events (chain order), signed
// (src/transport/webhook-signature.ts) so the receiver can tell it came from this gateway and was
// not replayed much later (docs/audit-sinks.md, "Webhook"). Any 2xx answer within the timeout
// acknowledges the batch; anything else (3xx included: no redirect is followed) is retried. The
// answer's body is read up to 64 KiB and discarded. `postSigned` is that one signed POST;
// approval notifications (src/gateway/approval-notify.ts) send theirs with it too, so receivers
// verify both the same way.
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { WebhookSinkConfig } from '../../config/audit-sinks.js';
import { AuditSinkError } from '../../errors/index.js';
import { SIGNATURE_HEADER, signWebhook } from '../../transport/webhook-signature.js';
import { CIPORT_VERSION } from '../../version.js';
import { dropAnswer, networkError, type SinkEvent, type SinkTransport, withDeadline } from './transport.js';

/** The signing time again, apart, for receivers that want it without parsing the signature. */
export const TIMESTAMP_HEADER = 'x-ciport-timestamp';

/** A receiver of signed POSTs: where, whom to trust, the HMAC key, and how long one may take. */
export interface SignedReceiver {
  url: URL;
  /** PEM of the CA to trust instead of the system store. */
  ca?: string | undefined;
  /** HMAC-SHA-256 key (revealed only to sign). */
  secret: string;
  timeoutMs: number;
  /** Names the receiver in errors (`webhook audit-siem`); never its URL, which may hold a token. */
  what: string;
}

/**
 * POST `body` (JSON) to `to`, signed, within its timeout: resolves on a 2xx, rejects with an
 * AuditSinkError (unreachable, TLS, timeout, rejected with the status, protocol) otherwise.
 * No redirect is followed; one connection per POST; the answer is read up to 64 KiB.
 */
export function postSigned(
  to: SignedReceiver,
  body: Buffer,
  headers: Record<string, string>,
  outer: AbortSignal,
  now: () => number = Date.now,
): Promise<void> {
  const t = Math.floor(now() / 1000);
  const all = {
    'content-type': 'application/json',
    'content-length': String(body.length),
    'user-agent': `ciport/${CIPORT_VERSION}`,
    ...headers,
    [SIGNATURE_HEADER]: signWebhook(to.secret, t, body),
    [TIMESTAMP_HEADER]: String(t),
  };
  return withDeadline(to.timeoutMs, outer, to.what, (signal) => post(to, body, all, signal));
}

export class WebhookTransport implements SinkTransport {
  readonly #config: WebhookSinkConfig;
  readonly #url: URL;
  readonly #ca: string | undefined;
  readonly #now: () => number;

  constructor(config: WebhookSinkConfig, now: () => number = Date.now) {
    this.#config = config;
    this.#url = new URL(config.url);
    this.#ca = config.ca ? readFileSync(config.ca.file, 'utf8') : undefined;
    this.#now = now;
  }

  deliver(events: readonly SinkEvent[], signal: AbortSignal): Promise<void> {
    const body = Buffer.from(`[${events.map((e) => e.json).join(',')}]`);
    const first = events[0]?.seq ?? 0;
    const last = events.at(-1)?.seq ?? 0;
    const receiver: SignedReceiver = {
      url: this.#url,
      ca: this.#ca,
      secret: this.#config.secret.reveal(),
      timeoutMs: this.#config.timeout,
      what: `webhook ${this.#config.name}`,
    };
    const headers = { 'x-ciport-sink': this.#config.name, 'x-ciport-seq': `${first}-${last}` };
    return postSigned(receiver, body, headers, signal, this.#now);
  }
}

function post(
  to: SignedReceiver,
  body: Buffer,
  headers: Record<string, string>,
  signal: AbortSignal,
): Promise<void> {
  const what = to.what;
  return new Promise<void>((resolve, reject) => {
    const https = to.url.protocol === 'https:';
    const req = (https ? httpsRequest : httpRequest)(to.url, {
      method: 'POST',
      headers,
      agent: false, // one connection per batch: nothing lingers between deliveries
      signal,
      maxHeaderSize: 16 * 1024,
      ...(https ? { rejectUnauthorized: true, ...(to.ca ? { ca: to.ca } : {}) } : {}),
    });
    req.once('error', (err) =>
      reject(
        signal.aborted && signal.reason instanceof AuditSinkError ? signal.reason : networkError(what, err),
      ),
    );
    req.once('response', (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      dropAnswer(res, what, (err) => {
        res.destroy();
        reject(err);
      });
      res.once('error', (err) => reject(networkError(what, err)));
      // Settles nothing after 'end'; before it, the answer was cut short.
      res.once('close', () => reject(networkError(what, new Error('answer cut short'))));
      res.once('end', () => {
        if (status >= 200 && status < 300) resolve();
        else
          reject(
            new AuditSinkError('CIPORT_E_AUDIT_SINK_REJECTED', `${what}: answered HTTP ${status}`, {
              details: { status },
            }),
          );
      });
    });
    req.end(body);
  });
}
