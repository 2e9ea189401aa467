import { describe, expect, it } from 'vitest';
import { IdleSweep, type IdleWatched } from '../../src/gateway/idle-sweep.js';

function watched(): IdleWatched & { idledCount: number } {
  return {
    metered: { in: 0, out: 0 },
    idleSeen: 0,
    idleSince: 0,
    idledCount: 0,
    idled() {
      this.idledCount++;
    },
  };
}

describe('IdleSweep', () => {
  it('ends a tunnel that carried nothing for the idle timeout, once, and stops watching it', () => {
    const sweep = new IdleSweep(60_000);
    const t = watched();
    sweep.add(t);
    const start = t.idleSince;
    sweep.sweep(start + 59_999);
    expect(t.idledCount).toBe(0);
    sweep.sweep(start + 60_000);
    expect(t.idledCount).toBe(1);
    expect(sweep.size).toBe(0);
    sweep.sweep(start + 200_000);
    expect(t.idledCount).toBe(1);
  });

  it('counts DATA either way as activity: the timeout restarts from the sweep that saw it', () => {
    const sweep = new IdleSweep(60_000);
    const up = watched();
    const down = watched();
    sweep.add(up);
    sweep.add(down);
    const start = up.idleSince;
    up.metered.in += 5;
    down.metered.out += 7;
    sweep.sweep(start + 50_000);
    sweep.sweep(start + 100_000);
    expect(up.idledCount + down.idledCount).toBe(0);
    sweep.sweep(start + 110_000);
    expect(up.idledCount).toBe(1);
    expect(down.idledCount).toBe(1);
  });

  it('forgets deleted (closed) tunnels', () => {
    const sweep = new IdleSweep(1_000);
    const t = watched();
    sweep.add(t);
    sweep.delete(t);
    sweep.sweep(t.idleSince + 10_000);
    expect(t.idledCount).toBe(0);
    expect(sweep.size).toBe(0);
  });
});
