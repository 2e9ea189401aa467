// `npm run bench -- <name>…`: the project's own benchmarks. Figures are ratios to a baseline
// measured in the same run; see docs/performance.md.
import { benchAudit } from './audit.js';
import { benchCarriers } from './carriers.js';
import { benchDecide } from './decide.js';
import { benchMemory } from './memory.js';
import { benchPg } from './pg.js';
import { benchSessions } from './sessions.js';
import { benchTunnel } from './tunnel.js';

const BENCHES: Record<string, (rounds: number) => Promise<string>> = {
  audit: benchAudit,
  carriers: benchCarriers,
  decide: benchDecide,
  memory: benchMemory,
  pg: benchPg,
  sessions: benchSessions,
  tunnel: benchTunnel,
};

// `npm run bench` (no name): the peer table (bench/table.ts), then these extra rows, each when
// registered in BENCHES.
const EXTRA_ROWS = ['sessions', 'memory'];

const USAGE = `usage: npm run bench [-- --quick] [-- --rounds=N]   the peer table (and ${EXTRA_ROWS.join(', ')})
       npm run bench -- table [--quick] [--rounds=N]   the peer table alone
         table options: --pg-seconds=N --iperf-seconds=N --tests=tcp1,tcp8,c1,c16,C4,ci
                        --peers=ssh,stunnel,haproxy,nodetls,pgbouncer,ciport (direct is always measured)
       npm run bench -- --summarize=bench/results/raw-….tsv   the tables of an earlier run
       npm run bench -- --stop-leftovers   stop what a killed run started (by its recorded PIDs)
       npm run bench -- <${Object.keys(BENCHES).join('|')}>... [--rounds=N]
`;

function numberFlag(argv: string[], name: string): number | undefined {
  const arg = argv.find((a) => a.startsWith(`--${name}=`));
  if (!arg) return undefined;
  const n = Number(arg.slice(name.length + 3));
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} wants a positive number`);
  return n;
}

async function run(argv: string[]): Promise<number> {
  const names = argv.filter((a) => !a.startsWith('--'));
  const known = [
    '--quick',
    '--rounds=',
    '--pg-seconds=',
    '--iperf-seconds=',
    '--summarize=',
    '--tests=',
    '--peers=',
    '--stop-leftovers',
  ];
  const unknown = [
    ...names.filter((n) => !(n in BENCHES) && n !== 'table'),
    ...argv.filter(
      (a) => a.startsWith('--') && !known.some((k) => a === k || (k.endsWith('=') && a.startsWith(k))),
    ),
  ];
  if (unknown.length > 0 || argv.includes('--help')) {
    process.stderr.write(USAGE);
    return 2;
  }
  if (argv.includes('--stop-leftovers')) {
    const { stopLeftovers } = await import('./table.js');
    for (const line of await stopLeftovers()) process.stdout.write(`${line}\n`);
    return 0;
  }
  const summarize = argv.find((a) => a.startsWith('--summarize='));
  if (summarize) {
    const { summarizeFile } = await import('./table.js');
    process.stdout.write(`${summarizeFile(summarize.slice('--summarize='.length))}\n`);
    return 0;
  }
  const quick = argv.includes('--quick');
  const rounds = numberFlag(argv, 'rounds');
  if (names.length === 0 || names.includes('table')) {
    const pgSeconds = numberFlag(argv, 'pg-seconds');
    const iperfSeconds = numberFlag(argv, 'iperf-seconds');
    const list = (name: string) =>
      argv
        .find((a) => a.startsWith(`--${name}=`))
        ?.slice(name.length + 3)
        .split(',');
    const tests = list('tests');
    const peers = list('peers');
    // Imported here, not at the top: the peer table's modules load only when it runs.
    const { benchTable } = await import('./table.js');
    const out = await benchTable({
      rounds: rounds ?? (quick ? 1 : 3),
      quick,
      ...(pgSeconds ? { pgSeconds } : {}),
      ...(iperfSeconds ? { iperfSeconds } : {}),
      ...(tests ? { tests } : {}),
      ...(peers ? { peers } : {}),
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

run(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
