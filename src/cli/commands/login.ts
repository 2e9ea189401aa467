// `ciport login`, `ciport login --status` and `ciport logout` (docs/login.md): an operator signs
// in to a gateway through the organisation's identity provider and the admin commands use the
// sign-in from then on. The token the gateway answers is cached per gateway URL
// (login/credentials.ts); it is never printed, never in argv and never in a child's environment.
import type { Command } from 'commander';
import { GatewayError } from '../../client/errors.js';
import { GatewayClient, gatewayUrl, trustedCas } from '../../client/gateway.js';
import { asCiportError, CiportError, ExitCode, UsageError } from '../../errors/index.js';
import { parseGatewayInfo } from '../../transport/gateway-info.js';
import { type OperatorSignIn, operatorLine, parseOperatorView } from '../../transport/operator-login.js';
import { loginRequired } from '../admin.js';
import { action, type CliContext, examples } from '../command.js';
import { browserOpener, isRemoteShell } from '../login/browser.js';
import { type CachedSignIn, CredentialsCache, credentialsPath, gatewayKey } from '../login/credentials.js';
import { type Io, printable, reportError, writeJson } from '../output.js';

interface LoginFlags {
  gateway?: string;
  device?: boolean;
  loopback?: boolean;
  open?: boolean;
  timeout?: string;
  status?: boolean;
  json?: boolean;
}

function clientFor(io: Io, url: URL): GatewayClient {
  return new GatewayClient({ url, ca: trustedCas(io.env) });
}

function timeoutMs(text: string | undefined): number {
  const seconds = Number(text ?? 300);
  if (!Number.isFinite(seconds) || seconds < 1 || seconds > 3600) {
    throw new UsageError('--timeout: seconds between 1 and 3600');
  }
  return seconds * 1000;
}

/** The gateways a command without --gateway acts on: CIPORT_GATEWAY, else every cached one. */
function targetKeys(io: Io, cache: CredentialsCache, gateway: string | undefined): string[] {
  if (gateway ?? io.env.CIPORT_GATEWAY) return [gatewayKey(gatewayUrl({ gateway, env: io.env }))];
  return cache.keys();
}

