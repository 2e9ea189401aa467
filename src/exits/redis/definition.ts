// protocol redis: the exit dials and, when the target has credentials, sends AUTH (and SELECT)
// before the host relays raw bytes (exit.ts); the local one-time-password gate is the client's.
import type { Socket } from 'node:net';
import type { ExitDefinition } from '../contract.js';
import { dialTcp } from '../tcp/exit.js';
import { connectRedisUpstream, redisInjects } from './exit.js';

export const redisExit: ExitDefinition<'redis'> = {
  protocol: 'redis',
  build(target) {
    const injects = redisInjects(target);
    return {
      mode: 'dial',
      target,
      dial: async (options) =>
        injects
          ? ((await connectRedisUpstream(target, options)) as Socket)
          : dialTcp(target.address, options),
      close() {},
    };
  },
};
