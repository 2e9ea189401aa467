// The peer table's arithmetic, kept pure so it can be tested: raw per-round figures in, the
// order of paths per round, medians of per-round ratios to direct, and the markdown tables out.
import { fmt, median } from './stats.js';

export interface RawRow {
  round: number;
  test: string;
  path: string;
  metric: string;
  value: number;
}

export interface TestDef {
  id: string;
  label: string;
  /** Row label in the CPU tables. */
  short: string;
  /** The metric that is compared with direct. */
  metric: string;
  /** true: more is better (throughput); false: less is better (wall time), so ratio = direct / path. */
  higherIsBetter: boolean;
  /** Unit of the proxy CPU figure (metric `cpu`). */
  cpuUnit: string;
}

/** Paths in the order they run in round `round` (1-based): rotated by one each round. */
export function roundOrder<T>(paths: readonly T[], round: number): T[] {
  const n = paths.length;
  return paths.map((_, i) => paths[(i + round - 1) % n] as T);
}

function values(rows: readonly RawRow[], test: string, path: string, metric: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const r of rows)
    if (r.test === test && r.path === path && r.metric === metric && Number.isFinite(r.value))
      m.set(r.round, r.value);
  return m;
}

export interface Cell {
  /** Median over the rounds of the path's own figure. */
  value: number;
  /** Median over the rounds of (path ÷ direct in the same round), inverted when less is better. */
  ratio: number;
  /** Median proxy CPU per unit. */
  cpu: number;
  rounds: number;
  /** (max − min) ÷ median of the per-round ratios: how noisy the ratio was. */
  spread: number;
}

export function cell(rows: readonly RawRow[], test: TestDef, path: string): Cell | undefined {
  const own = values(rows, test.id, path, test.metric);
  if (own.size === 0) return undefined;
  const direct = values(rows, test.id, 'direct', test.metric);
  const ratios: number[] = [];
  for (const [round, v] of own) {
    const d = direct.get(round);
    if (d === undefined || d === 0 || v === 0) continue;
    ratios.push(test.higherIsBetter ? v / d : d / v);
  }
  const cpu = [...values(rows, test.id, path, 'cpu').values()];
  return {
    value: median([...own.values()]),
    ratio: ratios.length ? median(ratios) : Number.NaN,
    cpu: cpu.length ? median(cpu) : Number.NaN,
    rounds: own.size,
    spread: ratios.length > 1 ? (Math.max(...ratios) - Math.min(...ratios)) / median(ratios) : Number.NaN,
  };
}

/** Drop the columns (after the first) in which no row below the header has a figure. */
function dropEmptyColumns(rows: string[][]): string[][] {
  const keep = rows[0]!.map((_, c) => c === 0 || rows.slice(1).some((r) => r[c] !== '-'));
  return rows.map((r) => r.filter((_, c) => keep[c]));
}

