import { EventEmitter } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { exitCodeOf, runCommand } from '../../src/client/child.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-child-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const env = { PATH: process.env.PATH };

describe('runCommand', () => {
  it("returns the command's exit code", async () => {
    expect((await runCommand(['sh', '-c', 'exit 7'], { env, stdio: 'ignore' })).exitCode).toBe(7);
    expect((await runCommand(['true'], { env, stdio: 'ignore' })).exitCode).toBe(0);
  });

  it('returns 128 + the signal number when a signal kills it', async () => {
    const r = await runCommand(['sh', '-c', 'kill -KILL $$'], { env, stdio: 'ignore' });
    expect(r.signal).toBe('SIGKILL');
    expect(r.exitCode).toBe(137);
    expect(exitCodeOf(null, 'SIGTERM')).toBe(143);
  });

  it('127 for a command that does not exist', async () => {
    const r = await runCommand(['/nonexistent/ciport-test-cmd'], { env, stdio: 'ignore' });
    expect(r.exitCode).toBe(127);
    expect(r.spawnError).toMatch(/command not found/);
  });

  it('passes exactly the given environment', async () => {
    const out = join(dir, 'env.txt');
    await runCommand(['sh', '-c', 'env > "$OUT"'], {
      env: { ...env, OUT: out, CIPORT_X: 'y' },
      stdio: 'ignore',
    });
    const lines = readFileSync(out, 'utf8').split('\n');
    expect(lines).toContain('CIPORT_X=y');
    expect(lines.some((l) => l.startsWith('CIPORT_ID_TOKEN='))).toBe(false);
  });

  it.each(['SIGTERM', 'SIGINT'] as const)(
    'forwards %s to the command, which decides its exit',
    async (sig) => {
      const signals = new EventEmitter();
      const ready = join(dir, `ready-${sig}`);
      const got = join(dir, `got-${sig}`);
      const script = `trap 'echo ${sig} > "$GOT"; exit 42' ${sig.slice(3)}; touch "$READY"; while :; do sleep 0.05; done`;
      const running = runCommand(['sh', '-c', script], {
        env: { ...env, READY: ready, GOT: got },
        signalSource: signals,
        stdio: 'ignore',
      });
      await waitFor(() => existsSync(ready), 5_000, `${ready} to exist`);
      signals.emit(sig);
      const r = await running;
      expect(r.exitCode).toBe(42);
      expect(readFileSync(got, 'utf8').trim()).toBe(sig);
      expect(signals.listenerCount(sig)).toBe(0);
    },
  );

  it('a forwarded signal the command does not handle kills it: 128 + n', async () => {
    const signals = new EventEmitter();
    const ready = join(dir, 'ready-kill');
    const running = runCommand(['sh', '-c', 'touch "$READY"; exec sleep 30'], {
      env: { ...env, READY: ready },
      signalSource: signals,
      stdio: 'ignore',
    });
    await waitFor(() => existsSync(ready), 5_000, `${ready} to exist`);
    await sleep(50);
    signals.emit('SIGTERM');
    expect((await running).exitCode).toBe(143);
  });
});
