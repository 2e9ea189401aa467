import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseDuration } from '../../config/duration.js';
import { loadGatewayConfig } from '../../config/load.js';
import type { GatewayConfig, IssuerConfig } from '../../config/schema.js';
import { asCiportError, type CiportError, ConfigError, ExitCode, UsageError } from '../../errors/index.js';
import { type Principal, TokenVerifier } from '../../identity/index.js';
import { whatIfSubject } from '../../identity/what-if.js';
import {
  compilePolicy,
  type Decision,
  formatDecision,
  formatFinding,
  lintPolicy,
  withApprovals,
} from '../../policy/index.js';
import { action, type CliContext, examples } from '../command.js';
import { count, paint, printable, printableLines, writeJson } from '../output.js';

interface ExplainOptions {
  config: string;
  token?: string;
  claims?: string;
  issuer?: string;
  target: string[];
  ttl?: string;
  json?: boolean;
}

/** What `policy explain --json` prints: DESIGN's contract plus the explanation's details. */
interface ExplainResult {
  decision: 'allow' | 'deny';
  rule: string | null;
  targets: string[];
  reason: string;
  error: { code: string; message: string } | null;
  verified: boolean;
  issuer: string | null;
  principal: Principal | null;
  grants: Decision['targets'];
  failures: Decision['failures'];
  nearest: Decision['nearest'];
}