/** A markdown table; the first row is the header, the first column left-aligned, the rest right. */
export function markdown(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(3, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) =>
    `| ${r.map((v, c) => (c === 0 ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, c) => (c === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(rows[0]!), rule, ...rows.slice(1).map(line)].join('\n');
}

/** One markdown table: a row per test, a column per path, "value (ratio)"; '-' where not run. */
export function ratioTable(
  rows: readonly RawRow[],
  tests: readonly TestDef[],
  columns: ReadonlyArray<{ label: string; path: (test: string) => string | undefined }>,
): string {
  const out = [['', ...columns.map((c) => c.label)]];
  for (const t of tests) {
    const line = [t.label];
    for (const col of columns) {
      const path = col.path(t.id);
      const c = path === undefined ? undefined : cell(rows, t, path);
      if (!c) line.push('-');
      else if (path === 'direct' || !Number.isFinite(c.ratio)) line.push(fmt(c.value));
      else line.push(`${fmt(c.value)} (${c.ratio.toFixed(2)}x)`);
    }
    if (line.slice(1).some((v) => v !== '-')) out.push(line);
  }
  return out.length > 1 ? markdown(dropEmptyColumns(out)) : '';
}

/** The proxy CPU per unit of work: a row per test, a column per path (direct has none). */
export function cpuTable(
  rows: readonly RawRow[],
  tests: readonly TestDef[],
  columns: ReadonlyArray<{ label: string; path: (test: string) => string | undefined }>,
): string {
  const out = [['proxy CPU', ...columns.map((c) => c.label)]];
  for (const t of tests) {
    const line = [`${t.short}, ${t.cpuUnit}`];
    for (const col of columns) {
      const path = col.path(t.id);
      const c = path === undefined ? undefined : cell(rows, t, path);
      line.push(c && Number.isFinite(c.cpu) ? fmt(c.cpu) : '-');
    }
    if (line.slice(1).some((v) => v !== '-')) out.push(line);
  }
  return out.length > 1 ? markdown(dropEmptyColumns(out)) : '';
}

/** The spread of each ratio over the rounds, (max − min) ÷ median, as a percentage. */
export function spreadTable(
  rows: readonly RawRow[],
  tests: readonly TestDef[],
  columns: ReadonlyArray<{ label: string; path: (test: string) => string | undefined }>,
): string {
  const out = [['spread of the ratio', ...columns.map((c) => c.label)]];
  for (const t of tests) {
    const line = [t.short];
    for (const col of columns) {
      const path = col.path(t.id);
      const c = path === undefined ? undefined : cell(rows, t, path);
      line.push(c && Number.isFinite(c.spread) ? `${Math.round(c.spread * 100)} %` : '-');
    }
    if (line.slice(1).some((v) => v !== '-')) out.push(line);
  }
  return out.length > 1 ? markdown(dropEmptyColumns(out)) : '';
}

export function toTsv(rows: readonly RawRow[]): string {
  return rows.map((r) => `${r.round}\t${r.test}\t${r.path}\t${r.metric}\t${r.value}\n`).join('');
}

export function parseTsv(text: string): RawRow[] {
  const rows: RawRow[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const [round, test, path, metric, value] = line.split('\t');
    if (value === undefined) continue;
    rows.push({ round: Number(round), test: test!, path: path!, metric: metric!, value: Number(value) });
  }
  return rows;
}

/** The peers the peer table can start (bench/table.ts, `--peers=`); direct is always measured. */
export const PEER_IDS: readonly string[] = ['ssh', 'stunnel', 'haproxy', 'nodetls', 'pgbouncer', 'ciport'];

export const TESTS: readonly TestDef[] = [
  {
    id: 'tcp1',
    label: 'bulk, 1 connection (iperf3 -P1), MB/s',
    short: 'bulk, 1 connection',
    metric: 'MBps',
    higherIsBetter: true,
    cpuUnit: 's/GB',
  },
  {
    id: 'tcp8',
    label: 'bulk, 8 connections (iperf3 -P8), MB/s',
    short: 'bulk, 8 connections',
    metric: 'MBps',
    higherIsBetter: true,
    cpuUnit: 's/GB',
  },
  {
    id: 'c1',
    label: 'pgbench -S, 1 client, TPS',
    short: 'pgbench -S, 1 client',
    metric: 'tps',
    higherIsBetter: true,
    cpuUnit: 'µs/tx',
  },
  {
    id: 'c16',
    label: 'pgbench -S, 16 clients, TPS',
    short: 'pgbench -S, 16 clients',
    metric: 'tps',
    higherIsBetter: true,
    cpuUnit: 'µs/tx',
  },
  {
    id: 'C4',
    label: 'pgbench -S -C, 4 clients (new connection per tx), TPS',
    short: 'pgbench -S -C, 4 clients',
    metric: 'tps',
    higherIsBetter: true,
    cpuUnit: 'ms/connection',
  },
  {
    id: 'ci',
    label: 'CI scenario (migration + queries), wall s',
    short: 'CI scenario',
    metric: 'wall_s',
    higherIsBetter: false,
    cpuUnit: 's/run',
  },
];

type Column = { label: string; path: (test: string) => string | undefined };
const col = (label: string, path: string): Column => ({ label, path: () => path });

/** Columns of the PostgreSQL table (ciport: the `postgres` target) and of the raw-tcp table. */
const PG_COLUMNS = [
  col('direct', 'direct'),
  col('ssh -L', 'ssh'),
  col('stunnel', 'stunnel'),
  col('haproxy (no TLS)', 'haproxy'),
  col('pgbouncer (session pool)', 'pgbouncer'),
  col('ciport', 'ciport'),
  col('ciport via agent', 'ciport-agent'),
];
const TCP_COLUMNS = [
  col('direct', 'direct'),
  col('ssh -L', 'ssh'),
  col('stunnel', 'stunnel'),
  col('haproxy (no TLS)', 'haproxy'),
  col('bare node:tls relay', 'nodetls'),
  col('ciport', 'ciport-tcp'),
  col('ciport via agent', 'ciport-agent-tcp'),
];

/** The report of one run from its raw file: the '#' header lines, then the tables. */
export function renderTable(raw: string): string {
  const rows = parseTsv(raw);
  const header = raw
    .split('\n')
    .filter((l) => l.startsWith('# ') && !l.startsWith('# round'))
    .map((l) => l.slice(2));
  const perRound = raw
    .split('\n')
    .map((l) => /^# round (\d+) load average (\S+)/.exec(l))
    .filter((m) => m !== null)
    .map((m) => `r${m[1]} ${m[2]}`);
  if (perRound.length) header.push(`load average (1 min) at the start of each round: ${perRound.join(', ')}`);
  const run = new Set(rows.map((r) => r.test));
  const pick = (ids: string[]) => TESTS.filter((t) => ids.includes(t.id) && run.has(t.id));
  const pgTests = pick(['c1', 'c16', 'C4', 'ci']);
  const tcpTests = pick(['tcp1', 'tcp8', 'c1', 'c16', 'C4']);
  const rounds = new Set(rows.map((r) => r.round)).size;
  const notDirect = (cols: Column[]) => cols.filter((c) => c.label !== 'direct');
  const section = (title: string, tests: TestDef[], cols: Column[]) => {
    const figures = ratioTable(rows, tests, cols);
    if (!figures) return [];
    const cpu = cpuTable(rows, tests, notDirect(cols));
    const spread = spreadTable(rows, tests, notDirect(cols));
    return [title, '', figures, '', ...(cpu ? [cpu, ''] : []), ...(spread ? [spread, ''] : [])];
  };
  return [
    ...header,
    `figures: median over ${rounds} interleaved round(s), path order rotated per round; (ratio) = median of the per-round ratios to direct (CI scenario: direct time ÷ path time, so higher is better everywhere)`,
    '',
    ...section(
      'PostgreSQL (ciport: `postgres` target, injected credentials, query audit on, i.e. the defaults):',
      pgTests,
      PG_COLUMNS,
    ),
    ...section(
      'Raw `tcp` target (no protocol awareness; iperf3 to an iperf3 server, pgbench to PostgreSQL):',
      tcpTests,
      TCP_COLUMNS,
    ),
    "proxy CPU: utime+stime (+ reaped children) of all the proxy's processes during the test, per unit of work; ssh -L = ssh + its sshd, stunnel = client + server, bare node:tls relay = its two node processes (pipe() both ways, the runtime's ceiling for a TLS tunnel), ciport = gateway + `ciport open` + agent",
  ].join('\n');
}
