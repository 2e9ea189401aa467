// `ciport agent --config F` (the exit inside the private network) and `ciport agents
// enroll|list|targets|revoke` (operator commands against a running gateway, admin token in
// CIPORT_ADMIN_TOKEN). docs/agent.md.
import type { EventEmitter } from 'node:events';
import type { Command } from 'commander';
import { Agent } from '../../agent/agent.js';
import { loadAgentConfig } from '../../agent/config.js';
import { SecretProviders } from '../../credentials/secret-providers.js';
import { type CiportError, UsageError } from '../../errors/index.js';
import { quietAwsSdkNodeWarning } from '../../exits/aws-sdk-warning.js';
import { createLogger } from '../../log/logger.js';
import { type AdminOptions, reasonBody, reasonOption, tableLines, withAdmin } from '../admin.js';
import { action, type CliContext, examples } from '../command.js';
import { type Io, writeJson } from '../output.js';

export function registerAgent(program: Command, ctx: CliContext): void {
  examples(
    program
      .command('agent')
      .description(
        'run an agent: dial out to the gateway, advertise the configured targets and serve tunnels to them ' +
          '(enrolls once with enrollment_token; SIGTERM stops, SIGHUP is logged and ignored)',
      )
      .requiredOption('-c, --config <file>', 'agent configuration (YAML)')
      .option('--log-level <level>', 'pino level (default info, or CIPORT_LOG_LEVEL)'),
    ['CIPORT_ENROLLMENT_TOKEN=cpe_… ciport agent --config /etc/ciport/agent.yaml'],
  ).action(
    action(ctx, (opts: { config: string; logLevel?: string }) => {
      quietAwsSdkNodeWarning();
      return runAgent(opts.config, ctx.io, opts.logLevel ? { logLevel: opts.logLevel } : {});
    }),
  );
}

export interface RunAgentOptions {
  logLevel?: string;
  signals?: EventEmitter;
}

/** Start the agent and serve until SIGTERM or SIGINT, then close and resolve 0. */
export async function runAgent(file: string, io: Io, options: RunAgentOptions = {}): Promise<number> {
  const config = loadAgentConfig(file, { env: io.env });
  const logger = createLogger({
    level: options.logLevel ?? io.env.CIPORT_LOG_LEVEL ?? 'info',
    service: 'ciport-agent',
  });
  // SIGHUP (a closed terminal, `kill -HUP`, a service manager's reload) would end Node's process
  // by default: the agent keeps running with the configuration it has (a changed file takes
  // effect on restart) and says so once per signal.
  const signals = options.signals ?? process;
  const onHup = () =>
    logger.info(
      { config: file },
      'SIGHUP ignored: the agent keeps running (restart it to apply a changed configuration)',
    );
  signals.on('SIGHUP', onHup);
  // Provider secrets (AWS Secrets Manager, Vault) are read before the exits are built.
  const secrets = await SecretProviders.start(config, { log: logger, vault: config.vault, file });
  const agent = new Agent(config, { log: logger, env: io.env, secrets });
  try {
    await agent.start();
  } catch (err) {
    signals.off('SIGHUP', onHup);
    secrets.close();
    throw err;
  }
  io.stderr.write(
    `ciport: agent ${config.name} (${agent.agentId}) serving ${
      agent
        .advertised()
        .map((t) => t.name)
        .join(', ') || 'no targets'
    } via ${config.gateway}\n`,
  );
  const stop = await new Promise<string | CiportError>((done) => {
    const onTerm = () => finish('SIGTERM');
    const onInt = () => finish('SIGINT');
    const onFatal = (err: CiportError) => finish(err);
    const finish = (why: string | CiportError) => {
      signals.off('SIGTERM', onTerm);
      signals.off('SIGINT', onInt);
      agent.off('fatal', onFatal);
      done(why);
    };
    signals.on('SIGTERM', onTerm);
    signals.on('SIGINT', onInt);
    agent.on('fatal', onFatal);
  });
  await agent.close();
  signals.off('SIGHUP', onHup);
  await new Promise<void>((done) => logger.flush(() => done()));
  if (typeof stop !== 'string') {
    // The credential is refused for good and no usable enrollment token: retrying is pointless.
    io.stderr.write(`ciport: ${stop.code}: ${stop.message}\n`);
    return stop.exitCode;
  }
  io.stderr.write(`ciport: ${stop}: agent stopping\n`);
  return 0;
}

