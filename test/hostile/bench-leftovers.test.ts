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
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startTime } from '../../bench/proc.js';
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
});
