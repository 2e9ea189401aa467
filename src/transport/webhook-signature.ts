// How ciport signs the webhooks it sends (audit sinks today; docs/audit-sinks.md, "Webhook"), the
// way Stripe's and Slack's are signed, so a receiver can tell a request came from this gateway
// and was not replayed much later:
//
//   X-Ciport-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256(secret, "<t>.<body>")>
//
// Pure: the sender signs with it; a receiver (or a test) recomputes it over the raw body bytes.
import { createHmac } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-ciport-signature';

/** The `x-ciport-signature` value `t=…,v1=…` of `body`, signed with `secret` at `timestamp` (unix seconds). */
export function signWebhook(secret: string, timestamp: number, body: string | Buffer): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
  return `t=${timestamp},v1=${mac}`;
}
