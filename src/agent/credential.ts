// The agent's credential (docs/agent.md): obtained once by exchanging the enrollment token at
// `POST /v1/agents/register`, exchanged for a new one at `POST /v1/agents/rotate` before it
// expires, kept in `<data_dir>/agent-credential.json` (mode 0600, replaced atomically). The file
// only ever holds the current credential.
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { CiportError } from '../errors/index.js';

export const CREDENTIAL_FILE = 'agent-credential.json';

export interface StoredCredential {
  id: string;
  name: string;
  credential: string;
  gateway: string;
  registered_at: string;
  /**
   * ISO 8601, the gateway's: the credential is refused from then on. Absent in files written
   * before credentials expired: unknown, so the agent rotates at the next opportunity.
   */
  expires_at?: string;
  /** ISO 8601, the agent's clock: when this credential was obtained by a rotation. */
  rotated_at?: string;
}

export function readCredential(dataDir: string): StoredCredential | undefined {
  try {
    const c = JSON.parse(readFileSync(join(dataDir, CREDENTIAL_FILE), 'utf8')) as StoredCredential;
    return typeof c.credential === 'string' ? c : undefined;
  } catch {
    return undefined;
  }
}

/** Write the file atomically: a temp file (0600, flushed to disk), then renamed over the old one. */
export function writeCredential(dataDir: string, cred: StoredCredential): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, CREDENTIAL_FILE);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(cred, null, 2)}\n`, { mode: 0o600, flush: true });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/** When the credential was issued (rotation or registration), epoch ms; NaN when unknown. */
export function issuedAt(cred: StoredCredential): number {
  return Date.parse(cred.rotated_at ?? cred.registered_at);
}

/** When the credential expires, epoch ms; undefined when unknown (older files). */
export function expiresAt(cred: StoredCredential): number | undefined {
  if (typeof cred.expires_at !== 'string') return undefined;
  const t = Date.parse(cred.expires_at);
  return Number.isFinite(t) ? t : undefined;
}

interface GatewayOptions {
  ca?: string | undefined;
  timeoutMs?: number;
}

/** POST `{}` with a bearer; resolves to the status and the parsed JSON body (`{}` if none). */
async function postBearer(
  url: URL,
  what: string,
  bearer: string,
  options: GatewayOptions,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        headers: {
          authorization: `Bearer ${bearer}`,
          'content-type': 'application/json',
          'content-length': 2,
        },
        ...(options.ca ? { ca: options.ca } : {}),
        timeout: options.timeoutMs ?? 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) =>
      reject(
        new CiportError('CIPORT_E_GATEWAY_UNREACHABLE', `cannot ${what} at ${url.origin}: ${err.message}`),
      ),
    );
    req.end('{}');
  });
  let body: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed === 'object' && parsed !== null) body = parsed as Record<string, unknown>;
  } catch {
    // handled by the callers (status, missing fields)
  }
  return { status, body };
}

/** The `expires_at` of an answer, when it is a valid time. */
function answerExpiry(body: Record<string, unknown>): string | undefined {
  return typeof body.expires_at === 'string' && Number.isFinite(Date.parse(body.expires_at))
    ? body.expires_at
    : undefined;
}

/** Exchange `token` for a credential. Throws CIPORT_E_ENROLLMENT_INVALID or a transport error. */
export async function registerAgent(
  gateway: string,
  token: string,
  options: GatewayOptions = {},
): Promise<StoredCredential> {
  const { status, body } = await postBearer(
    new URL('/v1/agents/register', gateway),
    'register',
    token,
    options,
  );
  if (status !== 201) {
    const err = body.error as { code?: string; message?: string } | undefined;
    if (err?.code === 'CIPORT_E_ENROLLMENT_INVALID' || status === 401) {
      throw new CiportError('CIPORT_E_ENROLLMENT_INVALID', err?.message ?? 'enrollment token refused');
    }
    throw new CiportError('CIPORT_E_GATEWAY_RESPONSE', `register: gateway answered ${status}`);
  }
  if (typeof body.credential !== 'string' || typeof body.id !== 'string') {
    throw new CiportError('CIPORT_E_GATEWAY_RESPONSE', 'register: no credential in the answer');
  }
  const expires = answerExpiry(body);
  return {
    id: body.id,
    name: String(body.name ?? ''),
    credential: body.credential,
    gateway,
    registered_at: new Date().toISOString(),
    ...(expires ? { expires_at: expires } : {}),
  };
}

/**
 * Exchange the current credential for a new one (`POST /v1/agents/rotate` at `gateway`). Returns
 * the new credential to store (same id, name and registration). Throws CIPORT_E_AGENT_UNAUTHORIZED
 * (the gateway refused the current credential: expired, revoked, or rotated already),
 * CIPORT_E_GATEWAY_UNREACHABLE or CIPORT_E_GATEWAY_RESPONSE. Never puts the secret in a message.
 */
export async function rotateCredential(
  gateway: string,
  current: StoredCredential,
  options: GatewayOptions = {},
): Promise<StoredCredential> {
  const { status, body } = await postBearer(
    new URL('/v1/agents/rotate', gateway),
    'rotate the credential',
    current.credential,
    options,
  );
  if (status !== 200) {
    const err = body.error as { code?: string; message?: string } | undefined;
    if (err?.code === 'CIPORT_E_AGENT_UNAUTHORIZED' || status === 401) {
      throw new CiportError(
        'CIPORT_E_AGENT_UNAUTHORIZED',
        `rotate: the gateway refused agent ${current.name}'s credential (${err?.message ?? 'unauthorized'})`,
      );
    }
    throw new CiportError('CIPORT_E_GATEWAY_RESPONSE', `rotate: gateway answered ${status}`);
  }
  const expires = answerExpiry(body);
  if (
    body.id !== current.id ||
    typeof body.credential !== 'string' ||
    !body.credential.startsWith(`cpa_${current.id}.`) ||
    body.credential === current.credential ||
    !expires
  ) {
    throw new CiportError('CIPORT_E_GATEWAY_RESPONSE', 'rotate: no new credential in the answer');
  }
  return {
    id: current.id,
    name: typeof body.name === 'string' ? body.name : current.name,
    credential: body.credential,
    gateway: current.gateway,
    registered_at: current.registered_at,
    expires_at: expires,
    rotated_at: new Date().toISOString(),
  };
}
