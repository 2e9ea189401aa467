// Processes the peer table starts, and the CPU time they use.
//
// Every process is started here, recorded as "PID STARTTIME NAME<TAB>EXE" (STARTTIME = field 22
// of /proc/PID/stat, so a reused PID is never mistaken for ours; EXE = its /proc/PID/exe) and
// stopped only through that record: never by name. A record is trusted only when it is a regular
// file owned by us that nobody else can write, and a recorded process is signalled only while
// it still has the recorded start time, runs as our uid and runs the recorded executable (the
// start time alone is no proof: anyone can read it from /proc/PID/stat). CPU time is read from /proc/PID/stat (utime + stime + cutime + cstime)
// over each proxy's whole process tree, before and after each test.
import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime + cutime + cstime, in clock ticks. */
  ticks: number;
  /** Start time since boot, in clock ticks (identifies the process across PID reuse). */
  start: number;
}

/**
 * Parse the text of /proc/PID/stat. The command (field 2) is in parentheses and may itself
 * contain spaces and parentheses, so the fields are split after the last ')'.
 */
export function parseStat(text: string): ProcStat | undefined {
  const open = text.indexOf(' (');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open));
  // f[0] is field 3 (state): field N is f[N - 3].
  const f = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const n = (field: number) => Number(f[field - 3]);
  const stat = {
    pid,
    ppid: n(4),
    ticks: n(14) + n(15) + n(16) + n(17),
    start: n(22),
  };
  return Object.values(stat).every(Number.isFinite) ? stat : undefined;
}

/** Every process on the machine, by PID. */
export function snapshot(): Map<number, ProcStat> {
  const all = new Map<number, ProcStat>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = parseStat(readFileSync(`/proc/${name}/stat`, 'utf8'));
      if (s) all.set(s.pid, s);
    } catch {
      // exited while we were reading
    }
  }
  return all;
}

/**
 * CPU ticks of the process trees rooted at `roots`: each root and every live descendant, each
 * counted with its reaped children (cutime/cstime), so a per-connection child that exited
 * between two samples is still counted once its parent has waited for it.
 */
export function treeTicks(all: ReadonlyMap<number, ProcStat>, roots: readonly number[]): number {
  const members = new Set(roots.filter((pid) => all.has(pid)));
  for (let grew = true; grew; ) {
    grew = false;
    for (const s of all.values()) {
      if (!members.has(s.pid) && members.has(s.ppid)) {
        members.add(s.pid);
        grew = true;
      }
    }
  }
  let sum = 0;
  for (const pid of members) sum += all.get(pid)!.ticks;
  return sum;
}

let clockTicks: number | undefined;
/** Clock ticks per second (`getconf CLK_TCK`, 100 on Linux). */
export function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU seconds used so far by the trees rooted at `roots`. */
export function cpuSeconds(roots: readonly number[]): number {
  return roots.length === 0 ? 0 : treeTicks(snapshot(), roots) / ticksPerSecond();
}

/** The start time of PID (field 22 of its stat), or undefined when there is no such process. */
export function startTime(pid: number): number | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.start;
  } catch {
    return undefined;
  }
}

/** Our uid (-1 where there is none, so nothing is ever "ours"). */
export function myUid(): number {
  return process.getuid?.() ?? -1;
}

/**
 * Whether we may stop processes or remove directories of `uid` that a run recorded: our own, or
 * any when we are root (a run as root starts PostgreSQL and pgbouncer as the `postgres` user).
 */
export function mayActFor(uid: number): boolean {
  return uid === myUid() || myUid() === 0;
}

/**
 * Why the directory at `path` is not ours to trust, or undefined when it is: a real directory
 * (not a symlink), owned by our uid, that neither group nor others can write.
 */
export function untrustedDir(path: string, owner = myUid()): string | undefined {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return 'gone';
  }
  if (st.isSymbolicLink()) return 'a symlink';
  if (!st.isDirectory()) return 'not a directory';
  if (st.uid !== owner || !mayActFor(owner)) return `owned by uid ${st.uid}`;
  if (st.mode & 0o022) return `writable by others (mode ${(st.mode & 0o777).toString(8)})`;
  return undefined;
}

/**
 * The text of a record file we wrote ourselves, or undefined when there is none. Throws when
 * the file is not to be trusted: not a regular file (a symlink is not followed), not owned by
 * our uid, or writable by group or others. Checked on the open descriptor (no check-then-read race).
 */
export function readTrusted(file: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`${file}: not trusted (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${file}: not trusted (not a regular file)`);
    if (st.uid !== myUid()) throw new Error(`${file}: not trusted (owned by uid ${st.uid})`);
    if (st.mode & 0o022) throw new Error(`${file}: not trusted (writable by others)`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** The executable PID runs (its /proc/PID/exe), or undefined when it cannot be read. */
export function exeOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
  } catch {
    return undefined;
  }
}

/** Real and effective uid of PID (from /proc/PID/status), or undefined. */
function uidsOf(pid: number): [number, number] | undefined {
  try {
    const m = /^Uid:\s+(\d+)\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? [Number(m[1]), Number(m[2])] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether PID is still the process a run recorded: same start time, real and effective uid the
 * recorded one (ours, or any recorded uid when we are root: mayActFor), and running the recorded
 * executable (/proc/PID/exe, or argv[0] of its cmdline).
 */
export function isRecorded(pid: number, start: number, exe: string, uid = myUid()): boolean {
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid || !exe.startsWith('/')) return false;
  if (!mayActFor(uid) || startTime(pid) !== start) return false;
  const uids = uidsOf(pid);
  if (!uids || uids[0] !== uid || uids[1] !== uid) return false;
  if (exeOf(pid) === exe) return true;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] === exe;
  } catch {
    return false;
  }
}

