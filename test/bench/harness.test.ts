// The peer table's pure parts (bench/summary.ts, bench/proc.ts): /proc/PID/stat parsing, the
// CPU of a process tree, the rotation of paths, medians of per-round ratios, the raw TSV, and
// stopping what a run started by its recorded PID.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  Processes,
  type ProcStat,
  parseStat,
  snapshot,
  startTime,
  stopRecorded,
  treeTicks,
} from '../../bench/proc.js';
import {
  cell,
  markdown,
  parseTsv,
  type RawRow,
  renderTable,
  roundOrder,
  TESTS,
  toTsv,
} from '../../bench/summary.js';

const tps = TESTS.find((t) => t.id === 'c1')!;
const wall = TESTS.find((t) => t.id === 'ci')!;

describe('parseStat', () => {
  it('reads ppid, utime+stime+cutime+cstime and starttime after the last parenthesis', () => {
    // fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    //         utime stime cutime cstime priority nice threads itrealvalue starttime …
    const line =
      '4242 (we (ird) name) S 17 4242 4242 0 -1 4194304 10 0 0 0 120 30 7 3 20 0 1 0 98765 1000 50';
    expect(parseStat(line)).toEqual({ pid: 4242, ppid: 17, ticks: 160, start: 98765 });
  });

  it('returns undefined for text that is not a stat line', () => {
    expect(parseStat('')).toBeUndefined();
    expect(parseStat('12 (x) S')).toBeUndefined();
  });

  it('parses this process from /proc', () => {
    const me = snapshot().get(process.pid);
    expect(me?.ppid).toBe(process.ppid);
    expect(me?.start).toBeGreaterThan(0);
  });
});

describe('treeTicks', () => {
  const all = new Map<number, ProcStat>(
    [
      { pid: 1, ppid: 0, ticks: 1000, start: 1 },
      { pid: 10, ppid: 1, ticks: 5, start: 2 }, // root of the proxy
      { pid: 11, ppid: 10, ticks: 7, start: 3 }, // per-connection child
      { pid: 12, ppid: 11, ticks: 11, start: 4 }, // grandchild
      { pid: 20, ppid: 1, ticks: 100, start: 5 }, // unrelated
      { pid: 30, ppid: 1, ticks: 13, start: 6 }, // second root
    ].map((s) => [s.pid, s]),
  );

  it('sums each root with all its descendants, each once', () => {
    expect(treeTicks(all, [10])).toBe(23);
    expect(treeTicks(all, [10, 30])).toBe(36);
    expect(treeTicks(all, [10, 11])).toBe(23);
  });

  it('counts nothing for no roots or roots that are gone', () => {
    expect(treeTicks(all, [])).toBe(0);
    expect(treeTicks(all, [99])).toBe(0);
  });
});

describe('roundOrder', () => {
  it('rotates the first path by one each round', () => {
    const p = ['direct', 'ssh', 'ciport'];
    expect(roundOrder(p, 1)).toEqual(['direct', 'ssh', 'ciport']);
    expect(roundOrder(p, 2)).toEqual(['ssh', 'ciport', 'direct']);
    expect(roundOrder(p, 3)).toEqual(['ciport', 'direct', 'ssh']);
    expect(roundOrder(p, 4)).toEqual(p);
  });
});

describe('cell', () => {
  const row = (round: number, path: string, value: number, test = 'c1', metric = 'tps'): RawRow => ({
    round,
    test,
    path,
    metric,
    value,
  });

  it('takes the median of per-round ratios, not the ratio of medians', () => {
    const rows = [
      row(1, 'direct', 100),
      row(1, 'port', 50),
      row(2, 'direct', 1000),
      row(2, 'port', 100),
      row(3, 'direct', 200),
      row(3, 'port', 160),
      row(1, 'port', 40, 'c1', 'cpu'),
      row(2, 'port', 60, 'c1', 'cpu'),
      row(3, 'port', 50, 'c1', 'cpu'),
    ];
    const c = cell(rows, tps, 'port')!;
    // per-round ratios 0.5, 0.1, 0.8 → median 0.5
    expect(c.ratio).toBe(0.5);
    expect(c.value).toBe(100);
    expect(c.cpu).toBe(50);
    expect(c.rounds).toBe(3);
    expect(c.spread).toBeCloseTo((0.8 - 0.1) / 0.5);
    const skew = [
      row(1, 'direct', 10),
      row(1, 'port', 9),
      row(2, 'direct', 1000),
      row(2, 'port', 100),
      row(3, 'direct', 20),
      row(3, 'port', 18),
    ];
    // per-round 0.9, 0.1, 0.9 → 0.9 (the mean would be 0.63)
    expect(cell(skew, tps, 'port')!.ratio).toBeCloseTo(0.9);
    const skew2 = [
      row(1, 'direct', 10),
      row(1, 'port', 5),
      row(2, 'direct', 30),
      row(2, 'port', 3),
      row(3, 'direct', 20),
      row(3, 'port', 18),
    ];
    // per-round 0.5, 0.1, 0.9 → 0.5; ratio of medians = 5 / 20 = 0.25
    expect(cell(skew2, tps, 'port')!.ratio).toBeCloseTo(0.5);
  });

  it('inverts the ratio when less is better (wall time), and skips rounds without direct or with failures', () => {
    const rows = [
      row(1, 'direct', 2, 'ci', 'wall_s'),
      row(1, 'port', 4, 'ci', 'wall_s'),
      row(2, 'port', 1, 'ci', 'wall_s'), // no direct in round 2
      row(3, 'direct', 3, 'ci', 'wall_s'),
      row(3, 'port', Number.NaN, 'ci', 'wall_s'), // failed
    ];
    const c = cell(rows, wall, 'port')!;
    expect(c.ratio).toBe(0.5);
    expect(c.rounds).toBe(2);
    expect(Number.isNaN(c.cpu)).toBe(true);
    expect(cell(rows, wall, 'nowhere')).toBeUndefined();
  });
});