export function registerLogin(program: Command, ctx: CliContext): void {
  examples(
    program
      .command('login')
      .description(
        "sign in to a gateway as an operator through the organisation's identity provider; `sessions`, `agents` and `review --gateway` then use the sign-in",
      )
      .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY)')
      .option('--device', 'sign in by entering a code on any device (device authorization grant)')
      .option(
        '--loopback',
        'sign in with a browser on this machine (the default, except over SSH without a display)',
      )
      .option('--open', 'open a browser with xdg-open even without a display')
      .option('--no-open', 'never open a browser; only print the URL')
      .option('--timeout <seconds>', 'how long to wait for the sign-in', '300')
      .option('--status', 'show who you are signed in as (the gateway confirms it) and exit')
      .option('--json', 'print {"gateway", "operator", "expires_at"} (never the token)'),
    [
      'ciport login --gateway https://ciport.example.com:8443',
      'ciport login --gateway https://ciport.example.com:8443 --device',
      'ciport login --status --gateway https://ciport.example.com:8443',
      'ciport sessions list --gateway https://ciport.example.com:8443   # uses the sign-in',
    ],
  ).action(
    action(ctx, async (opts: LoginFlags) => {
      if (opts.status) return loginStatus(ctx.io, opts);
      if (opts.device && opts.loopback) throw new UsageError('--device and --loopback exclude each other');
      const wait = timeoutMs(opts.timeout);
      const url = gatewayUrl({ gateway: opts.gateway, env: ctx.io.env });
      const key = gatewayKey(url);
      const cache = new CredentialsCache(credentialsPath(ctx.io.env));
      // Refuse an unsafe cache before the person signs in, not after.
      const previous = cache.get(key);
      const client = clientFor(ctx.io, url);
      try {
        const signIn = await signInTo(ctx.io, client, key, opts, wait);
        try {
          cache.put(key, {
            token: signIn.token,
            expires_at: signIn.expires_at,
            signed_in_at: new Date().toISOString(),
            operator: signIn.operator,
          });
        } catch (err) {
          // Not cached means not usable: end it rather than leave it live at the gateway.
          await endAtGateway(client, signIn.token).catch(() => {});
          throw err;
        }
        // The sign-in this one replaces is ended at the gateway (best effort).
        if (previous && previous.token !== signIn.token)
          await endAtGateway(client, previous.token).catch(() => {});
        if (opts.json) {
          writeJson(ctx.io, { gateway: key, operator: signIn.operator, expires_at: signIn.expires_at });
        } else {
          ctx.io.stderr.write(
            `ciport: signed in to ${key} as ${printable(operatorLine(signIn.operator))}, until ${signIn.expires_at}\n`,
          );
        }
        return ExitCode.ok;
      } finally {
        client.close();
      }
    }),
  );

  examples(
    program
      .command('logout')
      .description(
        'end your sign-in at the gateway and remove it from this machine (without --gateway or CIPORT_GATEWAY: every cached sign-in)',
      )
      .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY, else all)')
      .option('--json', 'print [{"gateway", "signed_out", "removed"}]'),
    ['ciport logout --gateway https://ciport.example.com:8443', 'ciport logout'],
  ).action(
    action(ctx, async (opts: { gateway?: string; json?: boolean }) => {
      const cache = new CredentialsCache(credentialsPath(ctx.io.env));
      const keys = targetKeys(ctx.io, cache, opts.gateway);
      const results: Array<{ gateway: string; signed_out: boolean; removed: boolean }> = [];
      let unreachable: CiportError | undefined;
      for (const key of keys) {
        const entry = cache.get(key);
        let signedOut = false;
        if (entry) {
          const client = clientFor(ctx.io, new URL(key));
          try {
            signedOut = await endAtGateway(client, entry.token);
          } catch (err) {
            unreachable = asCiportError(err);
            reportError(ctx.io, unreachable);
            ctx.io.stderr.write(
              `ciport: ${key}: removed here, but the gateway could not end the sign-in; it lasts until ${entry.expires_at}\n`,
            );
          } finally {
            client.close();
          }
        }
        const removed = cache.remove(key);
        results.push({ gateway: key, signed_out: signedOut, removed });
        if (!opts.json) {
          ctx.io.stderr.write(
            removed ? `ciport: signed out of ${key}\n` : `ciport: not signed in to ${key}; nothing to do\n`,
          );
        }
      }
      if (opts.json) writeJson(ctx.io, results);
      else if (keys.length === 0) ctx.io.stderr.write('ciport: not signed in anywhere; nothing to do\n');
      return unreachable ? unreachable.exitCode : ExitCode.ok;
    }),
  );
}

/** Ask the gateway how to sign in, then run the loopback or device flow. */
async function signInTo(
  io: Io,
  client: GatewayClient,
  key: string,
  opts: LoginFlags,
  wait: number,
): Promise<OperatorSignIn> {
  const info = parseGatewayInfo((await client.api('GET', '/v1/info')).body);
  const sso = info?.sso;
  if (!sso) {
    throw new CiportError(
      'CIPORT_E_SSO_NOT_CONFIGURED',
      `${key} does not offer ciport login (its config has no sso: section with cli_client_id); use an admin token in CIPORT_ADMIN_TOKEN`,
    );
  }
  if (opts.device && !sso.device) {
    throw new CiportError(
      'CIPORT_E_SSO_NOT_CONFIGURED',
      `the identity provider of ${key} offers no device authorization grant; run ciport login without --device`,
    );
  }
  const opener = opts.open === false ? undefined : browserOpener(io.env, opts.open === true);
  const flow = await import('../login/flow.js');
  const login = { io, client, sso, timeoutMs: wait, opener };
  // Over SSH without a display, the browser that signs in is elsewhere and cannot reach this
  // machine's 127.0.0.1: the device grant is the one that works (docs/login.md).
  const device = opts.device || (!opts.loopback && sso.device && isRemoteShell(io.env));
  if (device) return flow.deviceLogin(login);
  try {
    return await flow.loopbackLogin(login);
  } catch (err) {
    if (!(err instanceof CiportError && err.details?.loopback_unavailable && sso.device && !opts.loopback)) {
      throw err;
    }
    io.stderr.write(`ciport: ${err.message}; signing in with a code instead\n`);
    return flow.deviceLogin(login);
  }
}

