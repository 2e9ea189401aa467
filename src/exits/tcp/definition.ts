// protocol tcp: dial the address, relay raw bytes; nothing injected, nothing parsed.
import type { TargetOf } from '../../config/targets/index.js';
import type { DialExit, ExitDefinition } from '../contract.js';
import { dialTcp } from './exit.js';

/** A raw exit to `target.address` (also what a protocol without injection falls back to). */
export function rawExit(target: TargetOf<'tcp' | 'mysql' | 'ssh'>): DialExit {
  return {
    mode: 'dial',
    target,
    dial: (options) => dialTcp(target.address, options),
    close() {},
  };
}

export const tcpExit: ExitDefinition<'tcp'> = {
  protocol: 'tcp',
  build: (target) => rawExit(target),
};
