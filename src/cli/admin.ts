// What the admin commands (`ciport sessions`, `ciport agents`, `ciport review --gateway`) share:
// a gateway client authenticated as an operator, and aligned text tables. The operator is
// CIPORT_ADMIN_TOKEN when it is set (automation: explicit wins), else the sign-in `ciport login`
// cached for that gateway (docs/login.md, "Which credential a command uses").
import type { Command } from 'commander';
import { GatewayError } from '../client/errors.js';
import { GatewayClient, gatewayUrl, trustedCas } from '../client/gateway.js';
import { CiportError, UsageError } from '../errors/index.js';
import { OPERATOR_REASON_MAX } from '../identity/operator.js';
import { CredentialsCache, credentialsPath, gatewayKey } from './login/credentials.js';
import { type Io, printable } from './output.js';

export interface AdminOptions {
  gateway?: string;
  json?: boolean;
}

/** How the admin client talks to the gateway, where a command needs more than the defaults. */
export interface AdminClientOptions {
  requestTimeoutMs?: number;
  maxResponseBytes?: number;
}

/** `--reason TEXT` of a command that changes something; recorded as the audit event's `note`. */
export function reasonOption(cmd: Command, event: string): Command {
  return cmd.option(
    '--reason <text>',
    `why, recorded with your name (token or sign-in) in the ${event} audit event (at most ${OPERATOR_REASON_MAX} characters)`,
  );
}

/**
 * `{reason}` for the request body, or nothing. Checked here for a quick usage error; the gateway
 * checks again (escapes control characters, caps the length), as any client may call it.
 */
export function reasonBody(reason: string | undefined): { reason?: string } {
  if (reason === undefined) return {};
  if (printable(reason.trim()).length > OPERATOR_REASON_MAX) {
    throw new UsageError(
      `--reason: at most ${OPERATOR_REASON_MAX} characters (control characters count escaped)`,
    );
  }
  return { reason };
}

/** `CIPORT_E_LOGIN_REQUIRED` for `gateway`, saying why and what to run. */
export function loginRequired(gateway: string, why: string): CiportError {
  return new CiportError(
    'CIPORT_E_LOGIN_REQUIRED',
    `${why}: run \`ciport login --gateway ${gateway}\` again`,
  );
}

/** The operator credential for `url`: CIPORT_ADMIN_TOKEN, else the cached sign-in. */
function adminCredential(io: Io, url: URL): { token: string; cached: boolean } {
  const envToken = io.env.CIPORT_ADMIN_TOKEN;
  if (envToken) return { token: envToken, cached: false };
  const key = gatewayKey(url);
  const entry = new CredentialsCache(credentialsPath(io.env)).get(key);
  if (!entry) {
    throw new UsageError(
      `no credentials for ${key}: sign in with \`ciport login --gateway ${key}\`, or set CIPORT_ADMIN_TOKEN to an admin token of the gateway`,
    );
  }
  if (Date.parse(entry.expires_at) <= Date.now()) {
    throw loginRequired(key, `your sign-in to ${key} expired at ${entry.expires_at}`);
  }
  return { token: entry.token, cached: true };
}

/** Run `fn` with a client for the gateway and the operator's token; the client is closed after. */
export async function withAdmin<T>(
  io: Io,
  opts: AdminOptions,
  fn: (client: GatewayClient, token: string) => Promise<T>,
  clientOptions: AdminClientOptions = {},
): Promise<T> {
  const url = gatewayUrl({ gateway: opts.gateway, env: io.env });
  const { token, cached } = adminCredential(io, url);
  const client = new GatewayClient({ url, ca: trustedCas(io.env), ...clientOptions });
  try {
    return await fn(client, token);
  } catch (err) {
    // A cached sign-in the gateway no longer knows: signed out elsewhere, ended, or expired there.
    if (cached && err instanceof GatewayError && err.code === 'CIPORT_E_ADMIN_UNAUTHORIZED') {
      const key = gatewayKey(url);
      throw loginRequired(
        key,
        `the gateway no longer accepts your sign-in to ${key} (it was ended or has expired)`,
      );
    }
    throw err;
  } finally {
    client.close();
  }
}

/**
 * Header and rows as lines of columns two spaces apart, without trailing blanks. Cells are
 * shown `printable`: a project path or agent name cannot move the cursor or reorder the line.
 */
export function tableLines(head: string[], cells: string[][]): string[] {
  const rows = cells.map((r) => r.map(printable));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] as number))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)];
}