describe('raw TSV and tables', () => {
  const rows: RawRow[] = [
    { round: 1, test: 'c1', path: 'direct', metric: 'tps', value: 1000 },
    { round: 1, test: 'c1', path: 'ciport', metric: 'tps', value: 250 },
    { round: 1, test: 'c1', path: 'ciport', metric: 'cpu', value: 123.4 },
    { round: 1, test: 'tcp1', path: 'direct', metric: 'MBps', value: 2000 },
    { round: 1, test: 'tcp1', path: 'ciport-tcp', metric: 'MBps', value: 100 },
  ];

  it('round-trips through the TSV, skipping comment lines', () => {
    const text = `# header\n# round\ttest\tpath\tmetric\tvalue\n${toTsv(rows)}# round 2 load average 1 2 3\n`;
    expect(parseTsv(text)).toEqual(rows);
  });

  it('renders the header lines and ratio and CPU tables from a raw file', () => {
    const out = renderTable(`# ciport peer table test\n# machine: here\n${toTsv(rows)}`);
    expect(out.split('\n').slice(0, 2)).toEqual(['ciport peer table test', 'machine: here']);
    expect(out).toMatch(/\| pgbench -S, 1 client, TPS +\| +1000 \| +250 \(0\.25x\) \|\n/);
    expect(out).toMatch(/\| pgbench -S, 1 client, µs\/tx +\| +123 \|\n/);
    expect(out).toMatch(/\| bulk, 1 connection \(iperf3 -P1\), MB\/s +\| +2000 \| +100 \(0\.05x\) \|\n/);
    expect(out).not.toContain('16 clients'); // not run: no row
    expect(out).not.toMatch(/\| +ssh -L +\|/); // not run: no column
  });

  it('writes a markdown rule under the header row', () => {
    expect(
      markdown([
        ['', 'a'],
        ['x', '1'],
      ]).split('\n'),
    ).toEqual(['|     |   a |', '|-----|----:|', '| x   |   1 |']);
  });
});

describe('Processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-bench-proc-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('records what it starts and stops it by PID', async () => {
    const procs = new Processes(join(dir, 'pids'));
    const a = procs.spawn('sleeper', 'sleep', ['30']);
    const b = procs.spawn('sleeper 2', 'sleep', ['30']);
    expect(procs.alive(a.pid!)).toBe(true);
    const record = readFileSync(join(dir, 'pids'), 'utf8').trim().split('\n');
    expect(record).toEqual([
      `${a.pid} ${snapshot().get(a.pid!)!.start} sleeper\t${readlinkSync(`/proc/${a.pid}/exe`)}\t${process.getuid?.()}`,
      `${b.pid} ${snapshot().get(b.pid!)!.start} sleeper 2\t${readlinkSync(`/proc/${b.pid}/exe`)}\t${process.getuid?.()}`,
    ]);
    // Private: --stop-leftovers trusts only a record nobody else can write.
    expect(statSync(join(dir, 'pids')).mode & 0o077).toBe(0);
    await procs.stop(a.pid!);
    expect(a.signalCode).toBe('SIGTERM');
    expect(procs.alive(b.pid!)).toBe(true);
    await procs.stopAll();
    expect(b.signalCode).toBe('SIGTERM');
    expect(procs.pids()).toEqual([]);
  });

  it('throws when the program does not exist', () => {
    const procs = new Processes(join(dir, 'pids2'));
    expect(() => procs.spawn('nothing', '/nonexistent/program', [])).toThrow(/could not start nothing/);
  });

  it('stops what a killed run recorded, and only processes whose start time and executable still match', async () => {
    const mine = spawn('sleep', ['30'], { stdio: 'ignore' });
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    const third = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const record = join(dir, 'leftover');
      const exe = readlinkSync(`/proc/${mine.pid}/exe`);
      writeFileSync(
        record,
        `${mine.pid} ${startTime(mine.pid!)} sleeper\t${exe}\n` +
          `${other.pid} ${startTime(other.pid!)! + 1} reused pid\t${exe}\n` +
          `${third.pid} ${startTime(third.pid!)} other program\t/usr/bin/not-sleep\n` +
          `${third.pid} ${startTime(third.pid!)} no executable recorded\n` +
          '999999999 1 gone\t/bin/sleep\n',
        { mode: 0o600 },
      );
      const exited = new Promise((resolve) => mine.once('exit', (_code, signal) => resolve(signal)));
      expect(await stopRecorded(record)).toEqual([`sleeper (pid ${mine.pid})`]);
      expect(await exited).toBe('SIGTERM');
      expect(startTime(other.pid!)).toBeDefined();
      expect(startTime(third.pid!)).toBeDefined();
    } finally {
      mine.kill('SIGKILL');
      other.kill('SIGKILL');
      third.kill('SIGKILL');
    }
  });
});
