import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { SignalTrap } from '../../src/client/signals.js';

describe('SignalTrap', () => {
  it('records the first signal and relays every one', async () => {
    const source = new EventEmitter();
    const trap = new SignalTrap(['SIGINT', 'SIGTERM'], source);
    const relayed: string[] = [];
    trap.relay.on('SIGTERM', () => relayed.push('SIGTERM'));
    trap.relay.on('SIGINT', () => relayed.push('SIGINT'));
    source.emit('SIGTERM');
    source.emit('SIGINT');
    expect(await trap.caught).toBe('SIGTERM');
    expect(trap.first).toBe('SIGTERM');
    expect(trap.count).toBe(2);
    expect(relayed).toEqual(['SIGTERM', 'SIGINT']);
    trap.dispose();
    expect(source.listenerCount('SIGTERM')).toBe(0);
  });

  it('during setup, one signal waits for it; a second one exits with 128 + n', async () => {
    const source = new EventEmitter();
    const trap = new SignalTrap(['SIGINT', 'SIGTERM'], source);
    const exits: number[] = [];
    const exit = ((code: number) => {
      exits.push(code);
      throw new Error('exited');
    }) as (code: number) => never;
    let finish: (v: string) => void = () => {};
    const work = new Promise<string>((resolve) => {
      finish = resolve;
    });
    const during = trap.during(work, exit);
    source.emit('SIGINT');
    expect(exits).toEqual([]);
    expect(() => source.emit('SIGINT')).toThrow('exited');
    expect(exits).toEqual([130]);
    finish('done');
    expect(await during).toBe('done');
    // After setup, signals are no longer fatal here (the command gets them).
    source.emit('SIGTERM');
    expect(exits).toEqual([130]);
    trap.dispose();
  });
});