export function registerPolicy(program: Command, ctx: CliContext): void {
  const policy = program.command('policy').description('explain and lint access policy');

  examples(
    policy
      .command('explain')
      .description('show the decision for a token (fully verified) or a claims file (offline what-if)')
      .requiredOption('--config <file>', 'gateway configuration')
      .option('--token <file>', 'file holding an ID token ("-" for stdin); verified against its issuer')
      .option('--claims <file>', 'JSON file of claims; signature, expiry and audience are NOT checked')
      .option('--issuer <name>', 'issuer the claims belong to (default: by their "iss", or the only one)')
      .option('--target <name>', 'target to ask for (repeatable; default: all the rules grant)', collect, [])
      .option('--ttl <duration>', 'requested session lifetime, e.g. 10m')
      .option('--json', 'print one JSON object: {decision, rule, targets, reason, error, …}'),
    [
      'ciport policy explain --config gateway.yaml --claims job-claims.json --target staging-db',
      'ciport dev token --preset gitlab-main | ciport policy explain --config gateway.yaml --token -',
      'ciport policy explain --config gateway.yaml --token id.jwt --json | jq .reason',
    ],
  )
    .addHelpText('after', '\nExit: 0 allowed, 3 denied, 4 token rejected, 2 usage or configuration error.\n')
    .action(action(ctx, (opts: ExplainOptions) => explain(ctx, opts)));

  examples(
    policy
      .command('lint')
      .description('find risky rules (exit 1 when a finding is of error level)')
      .requiredOption('--config <file>', 'gateway configuration')
      .option('--json', 'print {"findings": […], "errors": N, "warnings": N}')
      .option('-q, --quiet', 'print findings only, no summary line'),
    ['ciport policy lint --config gateway.yaml'],
  ).action(
    action(ctx, (opts: { config: string; json?: boolean; quiet?: boolean }) => {
      const cfg = loadGatewayConfig(opts.config, { resolveSecrets: false });
      const findings = lintPolicy(cfg);
      const errors = findings.filter((f) => f.level === 'error').length;
      if (opts.json) {
        writeJson(ctx.io, { findings, errors, warnings: findings.length - errors });
      } else {
        const file = printable(opts.config);
        for (const f of findings) {
          const level = paint(ctx.io, ctx.io.stdout, f.level === 'error' ? 'red' : 'yellow', f.level);
          // formatFinding starts with the level, which the painted prefix already shows.
          const text = formatFinding(f).replace(/^\S+ /, '');
          ctx.io.stdout.write(`${file}: ${level}: ${printable(text)}\n`);
        }
        if (!opts.quiet) {
          const warnings = findings.length - errors;
          ctx.io.stdout.write(
            findings.length === 0
              ? `policy OK: ${file} (${count(cfg.rules.length, 'rule')}, no findings)\n`
              : `${file}: ${count(errors, 'error')}, ${count(warnings, 'warning')} in ${count(cfg.rules.length, 'rule')}\n`,
          );
        }
      }
      return errors > 0 ? ExitCode.problemsFound : ExitCode.ok;
    }),
  );
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

async function explain(ctx: CliContext, opts: ExplainOptions): Promise<number> {
  if (Boolean(opts.token) === Boolean(opts.claims)) {
    throw new UsageError('give exactly one of --token FILE or --claims FILE');
  }
  const ttlMs = opts.ttl === undefined ? undefined : parseDuration(opts.ttl);
  if (opts.ttl !== undefined && ttlMs === undefined)
    throw new UsageError(`--ttl: not a duration: ${opts.ttl}`);
  const cfg = loadGatewayConfig(opts.config, { resolveSecrets: false });
  const policy = compilePolicy(cfg);

  let subject: { issuer: IssuerConfig; principal: Principal; facts: Record<string, unknown> };
  try {
    subject = opts.token
      ? await verifyTokenFile(cfg, opts.token)
      : claimsFromFile(cfg, opts.claims!, opts.issuer);
  } catch (thrown) {
    const err = asCiportError(thrown);
    if (err.exitCode !== ExitCode.tokenRejected) throw err;
    return report(ctx, opts, rejected(err));
  }
  const decision = withApprovals(
    policy.decide({
      issuer: subject.issuer.name,
      facts: subject.facts,
      targets: opts.target,
      ttlMs,
      defaultTtlMs: cfg.sessions.default_ttl,
    }),
    policy,
  );
  return report(ctx, opts, {
    decision: decision.decision,
    rule: decision.rule,
    targets: decision.targets.map((t) => t.target),
    reason: decision.reason,
    error: decision.decision === 'deny' ? { code: 'CIPORT_E_POLICY_DENIED', message: decision.reason } : null,
    verified: Boolean(opts.token),
    issuer: subject.issuer.name,
    principal: subject.principal,
    grants: decision.targets,
    failures: decision.failures,
    nearest: decision.nearest,
  });
}

function rejected(err: CiportError): ExplainResult {
  return {
    decision: 'deny',
    rule: null,
    targets: [],
    reason: `token rejected: ${err.message}`,
    error: err.toJSON(),
    verified: false,
    issuer: null,
    principal: null,
    grants: [],
    failures: [],
    nearest: null,
  };
}

function report(ctx: CliContext, opts: ExplainOptions, result: ExplainResult): number {
  const code =
    result.error && result.decision === 'deny' && result.error.code !== 'CIPORT_E_POLICY_DENIED'
      ? ExitCode.tokenRejected
      : result.decision === 'allow'
        ? ExitCode.ok
        : ExitCode.denied;
  if (opts.json) {
    writeJson(ctx.io, result);
    return code;
  }
  const out = ctx.io.stdout;
  if (!result.verified && opts.claims) {
    ctx.io.stderr.write(
      `${paint(ctx.io, ctx.io.stderr, 'yellow', 'note')}: offline what-if from ${opts.claims}: signature, expiry and audience were not checked\n`,
    );
  }
  if (code === ExitCode.tokenRejected) {
    out.write(`deny: ${printable(result.reason)} (${result.error?.code})\n`);
    return code;
  }
  const p = result.principal;
  if (p) out.write(`principal: ${printable(describePrincipal(p))}\n`);
  const text = formatDecision({
    decision: result.decision,
    rule: result.rule,
    rules: [],
    targets: result.grants,
    ttlMs: null,
    reason: result.reason,
    failures: result.failures,
    nearest: result.nearest,
  });
  const [head, ...rest] = printableLines(text).split('\n');
  out.write(
    `${paint(ctx.io, out, result.decision === 'allow' ? 'green' : 'red', head ?? '')}\n${rest.join('\n')}`,
  );
  return code;
}

function describePrincipal(p: Principal): string {
  const parts = [`issuer ${p.issuer}`];
  if (p.project) parts.push(`project ${p.project.path ?? p.project.id}`);
  if (p.ref) parts.push(`ref ${p.ref.name}${p.ref.protected === true ? ' (protected)' : ''}`);
  if (p.job_id) parts.push(`job ${p.job_id}`);
  if (p.fork) parts.push('FORK');
  if (!p.trusted_event) parts.push(`untrusted event ${p.event}`);
  return parts.join(', ');
}

async function verifyTokenFile(cfg: Readonly<GatewayConfig>, file: string) {
  let token: string;
  try {
    token = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(
      `--token: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`,
    );
  }
  const verified = await new TokenVerifier(cfg.issuers).verify(token.trim());
  return { issuer: verified.issuer, principal: verified.principal, facts: verified.facts };
}

function claimsFromFile(cfg: Readonly<GatewayConfig>, file: string, issuerName: string | undefined) {
  let claims: unknown;
  try {
    claims = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    const why =
      err instanceof SyntaxError ? err.message : ((err as NodeJS.ErrnoException).code ?? 'unreadable');
    throw new ConfigError('CIPORT_E_CLAIMS_INVALID', `--claims ${file}: not a JSON file (${why})`);
  }
  return whatIfSubject(cfg, claims, issuerName, `--claims ${file}`);
}
