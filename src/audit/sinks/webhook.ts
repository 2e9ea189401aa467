// The webhook sink: each batch is one POST of a JSON array of events (chain order), signed
// (src/transport/webhook-signature.ts) so the receiver can tell it came from this gateway and was
// not replayed much later (docs/audit-sinks.md, "Webhook"). Any 2xx answer within the timeout
// acknowledges the batch; anything else (3xx included: no redirect is followed) is retried. The
// answer's body is read up to 64 KiB and discarded.
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { WebhookSinkConfig } from '../../config/audit-sinks.js';
import { AuditSinkError } from '../../errors/index.js';
import { SIGNATURE_HEADER, signWebhook } from '../../transport/webhook-signature.js';
import { CIPORT_VERSION } from '../../version.js';
import { dropAnswer, networkError, type SinkEvent, type SinkTransport } from './transport.js';

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
    const t = Math.floor(this.#now() / 1000);
    const first = events[0]?.seq ?? 0;
    const last = events.at(-1)?.seq ?? 0;
    const headers = {
      'content-type': 'application/json',
      'content-length': String(body.length),
      'user-agent': `ciport/${CIPORT_VERSION}`,
      'x-ciport-sink': this.#config.name,
      'x-ciport-seq': `${first}-${last}`,
      [SIGNATURE_HEADER]: signWebhook(this.#config.secret.reveal(), t, body),
    };
    return this.#post(body, headers, signal);
  }

  #post(body: Buffer, headers: Record<string, string>, signal: AbortSignal): Promise<void> {
    const what = `webhook ${this.#config.name}`;
    return new Promise<void>((resolve, reject) => {
      const https = this.#url.protocol === 'https:';
      const req = (https ? httpsRequest : httpRequest)(this.#url, {
        method: 'POST',
        headers,
        agent: false, // one connection per batch: nothing lingers between deliveries
        signal,
        maxHeaderSize: 16 * 1024,
        ...(https ? { rejectUnauthorized: true, ...(this.#ca ? { ca: this.#ca } : {}) } : {}),
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
}
