// The signature of ciport's webhooks (docs/audit-sinks.md, "Webhook"): a fixed vector, so a
// change of the format (which every receiver checks) cannot pass unnoticed.
import { describe, expect, it } from 'vitest';
import { SIGNATURE_HEADER, signWebhook } from '../../src/transport/webhook-signature.js';

describe('signWebhook', () => {
  it('is t=<unix seconds>,v1=<hex HMAC-SHA-256(secret, "<t>.<raw body>")>, for a string or its bytes', () => {
    const body = '[{"seq":1}]';
    // Computed with: printf '1700000000.[{"seq":1}]' | openssl dgst -sha256 -hmac whsec_test
    const expected = 't=1700000000,v1=f33824d77ed467d053c576d9e88e2c4adfa594b9f03daedfd74e86edcbf901c3';
    expect(signWebhook('whsec_test', 1_700_000_000, body)).toBe(expected);
    expect(signWebhook('whsec_test', 1_700_000_000, Buffer.from(body))).toBe(expected);
    expect(signWebhook('other', 1_700_000_000, body)).not.toBe(expected);
    expect(SIGNATURE_HEADER).toBe('x-ciport-signature');
  });
});
