// The wire format of `ciport login` (docs/login.md), read by both sides: what the CLI sends the
// gateway after the provider redirected the browser to its loopback listener, what the gateway
// answers (a `cpo_` operator token, never an ID token), and the device-grant exchange. Pure.
//
// The gateway redeems the code itself (as the public client `sso.cli_client_id`), so the request
// carries the code, the PKCE verifier, the nonce and the redirect URI the CLI used; the gateway
// accepts only a loopback redirect of the shape the CLI listens on.
import { CiportError } from '../errors/errors.js';
import { isOperatorSecret } from '../identity/operator-secret.js';

/** The redirect URI `ciport login` listens on: 127.0.0.1, any port, path /callback. */
export const LOOPBACK_REDIRECT_RE = /^http:\/\/127\.0\.0\.1:([1-9][0-9]{0,4})\/callback$/;

/** Largest sign-in request body the gateway reads (a code, a verifier, a nonce, a URL). */
export const SIGN_IN_MAX_BODY = 8 * 1024;

/** `POST /v1/operator/sessions`: redeem an authorization code from the loopback redirect. */
export interface CodeRedemption {
  code: string;
  state: string;
  /** The `iss` of the authorization response (RFC 9207), when the provider sends one. */
  iss?: string;
  code_verifier: string;
  nonce: string;
  redirect_uri: string;
}

/** What the gateway says of a signed-in operator: never a secret. */
export interface OperatorView {
  /** `oidc:<issuer>#<subject>`, as audit events' `by`. */
  by: string;
  issuer: string;
  subject: string;
  email?: string;
  name?: string;
  username?: string;
  roles: string[];
}

/** `201` of a completed sign-in: the operator token the CLI caches. */
export interface OperatorSignIn {
  token: string;
  expires_at: string;
  operator: OperatorView;
}

/** `POST /v1/operator/device`: a device authorization the gateway started for the CLI. */
export interface DeviceStart {
  /** Opaque; the CLI sends it back to poll. The device code itself stays in the gateway. */
  handle: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete?: string;
  /** Seconds between polls. */
  interval: number;
  /** Seconds until the user code expires. */
  expires_in: number;
}

/** `POST /v1/operator/device/token` while the person has not finished: poll again later. */
export interface DeviceWait {
  status: 'pending' | 'slow_down';
  interval: number;
}

const FIELD_LIMITS = {
  code: 2048,
  state: 512,
  iss: 2048,
  nonce: 512,
  redirect_uri: 64,
} as const;

/** RFC 7636: 43 to 128 characters of [A-Z a-z 0-9 - . _ ~]. */
const VERIFIER_RE = /^[A-Za-z0-9._~-]{43,128}$/;
/** Printable ASCII without space: what codes, states and nonces are made of. */
const TOKEN_CHARS_RE = /^[\x21-\x7e]+$/;

function usage(message: string): CiportError {
  return new CiportError('CIPORT_E_USAGE', message);
}

function object(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw usage('request body must be a JSON object');
  }
  return body as Record<string, unknown>;
}

function field(body: Record<string, unknown>, name: keyof typeof FIELD_LIMITS, required: boolean) {
  const value = body[name];
  if (value === undefined && !required) return undefined;
  if (typeof value !== 'string' || value.length === 0 || value.length > FIELD_LIMITS[name]) {
    throw usage(`"${name}" must be a string of 1 to ${FIELD_LIMITS[name]} characters`);
  }
  if (!TOKEN_CHARS_RE.test(value)) throw usage(`"${name}" holds characters it may not`);
  return value;
}

/** A checked code-redemption body, or CIPORT_E_USAGE naming the first bad field. */
export function parseCodeRedemption(body: unknown): CodeRedemption {
  const b = object(body);
  const known = new Set(['code', 'state', 'iss', 'code_verifier', 'nonce', 'redirect_uri']);
  const unknown = Object.keys(b).filter((k) => !known.has(k));
  if (unknown.length > 0) throw usage(`unknown field(s): ${unknown.slice(0, 5).join(', ')}`);
  const verifier = b.code_verifier;
  if (typeof verifier !== 'string' || !VERIFIER_RE.test(verifier)) {
    throw usage('"code_verifier" must be an RFC 7636 code verifier (43 to 128 characters)');
  }
  const redirect = field(b, 'redirect_uri', true) as string;
  const port = LOOPBACK_REDIRECT_RE.exec(redirect)?.[1];
  if (!port || Number(port) > 65535) {
    throw usage(
      '"redirect_uri" must be http://127.0.0.1:PORT/callback (the loopback listener of ciport login)',
    );
  }
  const iss = field(b, 'iss', false);
  return {
    code: field(b, 'code', true) as string,
    state: field(b, 'state', true) as string,
    ...(iss ? { iss } : {}),
    code_verifier: verifier,
    nonce: field(b, 'nonce', true) as string,
    redirect_uri: redirect,
  };
}

/** Device handles: `cpd_` and 32 random bytes, base64url. */
export const DEVICE_HANDLE_RE = /^cpd_[A-Za-z0-9_-]{43}$/;

/** The handle of a device poll body, or CIPORT_E_USAGE. */
export function parseDevicePoll(body: unknown): string {
  const b = object(body);
  const unknown = Object.keys(b).filter((k) => k !== 'handle');
  if (unknown.length > 0) throw usage(`unknown field(s): ${unknown.slice(0, 5).join(', ')}`);
  if (typeof b.handle !== 'string' || !DEVICE_HANDLE_RE.test(b.handle)) {
    throw usage('"handle" must be the handle POST /v1/operator/device returned');
  }
  return b.handle;
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

/** The operator of a gateway answer, checked (the CLI prints and caches it). */
export function parseOperatorView(value: unknown): OperatorView | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const o = value as Record<string, unknown>;
  if (typeof o.by !== 'string' || typeof o.issuer !== 'string' || typeof o.subject !== 'string') {
    return undefined;
  }
  if (!isStringList(o.roles)) return undefined;
  const opt = (k: 'email' | 'name' | 'username') => (typeof o[k] === 'string' ? { [k]: o[k] as string } : {});
  return {
    by: o.by,
    issuer: o.issuer,
    subject: o.subject,
    ...opt('email'),
    ...opt('name'),
    ...opt('username'),
    roles: o.roles,
  };
}

/** A completed sign-in answer, checked; undefined when it is not that shape. */
export function parseOperatorSignIn(body: unknown): OperatorSignIn | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const b = body as Record<string, unknown>;
  const operator = parseOperatorView(b.operator);
  if (typeof b.token !== 'string' || !isOperatorSecret(b.token)) return undefined;
  if (typeof b.expires_at !== 'string' || Number.isNaN(Date.parse(b.expires_at)) || !operator) {
    return undefined;
  }
  return { token: b.token, expires_at: b.expires_at, operator };
}

/** The operator as one line for people: `ana@example.com (Ana Admin), roles admin`. */
export function operatorLine(o: OperatorView): string {
  const who = o.email ?? o.username ?? o.subject;
  const name = o.name && o.name !== who ? ` (${o.name})` : '';
  const roles = o.roles.length === 1 ? 'role' : 'roles';
  return `${who}${name}, ${roles} ${o.roles.join(', ') || '(none)'}`;
}
