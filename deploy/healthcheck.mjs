#!/usr/bin/env node
// The image's HEALTHCHECK (and anything else that needs a probe without curl): GET /readyz on
// the gateway's own port over loopback, exit 0 when it answers 200, 1 otherwise.
//
// The certificate is not verified, and that is why the URL must be a loopback address: the
// probe sends no credential and only reads a status code, and on loopback nobody can sit in
// between. The gateway's certificate names its public host (or the generated CA's), which a
// probe of 127.0.0.1 could not match anyway.
//
//   CIPORT_HEALTHCHECK_URL   default https://127.0.0.1:8443/readyz (match the config's `listen` port)
import { request } from 'node:https';
import { isIP } from 'node:net';

const url = new URL(process.env.CIPORT_HEALTHCHECK_URL || 'https://127.0.0.1:8443/readyz');
const host = url.hostname.replace(/^\[|\]$/g, '');
const loopback = host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
if (url.protocol !== 'https:' || !loopback) {
  console.error(
    `healthcheck: ${url.href}: only https on a loopback address is probed (the certificate is not verified)`,
  );
  process.exit(2);
}

const req = request(url, { method: 'GET', rejectUnauthorized: false, timeout: 4000 }, (res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (chunk) => {
    body += chunk;
  });
  res.on('end', () => {
    console.log(`healthcheck: ${url.pathname} ${res.statusCode} ${body.trim().slice(0, 200)}`);
    process.exit(res.statusCode === 200 ? 0 : 1);
  });
});
req.on('timeout', () => req.destroy(new Error('no answer within 4 s')));
req.on('error', (err) => {
  console.error(`healthcheck: ${url.href}: ${err.message}`);
  process.exit(1);
});
req.end();