export function registerAgents(program: Command, ctx: CliContext): void {
  const agents = program
    .command('agents')
    .description(
      'enroll, list, bind (targets) and revoke agents on a running gateway (as CIPORT_ADMIN_TOKEN, else your `ciport login`)',
    );

  examples(
    reasonOption(
      agents
        .command('enroll')
        .description(
          'create a one-time enrollment token for an agent (printed alone on stdout); the agent may serve ' +
            'only the targets named here (ciport agents targets changes that later)',
        )
        .requiredOption('--name <name>', 'the agent name')
        .requiredOption('--targets <list>', 'comma-separated target names the agent may serve (no wildcard)')
        .option('--ttl <duration>', 'how long the token may be used (default 1h, at most 7d)')
        .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY)')
        .option('--json', 'print {"token", "name", "targets", "expires_at"}'),
      'agent.enrolled',
    ),
    [
      'CIPORT_ENROLLMENT_TOKEN=$(ciport agents enroll --name dc1 --targets ledger-db,api --gateway https://ciport.example.com:8443)',
      'ciport agents enroll --name dc2 --targets api --reason "CHG-42: second data centre"',
    ],
  ).action(
    action(ctx, async (opts: AdminOptions & EnrollOptions) => {
      const body = await agentsEnroll(ctx.io, opts);
      if (opts.json) writeJson(ctx.io, body);
      else ctx.io.stdout.write(`${body.token}\n`);
      return 0;
    }),
  );

  examples(
    agents
      .command('list')
      .description('enrolled agents, revoked ones included, with their live connections')
      .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY)')
      .option('--json', 'print the JSON array'),
    ['ciport agents list --json | jq -r ".[].name"'],
  ).action(
    action(ctx, async (opts: AdminOptions) => {
      const list = await agentsList(ctx.io, opts);
      if (opts.json) writeJson(ctx.io, list);
      else ctx.io.stdout.write(formatAgents(list));
      return 0;
    }),
  );

  examples(
    reasonOption(
      agents
        .command('targets')
        .description('change which targets an agent (by id, or every live agent of a name) may serve')
        .argument('<agent>', 'agent id (agt_…) or name')
        .option('--set <list>', 'replace the binding with these comma-separated target names')
        .option('--add <list>', 'add these target names')
        .option('--remove <list>', 'remove these target names')
        .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY)')
        .option('--json', 'print {"agents": […]}'),
      'agent.targets_changed',
    ),
    [
      'ciport agents targets dc1 --add ledger-db --reason "CHG-43"',
      'ciport agents targets agt_0123abcd --set api,cache',
    ],
  ).action(
    action(ctx, async (agent: string, opts: AdminOptions & TargetsOptions) => {
      const body = await agentsTargets(ctx.io, agent, opts);
      if (opts.json) writeJson(ctx.io, body);
      else
        ctx.io.stdout.write(
          `${body.agents.map((a) => `${a.id} (${a.name}): ${a.targets.join(',') || '(none)'}`).join('\n')}\n`,
        );
      return 0;
    }),
  );

  examples(
    reasonOption(
      agents
        .command('revoke')
        .description(
          'revoke an agent (by id or name): its connections are cut at once and it cannot reconnect',
        )
        .argument('<agent>', 'agent id (agt_…) or name')
        .option('--gateway <url>', 'gateway URL (default CIPORT_GATEWAY)')
        .option('--json', 'print {"revoked": […]}'),
      'agent.revoked',
    ),
    ['ciport agents revoke dc1 --reason "INC-7: host decommissioned"'],
  ).action(
    action(ctx, async (agent: string, opts: AdminOptions & { reason?: string }) => {
      const body = await agentsRevoke(ctx.io, agent, opts);
      if (opts.json) writeJson(ctx.io, body);
      else
        ctx.io.stdout.write(
          `${body.revoked.map((a) => `${a.id} (${a.name}): revoked`).join('\n') || 'already revoked'}\n`,
        );
      return 0;
    }),
  );
}

export interface AgentListEntry {
  id: string;
  name: string;
  created_at: string;
  revoked_at: string | null;
  last_seen_at: string | null;
  credential_expires_at?: string | null;
  /** The targets it may serve (its binding). */
  targets: string[];
  connections: Array<{
    connection: string;
    /** Served: advertised and bound. */
    targets: string[];
    /** Advertised but not bound: refused. */
    refused?: string[];
    remote?: string;
    connected_at: string;
  }>;
}

