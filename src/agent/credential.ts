// The agent's long-lived credential (docs/agent.md): obtained once by exchanging the enrollment
// token at `POST /v1/agents/register`, kept in `<data_dir>/agent-credential.json` (mode 0600).
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
}

export function readCredential(dataDir: string): StoredCredential | undefined {
  try {
    const c = JSON.parse(readFileSync(join(dataDir, CREDENTIAL_FILE), 'utf8')) as StoredCredential;
    return typeof c.credential === 'string' ? c : undefined;
  } catch {
    return undefined;
  }
}

export function writeCredential(dataDir: string, cred: StoredCredential): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, CREDENTIAL_FILE);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(cred, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/** Exchange `token` for a credential. Throws CIPORT_E_ENROLLMENT_INVALID or a transport error. */
export async function registerAgent(
  gateway: string,
  token: string,
  options: { ca?: string | undefined; timeoutMs?: number } = {},
): Promise<StoredCredential> {
  const url = new URL('/v1/agents/register', gateway);
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        headers: {
          authorization: `Bearer ${token}`,
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
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) =>
      reject(
        new CiportError('CIPORT_E_GATEWAY_UNREACHABLE', `cannot register at ${url.origin}: ${err.message}`),
      ),
    );
    req.end('{}');
  });
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(body) as Record<string, unknown>;
  } catch {
    // handled below
  }
  if (status !== 201) {
    const err = parsed.error as { code?: string; message?: string } | undefined;
    if (err?.code === 'CIPORT_E_ENROLLMENT_INVALID' || status === 401) {
      throw new CiportError('CIPORT_E_ENROLLMENT_INVALID', err?.message ?? 'enrollment token refused');
    }
    throw new CiportError('CIPORT_E_GATEWAY_RESPONSE', `register: gateway answered ${status}`);
  }
  if (typeof parsed.credential !== 'string' || typeof parsed.id !== 'string') {
    throw new CiportError('CIPORT_E_GATEWAY_RESPONSE', 'register: no credential in the answer');
  }
  return {
    id: parsed.id,
    name: String(parsed.name ?? ''),
    credential: parsed.credential,
    gateway,
    registered_at: new Date().toISOString(),
  };
}
