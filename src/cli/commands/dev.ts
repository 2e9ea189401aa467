// `ciport dev issuer|token`: a local OIDC issuer and platform-shaped tokens for trying ciport
// without a CI platform. Development only — the issuer serves plain http on 127.0.0.1, which
// the verifier accepts from loopback and nowhere else.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseDuration } from '../../config/duration.js';
import { ConfigError, UsageError } from '../../errors/index.js';
import {
  DEV_DEFAULT_AUDIENCE,
  DEV_DEFAULT_KEY_FILE,
  DEV_ISSUER_DEFAULT_PORT,
  DevIssuer,
  type DevIssuerKind,
  mintToken,
} from '../../identity/dev-issuer.js';
import { isPreset, PRESETS, type PresetName, parseSetPairs } from '../../identity/dev-presets.js';
import { DEV_ALGS, type DevAlg, DevSigner } from '../../identity/dev-signer.js';
import { action, type CliContext, examples } from '../command.js';
import type { Io } from '../output.js';

export interface DevIssuerCliOptions {
  port: string;
  keyFile: string;
  kind: string;
  alg: string;
}

export interface DevTokenCliOptions {
  preset?: string;
  issuer?: string;
  keyFile: string;
  audience: string[];
  claims?: string;
  set: string[];
  unset: string[];
  ttl: string;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function registerDev(program: Command, ctx: CliContext): void {
  const dev = program
    .command('dev')
    .description('development issuer and tokens for trying ciport locally (never for production)');

  examples(
    dev
      .command('issuer')
      .description('serve an OIDC issuer on 127.0.0.1 until interrupted; prints its URL')
      .option('--port <n>', 'TCP port on 127.0.0.1 (0: any free port)', String(DEV_ISSUER_DEFAULT_PORT))
      .option('--key-file <file>', 'signing keys, created when missing', DEV_DEFAULT_KEY_FILE)
      .option('--kind <kind>', 'gitlab or github: where the JWKS is served', 'gitlab')
      .option('--alg <alg>', `algorithm of a new key: ${DEV_ALGS.join(' or ')}`, 'RS256'),
    ['ciport dev issuer', 'ciport dev issuer --port 0 --kind github --key-file /tmp/dev-keys.json'],
  ).action(action(ctx, (opts: DevIssuerCliOptions) => runDevIssuer(opts, ctx.io, untilSignal)));

  examples(
    dev
      .command('token')
      .description('mint a token from the dev issuer keys; prints the token alone on stdout')
      .option('--preset <name>', `platform-shaped claims: ${PRESETS.join(', ')}`)
      .option('--issuer <url>', 'iss claim (default: the URL of the last `dev issuer` using this key file)')
      .option('--key-file <file>', 'signing keys, created when missing', DEV_DEFAULT_KEY_FILE)
      .option('--audience <aud>', `aud claim, repeatable (default ${DEV_DEFAULT_AUDIENCE})`, collect, [])
      .option('--claims <file>', 'JSON object of claims merged over the preset')
      .option(
        '--set <key=value>',
        'set one claim, repeatable; with a gitlab/github preset values stay strings as the platforms send them',
        collect,
        [],
      )
      .option('--unset <key>', 'remove a claim, repeatable', collect, [])
      .option('--ttl <duration>', 'lifetime such as 5m or 1h', '10m'),
    [
      'ciport dev token --preset gitlab-main',
      'export CIPORT_ID_TOKEN=$(ciport dev token --preset github-push --audience https://ciport.example.com)',
      'ciport dev token --preset gitlab-fork-mr --set ref_protected=true --ttl 2m',
    ],
  ).action(action(ctx, (opts: DevTokenCliOptions) => runDevToken(opts, ctx.io)));
}

/**
 * Serve until the promise `stop()` returns resolves. `stop` is called once the server listens,
 * so a failed start leaves no signal handler behind. Tests pass their own instead of signals.
 */
export async function runDevIssuer(
  opts: DevIssuerCliOptions,
  io: Io,
  stop: () => Promise<unknown>,
): Promise<number> {
  const port = Number(opts.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new UsageError(`--port ${opts.port}: not a port`);
  if (opts.kind !== 'gitlab' && opts.kind !== 'github')
    throw new UsageError(`--kind ${opts.kind}: gitlab or github`);
  if (!DEV_ALGS.includes(opts.alg as DevAlg))
    throw new UsageError(`--alg ${opts.alg}: ${DEV_ALGS.join(' or ')}`);
  let issuer: DevIssuer;
  try {
    issuer = await DevIssuer.start({
      port,
      keyFile: opts.keyFile,
      kind: opts.kind as DevIssuerKind,
      alg: opts.alg as DevAlg,
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      throw new UsageError(`--port ${port}: cannot listen on 127.0.0.1 (${code})`, { cause: err });
    }
    throw err;
  }
  io.stdout.write(`${issuer.url}\n`);
  io.stderr.write(
    [
      `ciport dev issuer: serving ${issuer.url} (keys in ${opts.keyFile}); Ctrl-C stops it.`,
      'Trust it in a gateway config (development only):',
      'issuers:',
      '  - name: dev',
      `    kind: ${opts.kind}`,
      `    issuer: ${issuer.url}`,
      `    audience: ${DEV_DEFAULT_AUDIENCE}`,
      '    dev: true',
      `Mint a token: ciport dev token --preset ${opts.kind === 'github' ? 'github-push' : 'gitlab-main'} --key-file ${opts.keyFile}`,
      '',
    ].join('\n'),
  );
  try {
    await stop();
  } finally {
    await issuer.close();
  }
  return 0;
}

export async function runDevToken(opts: DevTokenCliOptions, io: Io): Promise<number> {
  const preset = presetOption(opts.preset);
  const ttlMs = parseDuration(opts.ttl);
  if (ttlMs === undefined || ttlMs <= 0) throw new UsageError(`--ttl ${opts.ttl}: a duration such as 10m`);
  // Validate --set and --claims before touching the key file, so a typo creates nothing.
  parseSetPairs(opts.set, preset);
  const claims = opts.claims === undefined ? {} : readClaims(opts.claims);
  const signer = await DevSigner.open(opts.keyFile);
  const issuer = opts.issuer ?? signer.issuer ?? `http://127.0.0.1:${DEV_ISSUER_DEFAULT_PORT}`;
  if (!URL.canParse(issuer)) throw new UsageError(`--issuer ${issuer}: not a URL`);
  const token = await mintToken(signer, issuer, claims, {
    ...(preset === undefined ? {} : { preset }),
    audience: audienceOption(opts.audience),
    set: opts.set,
    unset: opts.unset,
    ttlMs,
  });
  io.stdout.write(`${token}\n`);
  return 0;
}

function presetOption(name: string | undefined): PresetName | undefined {
  if (name === undefined || isPreset(name)) return name;
  throw new UsageError(`--preset ${name}: one of ${PRESETS.join(', ')}`);
}

/** One --audience gives a string `aud`, several an array, none the default. */
function audienceOption(values: string[]): string | string[] {
  if (values.length === 0) return DEV_DEFAULT_AUDIENCE;
  return values.length === 1 ? (values[0] as string) : values;
}

function readClaims(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    throw new UsageError(
      `--claims ${file}: cannot read (${(cause as NodeJS.ErrnoException).code ?? 'error'})`,
      {
        cause,
      },
    );
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError('CIPORT_E_CLAIMS_INVALID', `--claims ${file}: not JSON`, { cause });
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new ConfigError('CIPORT_E_CLAIMS_INVALID', `--claims ${file}: expected a JSON object of claims`);
  }
  return data as Record<string, unknown>;
}

/** Resolves on the first SIGINT or SIGTERM, then stops listening for them. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const done = (signal: NodeJS.Signals) => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve(signal);
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}