interface Started {
  name: string;
  pid: number;
  start: number;
  proc: ChildProcess;
}

/** The processes one run started, recorded in `recordFile`, stopped in reverse order by PID. */
export class Processes {
  private readonly started: Started[] = [];

  constructor(private readonly recordFile: string) {}

  spawn(name: string, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const proc = spawn(command, args, { stdio: ['ignore', 'ignore', 'ignore'], ...options });
    if (proc.pid === undefined) {
      // spawn failed (e.g. ENOENT): the 'error' event says why
      proc.once('error', () => {});
      throw new Error(`could not start ${name} (${command})`);
    }
    const start = startTime(proc.pid);
    if (start === undefined) throw new Error(`${name} (${command}) exited at once`);
    this.started.push({ name, pid: proc.pid, start, proc });
    this.record(proc.pid, start, name);
    return proc;
  }

  /** Whether the recorded process is still the one we started (and not a zombie). */
  alive(pid: number): boolean {
    const s = this.started.find((p) => p.pid === pid);
    if (!s || startTime(pid) !== s.start) return false;
    try {
      return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  }

  /** Stop one process by its recorded PID: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(pid: number, graceMs = 5000): Promise<void> {
    const i = this.started.findIndex((p) => p.pid === pid);
    if (i < 0) return;
    const [s] = this.started.splice(i, 1);
    if (!s || s.proc.exitCode !== null || s.proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => s.proc.once('exit', () => resolve()));
    // 'close': its piped output has been read to the end too (it may be copied to our stderr).
    const closed = new Promise<void>((resolve) => s.proc.once('close', () => resolve()));
    if (startTime(s.pid) !== s.start) return;
    s.proc.kill('SIGTERM');
    const done = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!done && startTime(s.pid) === s.start) {
      s.proc.kill('SIGKILL');
      await Promise.race([exited, sleep(2000)]);
    }
    await Promise.race([closed, sleep(1000)]);
  }

  /** Stop everything this run started, newest first. */
  async stopAll(): Promise<void> {
    for (const s of [...this.started].reverse()) await this.stop(s.pid);
  }

  /** Record a process this run did not spawn itself but owns (e.g. a server's postmaster). */
  adopt(name: string, pid: number): void {
    const start = startTime(pid);
    if (start !== undefined) this.record(pid, start, name);
  }

  /** One line of the record (created private: only a file nobody else can write is trusted later). */
  private record(pid: number, start: number, name: string): void {
    // spawn() returns once the child has exec'd, so /proc/PID/exe is the program it runs.
    const exe = exeOf(pid) ?? '';
    const uid = uidsOf(pid)?.[1] ?? myUid();
    appendFileSync(this.recordFile, `${pid} ${start} ${name.replace(/[\t\n]/g, ' ')}\t${exe}\t${uid}\n`, {
      mode: 0o600,
    });
  }

  pids(): Array<{ name: string; pid: number }> {
    return this.started.map(({ name, pid }) => ({ name, pid }));
  }
}

/**
 * Stop what an earlier run recorded in `recordFile` and did not stop (it was killed before its
 * cleanup ran): each recorded PID that is still the recorded process (isRecorded: start time,
 * our uid, recorded executable) gets SIGTERM, then SIGKILL after 10 s if it still is. A record
 * that is not ours (readTrusted) throws; a line without an executable is never acted on.
 * Returns the names of the processes signalled.
 */
export async function stopRecorded(recordFile: string): Promise<string[]> {
  const stopped: string[] = [];
  const text = readTrusted(recordFile) ?? '';
  const lines = text.trim().split('\n').filter(Boolean).reverse();
  for (const line of lines) {
    const [head, exe, uidText] = line.split('\t');
    if (head === undefined || exe === undefined) continue;
    const [pid, start, ...name] = head.split(' ');
    const p = Number(pid);
    const s = Number(start);
    // Records of older runs have no uid column: ours.
    const uid = uidText === undefined ? myUid() : Number(uidText);
    if (!Number.isInteger(uid)) continue;
    const still = () => isRecorded(p, s, exe, uid);
    if (!still()) continue;
    process.kill(p, 'SIGTERM');
    for (let i = 0; i < 100 && still(); i++) await sleep(100);
    if (still()) process.kill(p, 'SIGKILL');
    stopped.push(`${name.join(' ')} (pid ${p})`);
  }
  return stopped;
}

/** SIGTERM `child` and wait (≤ 5 s, then SIGKILL) until it has exited, so its last lines come first. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const closed = new Promise<void>((done) => child.once('close', () => done()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
  await Promise.race([closed, sleep(1000)]); // its piped output read to the end
}

/**
 * The throwaway PostgreSQL (test/fixtures/pg-server.ts) keeps its data directory under $TMPDIR
 * and, when we are root, runs as the `postgres` OS user, which must be able to reach it. Refuse
 * up front, with the reason, when a directory on the way is closed to others (a private TMPDIR).
 */
export function assertPostgresCanReachTmpdir(): void {
  if (process.getuid?.() !== 0) return;
  let dir = realpathSync(tmpdir());
  for (;;) {
    if ((statSync(dir).mode & 0o001) === 0)
      throw new Error(
        `the throwaway PostgreSQL runs as the postgres OS user, which cannot enter ${dir} (mode ${(statSync(dir).mode & 0o777).toString(8)}); use a TMPDIR it can reach (TMPDIR=/tmp, or chmod o+x ${dir})`,
      );
    const up = dirname(dir);
    if (up === dir) return;
    dir = up;
  }
}
