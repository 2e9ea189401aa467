// CSRF protection of every console POST (docs/console.md, "Security"). The token is
// HMAC-SHA256 keyed by the operator's session secret over a fixed label: only a page the
// gateway rendered for that sign-in holds it (the secret itself is an HttpOnly cookie no script
// can read), it needs no storage, and it changes with every sign-in. It is compared in constant
// time. The browser's own signals are checked too: a `Sec-Fetch-Site` other than same-origin,
// or an `Origin` other than the gateway's, is refused whatever the token. (With the console's
// `Referrer-Policy: no-referrer`, browsers send `Origin: null` on its own forms: that says
// nothing either way, and Sec-Fetch-Site and the token decide.)
import { createHmac, timingSafeEqual } from 'node:crypto';
import { CiportError } from '../errors/index.js';
import type { Req } from '../gateway/http.js';

const LABEL = 'ciport console csrf v1';
export const CSRF_FIELD = 'csrf';

export function csrfToken(sessionSecret: string): string {
  return createHmac('sha256', sessionSecret).update(LABEL).digest('base64url');
}

function refuse(why: string): CiportError {
  return new CiportError('CIPORT_E_CSRF_REFUSED', `refused: ${why}; reload the page and try again`);
}

/** The origins a console form may be posted from: the public URL's, and the one the request names. */
export function allowedOrigins(req: Req, publicOrigin: string): Set<string> {
  const origins = new Set([publicOrigin]);
  const host = (req.headers[':authority'] as string | undefined) ?? req.headers.host;
  if (typeof host === 'string' && /^[A-Za-z0-9.:[\]-]{1,300}$/.test(host)) origins.add(`https://${host}`);
  return origins;
}

/** Throw CIPORT_E_CSRF_REFUSED unless `req` is a same-origin POST carrying the session's token. */
export function checkCsrf(
  req: Req,
  form: URLSearchParams,
  sessionSecret: string,
  origins: Set<string>,
): void {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin') throw refuse(`a ${String(site)} request`);
  // `Origin: null` is what a browser sends for a same-origin form under `Referrer-Policy:
  // no-referrer` (and for opaque origins, which Sec-Fetch-Site above already refuses): no signal.
  const origin = req.headers.origin;
  if (origin !== undefined && origin !== 'null' && !origins.has(String(origin))) {
    throw refuse(`a request from another origin (${String(origin).slice(0, 100)})`);
  }
  const sent = form.getAll(CSRF_FIELD);
  if (sent.length !== 1) throw refuse('the form carries no CSRF token');
  const want = Buffer.from(csrfToken(sessionSecret));
  const got = Buffer.from(sent[0] as string);
  if (got.length !== want.length || !timingSafeEqual(got, want))
    throw refuse('the CSRF token is not this sign-in’s');
}
