// `npm run bench -- <name>…`: the project's own benchmarks. Figures are ratios to a baseline
// measured in the same run; see docs/performance.md. Arguments are checked (bench/cli.ts)
// before anything starts; a wrong one exits 2 with a one-line error and the usage.
import { benchAudit } from './audit.js';
import { benchAuditSearch } from './audit-search.js';
import { benchCarriers } from './carriers.js';
import { EXTRA_ROWS, parseArgs, UsageError, usage } from './cli.js';
import { benchDecide } from './decide.js';
import { benchMemory } from './memory.js';
import { benchPeerScan } from './peer-scan.js';
import { benchPg } from './pg.js';
import { benchSessions } from './sessions.js';
import { benchSigv4 } from './sigv4.js';
import { benchTunnel } from './tunnel.js';

const BENCHES: Record<string, (rounds: number) => Promise<string>> = {
  audit: benchAudit,
  'audit-search': benchAuditSearch,
  carriers: benchCarriers,
  decide: benchDecide,
  memory: benchMemory,
  'peer-scan': benchPeerScan,
  pg: benchPg,
  sessions: benchSessions,
  sigv4: benchSigv4,
  tunnel: benchTunnel,
};

const USAGE = usage(Object.keys(BENCHES));

async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, Object.keys(BENCHES));
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (args.stopLeftovers) {
    const { stopLeftovers } = await import('./table.js');
    const lines = await stopLeftovers();
    process.stdout.write(lines.length ? `${lines.join('\n')}\n` : 'nothing to stop\n');
    return 0;
  }
  if (args.summarize !== undefined) {
    const { summarizeFile } = await import('./table.js');
    process.stdout.write(`${summarizeFile(args.summarize)}\n`);
    return 0;
  }
  const { names, quick, rounds } = args;
  if (names.length === 0 || names.includes('table')) {
    // Imported here, not at the top: the peer table's modules load only when it runs.
    const { benchTable } = await import('./table.js');
    const out = await benchTable({
      rounds: rounds ?? (quick ? 1 : 3),
      quick,
      ...(args.pgSeconds ? { pgSeconds: args.pgSeconds } : {}),
      ...(args.iperfSeconds ? { iperfSeconds: args.iperfSeconds } : {}),
      ...(args.tests ? { tests: args.tests } : {}),
      ...(args.peers ? { peers: args.peers } : {}),
    });
    process.stdout.write(`${out}\n\n`);
  }
  if (names.length === 0) {
    for (const name of EXTRA_ROWS) {
      const bench = BENCHES[name];
      if (!bench) continue;
      if (quick) {
        process.stdout.write(`(${name}: skipped with --quick; run \`npm run bench -- ${name}\`)\n`);
        continue;
      }
      process.stdout.write(`${await bench(rounds ?? 3)}\n\n`);
    }
  }
  for (const name of names)
    if (name !== 'table') process.stdout.write(`${await BENCHES[name]!(rounds ?? 5)}\n\n`);
  return 0;
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`bench: ${err.message}\n\n${USAGE}`);
      process.exitCode = 2;
      return;
    }
    // One line (a command's output may follow it in the message); the stack only on request.
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`bench: ${message.trimEnd()}\n`);
    if (process.env.BENCH_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  },
);
