import type { Command } from 'commander';
import { connectGateway } from '../../client/port.js';
import { action, type CliContext, examples } from '../command.js';
import { type Io, paint, printable, writeJson } from '../output.js';
import { type ConnectionFlags, connectionOptions } from './exec.js';

interface WhoamiBody {
  principal?: Record<string, unknown>;
  decision?: {
    decision?: string;
    rule?: string | null;
    targets?: Array<
      string | { target?: string; name?: string; rule?: string; ttl_ms?: number; ttlMs?: number }
    >;
    reason?: string;
  };
}

export function registerWhoami(program: Command, ctx: CliContext): void {
  const whoami = program
    .command('whoami')
    .description('show the identity the gateway sees in this job token and the targets policy would grant')
    .option('--json', 'print the gateway answer {"principal", "decision"} as JSON');
  connectionOptions(whoami);
  examples(whoami, ['ciport whoami', 'ciport whoami --json | jq .decision.targets']).action(
    action(ctx, async (opts: ConnectionFlags & { json?: boolean }) => {
      const { client, token } = await connectGateway({
        env: ctx.io.env,
        gateway: opts.gateway,
        tokenEnv: opts.tokenEnv,
        audience: opts.audience,
      });
      try {
        const res = await client.api('GET', '/v1/whoami', { bearer: token });
        const body = (res.body ?? {}) as WhoamiBody;
        if (opts.json) writeJson(ctx.io, body);
        else printWhoami(ctx.io, body);
        return 0;
      } finally {
        client.close();
      }
    }),
  );
}

/** Nested principal fields flattened to `key.sub: value` lines; nulls and empties left out. */
function flatten(value: unknown, prefix: string, out: Array<[string, string]>): void {
  if (value === null || value === undefined) return;
  if (Array.isArray(value)) {
    if (value.length > 0) out.push([prefix, value.map(String).join(', ')]);
    return;
  }
  if (typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
    return;
  }
  out.push([prefix, String(value)]);
}

function targetName(t: NonNullable<NonNullable<WhoamiBody['decision']>['targets']>[number]): string {
  return typeof t === 'string' ? t : (t.target ?? t.name ?? '?');
}

export function printWhoami(io: Io, body: WhoamiBody): void {
  const rows: Array<[string, string]> = [];
  flatten(body.principal ?? {}, '', rows);
  const d = body.decision ?? {};
  const granted = (d.targets ?? []).map(targetName);
  rows.push(['decision', `${d.decision ?? 'unknown'}${d.rule ? ` (rule ${d.rule})` : ''}`]);
  rows.push(['targets', granted.length > 0 ? granted.join(', ') : '(none)']);
  if (d.reason) rows.push(['reason', d.reason.replace(/\s*\n\s*/g, '; ')]);
  const shown = rows.map(([k, v]) => [printable(`${k}:`), printable(v)] as const);
  const width = Math.max(...shown.map(([k]) => k.length));
  for (const [k, v] of shown) {
    io.stdout.write(`${paint(io, io.stdout, 'bold', k.padEnd(width))} ${v}\n`);
  }
}
