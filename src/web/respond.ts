// Every console response goes out through here, so every one carries the same security headers
// (docs/console.md, "Security"): a strict Content-Security-Policy (own scripts and styles only, no
// inline code, no framing, forms post only to the gateway), no MIME sniffing, no referrer, and
// no caching of pages that show the audit log or carry a CSRF token.

import type { CiportError } from '../errors/index.js';
import type { Res } from '../gateway/http.js';
import { ERROR_HEADER } from '../transport/wire.js';
import type { Html } from './html.js';

export const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=()',
};

/** Set the security headers (and no-store unless `cache` says otherwise). */
export function secure(res: Res, cache = 'no-store'): void {
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
  res.setHeader('cache-control', cache);
}

export interface Extra {
  /** Set-Cookie lines. */
  cookies?: string[];
  headers?: Record<string, string>;
}

function extra(res: Res, more: Extra): void {
  if (more.cookies && more.cookies.length > 0) res.setHeader('set-cookie', more.cookies);
  for (const [k, v] of Object.entries(more.headers ?? {})) res.setHeader(k, v);
}

export function sendHtml(res: Res, status: number, page: Html, more: Extra = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const body = page.text;
  res.statusCode = status;
  secure(res);
  res.setHeader('content-type', 'text/html; charset=utf-8');
  res.setHeader('content-length', String(Buffer.byteLength(body)));
  extra(res, more);
  res.end(body);
}

/** A console error page with the error's HTTP status and its code in `ciport-error`. */
export function sendErrorPage(res: Res, err: CiportError, page: Html, more: Extra = {}): void {
  sendHtml(res, err.httpStatus, page, { ...more, headers: { ...more.headers, [ERROR_HEADER]: err.code } });
}

/**
 * A redirect: 303 See Other to a path of this gateway (never an absolute URL from input), or
 * 302 to the identity provider (an URL openid-client built from its discovery document).
 */
export function redirect(res: Res, location: string, more: Extra = {}, status: 302 | 303 = 303): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.statusCode = status;
  secure(res);
  res.setHeader('location', location);
  res.setHeader('content-length', '0');
  extra(res, more);
  res.end();
}

export function sendAsset(res: Res, type: string, body: string, etag: string, notModified: boolean): void {
  secure(res, 'public, max-age=300');
  res.setHeader('etag', etag);
  if (notModified) {
    res.statusCode = 304;
    res.end();
    return;
  }
  res.statusCode = 200;
  res.setHeader('content-type', type);
  res.setHeader('content-length', String(Buffer.byteLength(body)));
  res.end(body);
}
