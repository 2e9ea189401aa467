// The arguments of `npm run bench` (bench/main.ts): parsed and checked before anything starts.
// A wrong argument is a UsageError: main prints its one-line message and the usage, exit 2.
import { PEER_IDS, TESTS } from './summary.js';

export class UsageError extends Error {}

export interface BenchArgs {
  help: boolean;
  stopLeftovers: boolean;
  summarize?: string;
  quick: boolean;
  rounds?: number;
  pgSeconds?: number;
  iperfSeconds?: number;
  /** Canonical test ids (TESTS), whatever their case on the command line. */
  tests?: string[];
  /** Canonical peer ids (PEER_IDS). */
  peers?: string[];
  /** Bench names in the order given; 'table' for the peer table alone. */
  names: string[];
}

export const EXTRA_ROWS = ['sessions', 'memory'];

export function usage(benches: readonly string[]): string {
  return `usage: npm run bench [-- --quick] [-- --rounds=N]   the peer table (and ${EXTRA_ROWS.join(', ')})
       npm run bench -- table [--quick] [--rounds=N]   the peer table alone
         table options: --pg-seconds=N --iperf-seconds=N --tests=${TESTS.map((t) => t.id).join(',')}
                        --peers=${PEER_IDS.join(',')} (direct is always measured)
       npm run bench -- --summarize=bench/results/raw-….tsv   the tables of an earlier run
       npm run bench -- --stop-leftovers   stop what a killed run started (by its recorded PIDs)
       npm run bench -- <${benches.join('|')}>... [--rounds=N]
       npm run bench -- --help   this text
`;
}

const VALUE_FLAGS = ['rounds', 'pg-seconds', 'iperf-seconds', 'summarize', 'tests', 'peers'];
const BARE_FLAGS = ['quick', 'stop-leftovers', 'help'];

function positiveInteger(name: string, value: string): number {
  const n = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new UsageError(`--${name} wants a positive integer (got '${value}')`);
  return n;
}

/** A comma-separated list of ids, each matched case-insensitively to one of `known`. */
function ids(name: string, value: string, known: readonly string[]): string[] {
  const items = value.split(',').map((s) => s.trim());
  if (items.some((s) => s === ''))
    throw new UsageError(`--${name} wants a comma-separated list of ${known.join(', ')}`);
  return items.map((item) => {
    const id = known.find((k) => k.toLowerCase() === item.toLowerCase());
    if (!id) throw new UsageError(`--${name}: unknown id '${item}' (known: ${known.join(', ')})`);
    return id;
  });
}

export function parseArgs(argv: readonly string[], benches: readonly string[]): BenchArgs {
  const out: BenchArgs = { help: false, stopLeftovers: false, quick: false, names: [] };
  const seen = new Set<string>();
  for (const arg of argv) {
    if (arg === '-h' || arg === '--help') {
      out.help = true;
      continue;
    }
    if (!arg.startsWith('-')) {
      if (arg !== 'table' && !benches.includes(arg))
        throw new UsageError(`unknown bench '${arg}' (known: table, ${benches.join(', ')})`);
      out.names.push(arg);
      continue;
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(arg);
    const name = m?.[1] ?? '';
    const value = m?.[2];
    if (!m || !(VALUE_FLAGS.includes(name) || BARE_FLAGS.includes(name)))
      throw new UsageError(`unknown option '${arg}'`);
    if (BARE_FLAGS.includes(name) && value !== undefined)
      throw new UsageError(`--${name} takes no value (got '${arg}')`);
    if (VALUE_FLAGS.includes(name) && value === undefined)
      throw new UsageError(`--${name} wants a value: --${name}=…`);
    if (seen.has(name)) throw new UsageError(`--${name} given twice`);
    seen.add(name);
    const v = value ?? '';
    switch (name) {
      case 'quick':
        out.quick = true;
        break;
      case 'stop-leftovers':
        out.stopLeftovers = true;
        break;
      case 'rounds':
        out.rounds = positiveInteger(name, v);
        break;
      case 'pg-seconds':
        out.pgSeconds = positiveInteger(name, v);
        break;
      case 'iperf-seconds':
        out.iperfSeconds = positiveInteger(name, v);
        break;
      case 'summarize':
        if (v === '')
          throw new UsageError('--summarize wants a raw results file: --summarize=bench/results/raw-….tsv');
        out.summarize = v;
        break;
      case 'tests':
        out.tests = ids(
          name,
          v,
          TESTS.map((t) => t.id),
        );
        break;
      case 'peers':
        out.peers = ids(name, v, ['direct', ...PEER_IDS]);
        break;
    }
  }
  const tableOnly = ['pg-seconds', 'iperf-seconds', 'tests', 'peers'].filter((f) => seen.has(f));
  if (tableOnly.length && out.names.some((n) => n !== 'table'))
    throw new UsageError(
      `--${tableOnly[0]} is a peer table option: use it with \`table\` (or no bench name)`,
    );
  return out;
}