/** DELETE the sign-in `token` stands for; true when the gateway ended a live one. */
async function endAtGateway(client: GatewayClient, token: string): Promise<boolean> {
  const res = await client.api('DELETE', '/v1/operator/sessions/current', { bearer: token });
  return (res.body as { signed_out?: unknown } | undefined)?.signed_out === true;
}

interface StatusRow {
  gateway: string;
  state: 'signed_in' | 'expired' | 'ended' | 'unreachable';
  operator?: unknown;
  expires_at?: string;
  error?: { code: string; message: string };
}

/** One cached sign-in, confirmed with its gateway. */
async function statusOf(io: Io, key: string, entry: CachedSignIn): Promise<StatusRow> {
  if (Date.parse(entry.expires_at) <= Date.now()) {
    return { gateway: key, state: 'expired', operator: entry.operator, expires_at: entry.expires_at };
  }
  const client = clientFor(io, new URL(key));
  try {
    const res = await client.api('GET', '/v1/operator/sessions/current', { bearer: entry.token });
    const body = (res.body ?? {}) as { operator?: unknown; expires_at?: unknown };
    return {
      gateway: key,
      state: 'signed_in',
      operator: parseOperatorView(body.operator) ?? entry.operator,
      expires_at: typeof body.expires_at === 'string' ? body.expires_at : entry.expires_at,
    };
  } catch (err) {
    const e = asCiportError(err);
    if (e instanceof GatewayError && e.code === 'CIPORT_E_ADMIN_UNAUTHORIZED') {
      return { gateway: key, state: 'ended', operator: entry.operator, expires_at: entry.expires_at };
    }
    return { gateway: key, state: 'unreachable', error: e.toJSON() };
  } finally {
    client.close();
  }
}

const STATE_TEXT: Record<StatusRow['state'], string> = {
  signed_in: 'signed in',
  expired: 'sign-in expired',
  ended: 'sign-in ended (signed out, or no longer known to the gateway)',
  unreachable: 'gateway unreachable',
};

async function loginStatus(io: Io, opts: LoginFlags): Promise<number> {
  const cache = new CredentialsCache(credentialsPath(io.env));
  const keys = targetKeys(io, cache, opts.gateway);
  if (keys.length === 0) {
    throw new CiportError(
      'CIPORT_E_LOGIN_REQUIRED',
      `not signed in to any gateway (nothing in ${cache.path}): run \`ciport login --gateway URL\``,
    );
  }
  const rows: StatusRow[] = [];
  for (const key of keys) {
    const entry = cache.get(key);
    if (!entry) {
      if (keys.length === 1) throw loginRequired(key, `not signed in to ${key}`);
      continue;
    }
    rows.push(await statusOf(io, key, entry));
  }
  const bad = rows.find((r) => r.state !== 'signed_in');
  if (keys.length === 1 && bad && bad.state !== 'unreachable') {
    throw loginRequired(bad.gateway, `${bad.gateway}: ${STATE_TEXT[bad.state]}`);
  }
  if (opts.json) writeJson(io, keys.length === 1 ? rows[0] : rows);
  else {
    for (const r of rows) {
      const operator = parseOperatorView(r.operator);
      const who = operator ? ` as ${printable(operatorLine(operator))}` : '';
      const until = r.state === 'signed_in' ? `, until ${r.expires_at}` : '';
      const why = r.error ? `: ${printable(r.error.message)}` : '';
      io.stdout.write(`${r.gateway}: ${STATE_TEXT[r.state]}${who}${until}${why}\n`);
    }
  }
  if (rows.some((r) => r.state === 'expired' || r.state === 'ended')) return ExitCode.tokenRejected;
  return bad ? ExitCode.unreachable : ExitCode.ok;
}