/** `a, b,c` → ['a', 'b', 'c'] (the gateway validates the names). */
function nameList(option: string, text: string | undefined): string[] {
  const names = (text ?? '')
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  if (names.length === 0) throw new UsageError(`${option}: give at least one target name`);
  if (names.includes('*')) throw new UsageError(`${option}: name each target; there is no wildcard binding`);
  return names;
}

interface EnrollOptions {
  name: string;
  targets: string;
  ttl?: string;
  reason?: string;
}

interface TargetsOptions {
  set?: string;
  add?: string;
  remove?: string;
  reason?: string;
}

export async function agentsEnroll(
  io: Io,
  opts: AdminOptions & EnrollOptions,
): Promise<{ token: string; name: string; targets: string[]; expires_at: string }> {
  const targets = nameList('--targets', opts.targets);
  const reason = reasonBody(opts.reason);
  return withAdmin(io, opts, async (client, token) => {
    const res = await client.api('POST', '/v1/agents/enroll', {
      bearer: token,
      body: { name: opts.name, targets, ...(opts.ttl ? { ttl: opts.ttl } : {}), ...reason },
    });
    return res.body as { token: string; name: string; targets: string[]; expires_at: string };
  });
}

export async function agentsTargets(
  io: Io,
  agent: string,
  opts: AdminOptions & TargetsOptions,
): Promise<{ agents: Array<{ id: string; name: string; targets: string[] }> }> {
  if (!/^[A-Za-z0-9._-]{1,80}$/.test(agent)) throw new UsageError(`"${agent}" is not an agent id or name`);
  if (opts.set !== undefined && (opts.add !== undefined || opts.remove !== undefined))
    throw new UsageError('give either --set or --add/--remove');
  if (opts.set === undefined && opts.add === undefined && opts.remove === undefined)
    throw new UsageError('give --set, --add or --remove');
  const body =
    opts.set !== undefined
      ? { set: nameList('--set', opts.set) }
      : {
          ...(opts.add !== undefined ? { add: nameList('--add', opts.add) } : {}),
          ...(opts.remove !== undefined ? { remove: nameList('--remove', opts.remove) } : {}),
        };
  Object.assign(body, reasonBody(opts.reason));
  return withAdmin(io, opts, async (client, token) => {
    const res = await client.api('POST', `/v1/agents/${encodeURIComponent(agent)}/targets`, {
      bearer: token,
      body,
    });
    return res.body as { agents: Array<{ id: string; name: string; targets: string[] }> };
  });
}

export async function agentsList(io: Io, opts: AdminOptions): Promise<AgentListEntry[]> {
  return withAdmin(io, opts, async (client, token) => {
    const res = await client.api('GET', '/v1/agents', { bearer: token });
    return res.body as AgentListEntry[];
  });
}

export async function agentsRevoke(
  io: Io,
  agent: string,
  opts: AdminOptions & { reason?: string },
): Promise<{ revoked: Array<{ id: string; name: string }> }> {
  if (!/^[A-Za-z0-9._-]{1,80}$/.test(agent)) throw new UsageError(`"${agent}" is not an agent id or name`);
  const reason = reasonBody(opts.reason);
  return withAdmin(io, opts, async (client, token) => {
    const res = await client.api('POST', `/v1/agents/${encodeURIComponent(agent)}/revoke`, {
      bearer: token,
      body: reason,
    });
    return res.body as { revoked: Array<{ id: string; name: string }> };
  });
}

export function formatAgents(list: readonly AgentListEntry[]): string {
  if (list.length === 0) return 'no agents enrolled\n';
  const rows = list.map((a) => [
    a.id,
    a.name,
    a.revoked_at ? 'revoked' : a.connections.length > 0 ? `connected(${a.connections.length})` : 'offline',
    (a.targets ?? []).join(',') || '(none)',
    [...new Set(a.connections.flatMap((c) => c.targets))].join(',') || '-',
    [...new Set(a.connections.flatMap((c) => c.refused ?? []))].join(',') || '-',
    a.last_seen_at ?? '-',
    a.credential_expires_at ?? '-',
  ]);
  const head = ['ID', 'NAME', 'STATE', 'TARGETS', 'SERVING', 'REFUSED', 'LAST SEEN', 'CREDENTIAL EXPIRES'];
  return `${tableLines(head, rows).join('\n')}\n`;
}
