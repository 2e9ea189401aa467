// Hostile review (issue 11), bench harness `npm run bench -- --stop-leftovers`:
// stopLeftovers() trusts whatever it finds under $TMPDIR/ciport-bench-table-*/ — a directory any
// local user can create in a world-writable /tmp. It never checks who owns the directory or
// the `pids` file, and the "start time" guard is no guard against forgery: any user reads a
// victim's start time from /proc/PID/stat. So a forged record makes the bench (often run as
// root or as the CI user) SIGTERM and then SIGKILL a process it never started. Its
// `leftover-dirs` list is checked with a string prefix only, so `…/ciport-pg-x/../victim`
// makes it `rm -rf` a directory outside its own.
// The test points TMPDIR at a private directory so it never touches real leftovers.
import { spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Processes, startTime } from '../../bench/proc.js';
import { stopLeftovers } from '../../bench/table.js';

const realTmp = tmpdir();
const root = mkdtempSync(join(realTmp, 'ciport-revattack-'));
const savedTmp = process.env.TMPDIR;

describe('bench --stop-leftovers with forged records (hostile review)', () => {
  beforeEach(() => {
    process.env.TMPDIR = root;
  });
  afterEach(() => {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('does not signal a process the bench did not start (forged pids file)', async () => {
    // The victim: some other process on the machine (here a sleep this test started).
    const victim = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      const pid = victim.pid as number;
      // What an attacker reads and writes, all without privileges:
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
      expect(start).toBe(startTime(pid));
      const forged = join(root, 'ciport-bench-table-forged');
      mkdirSync(forged);
      writeFileSync(join(forged, 'pids'), `${pid} ${start} postgres\n`);
      const exited = new Promise<string | null>((resolve) => victim.once('exit', (_c, sig) => resolve(sig)));
      const out = await stopLeftovers();
      const signalled = await Promise.race([exited, new Promise((r) => setTimeout(() => r('alive'), 300))]);
      expect(signalled, `stopLeftovers said: ${out.join('; ')}`).toBe('alive');
    } finally {
      victim.kill('SIGKILL');
    }
  }, 20_000);

  it('does not remove a directory outside its own (leftover-dirs with ..)', async () => {
    const victimDir = join(root, 'someone-elses-data');
    mkdirSync(victimDir);
    writeFileSync(join(victimDir, 'keep.txt'), 'precious');
    mkdirSync(join(root, 'ciport-pg-x'));
    const forged = join(root, 'ciport-bench-table-forged2');
    mkdirSync(forged);
    writeFileSync(join(forged, 'leftover-dirs'), `${join(root, 'ciport-pg-x')}/../someone-elses-data\n`);
    await stopLeftovers();
    expect(existsSync(join(victimDir, 'keep.txt'))).toBe(true);
  });
  // A record that would be acted on if it were found in a directory of ours: the victim's PID,
  // start time and real executable, and a real ciport-pg-* directory.
  const plant = (dir: string, pid: number, pgDir: string) => {
    writeFileSync(
      join(dir, 'pids'),
      `${pid} ${startTime(pid)} postgres\t${readlinkSync(`/proc/${pid}/exe`)}\n`,
      {
        mode: 0o600,
      },
    );
    writeFileSync(join(dir, 'leftover-dirs'), `${pgDir}\n`, { mode: 0o600 });
  };
  const aliveAfter = async (victim: ReturnType<typeof spawn>) => {
    const exited = new Promise<string | null>((resolve) => victim.once('exit', (_c, sig) => resolve(sig)));
    const out = await stopLeftovers();
    const state = await Promise.race([exited, new Promise((r) => setTimeout(() => r('alive'), 300))]);
    return { state, out };
  };

  it('does not follow a symlinked record directory', async () => {
    const victim = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      // Elsewhere (here a private directory, so only the symlink itself is wrong).
      const elsewhere = mkdtempSync(join(root, 'elsewhere-'));
      const pgDir = mkdtempSync(join(root, 'ciport-pg-'));
      plant(elsewhere, victim.pid as number, pgDir);
      symlinkSync(elsewhere, join(root, 'ciport-bench-table-link'));
      const { state, out } = await aliveAfter(victim);
      expect(state, out.join('; ')).toBe('alive');
      expect(existsSync(pgDir)).toBe(true);
      expect(existsSync(join(elsewhere, 'pids'))).toBe(true);
      expect(out.join('; ')).toMatch(/ciport-bench-table-link: not ours to trust \(a symlink\)/);
    } finally {
      victim.kill('SIGKILL');
      rmSync(join(root, 'ciport-bench-table-link'), { force: true });
    }
  }, 20_000);

  it('does not trust a record directory or record file others can write', async () => {
    const victim = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      const open = mkdtempSync(join(root, 'ciport-bench-table-'));
      const pgDir = mkdtempSync(join(root, 'ciport-pg-'));
      plant(open, victim.pid as number, pgDir);
      chmodSync(open, 0o777);
      const loose = mkdtempSync(join(root, 'ciport-bench-table-'));
      plant(loose, victim.pid as number, pgDir);
      chmodSync(join(loose, 'pids'), 0o666);
      const { state, out } = await aliveAfter(victim);
      expect(state, out.join('; ')).toBe('alive');
      expect(existsSync(pgDir)).toBe(true);
      expect(existsSync(join(open, 'pids'))).toBe(true);
      expect(existsSync(join(loose, 'pids'))).toBe(true);
    } finally {
      victim.kill('SIGKILL');
    }
  }, 20_000);

  it('does not remove through a symlinked leftover directory', async () => {
    const victimDir = mkdtempSync(join(root, 'victim-'));
    writeFileSync(join(victimDir, 'keep.txt'), 'precious');
    symlinkSync(victimDir, join(root, 'ciport-pg-link'));
    const run = mkdtempSync(join(root, 'ciport-bench-table-'));
    writeFileSync(join(run, 'leftover-dirs'), `${join(root, 'ciport-pg-link')}\n`, { mode: 0o600 });
    await stopLeftovers();
    expect(existsSync(join(victimDir, 'keep.txt'))).toBe(true);
  });

  /**
   * What a real run of ours, killed, leaves: a record with a `postgres` child (a sleep) and a
   * PostgreSQL directory, both owned by `owner` when given. Then --stop-leftovers must stop the
   * child and remove the directory and the record.
   */
  async function expectKilledRunCleaned(owner?: { uid: number; gid: number }): Promise<void> {
    const run = mkdtempSync(join(root, 'ciport-bench-table-'));
    const procs = new Processes(join(run, 'pids'));
    const child = procs.spawn('postgres', 'sleep', ['60'], owner);
    const pgDir = mkdtempSync(join(root, 'ciport-pg-'));
    if (owner) chownSync(pgDir, owner.uid, owner.gid);
    writeFileSync(join(run, 'leftover-dirs'), `${pgDir}${owner ? `\t${owner.uid}` : ''}\n`, { mode: 0o600 });
    try {
      const exited = new Promise<string | null>((resolve) => child.once('exit', (_c, sig) => resolve(sig)));
      const out = await stopLeftovers();
      expect(out).toContain(`stopped postgres (pid ${child.pid})`);
      expect(await exited).toBe('SIGTERM');
      expect(existsSync(pgDir)).toBe(false);
      expect(existsSync(run)).toBe(false);
    } finally {
      child.kill('SIGKILL');
    }
  }

  it('still stops and removes what a real killed run of ours left', () => expectKilledRunCleaned(), 20_000);

  it.runIf(process.getuid?.() === 0)(
    "as root, also stops what it started as another user (PostgreSQL, pgbouncer) and removes that user's directory",
    () => expectKilledRunCleaned({ uid: 65534, gid: 65534 }),
    20_000,
  );

  it('keeps the record when something it names is left alone', async () => {
    const run = mkdtempSync(join(root, 'ciport-bench-table-'));
    const notOurs = mkdtempSync(join(root, 'elsewhere-'));
    writeFileSync(join(run, 'leftover-dirs'), `${notOurs}\n`, { mode: 0o600 });
    const out = await stopLeftovers();
    expect(out.join('\n')).toMatch(/left alone/);
    expect(existsSync(notOurs)).toBe(true);
    expect(existsSync(run)).toBe(true);
    rmSync(run, { recursive: true, force: true });
  });
});
