// A target, as the gateway's `targets:` and an agent's list it: one member per protocol, chosen by
// `protocol`, each strict with only the keys its exit reads. A key of another protocol (`sslmode`
// on a redis target, `credentials.token` on a postgres one) is refused at load with its path.
// A new protocol: its file here, one entry below, its exit in src/exits/<protocol>/ (the exit
// registry's map is keyed by these protocols, so it will not compile without one).
import { z } from 'zod';
import { httpTargetSchema } from './http.js';
import { mysqlTargetSchema } from './mysql.js';
import { postgresTargetSchema } from './postgres.js';
import { redisTargetSchema } from './redis.js';
import { sshTargetSchema } from './ssh.js';
import { tcpTargetSchema } from './tcp.js';

const MEMBERS = [
  postgresTargetSchema,
  mysqlTargetSchema,
  redisTargetSchema,
  httpTargetSchema,
  tcpTargetSchema,
  sshTargetSchema,
] as const;

export type TargetConfig = z.output<(typeof MEMBERS)[number]>;
export type Protocol = TargetConfig['protocol'];
type TargetByProtocol = { [P in Protocol]: Extract<TargetConfig, { protocol: P }> };
/** The target of one protocol (or of several): what that protocol's exit is built from. */
export type TargetOf<P extends Protocol> = TargetByProtocol[P];

export const PROTOCOLS: readonly Protocol[] = MEMBERS.map((member) => member.shape.protocol.value);

export const targetSchema = z.discriminatedUnion('protocol', [...MEMBERS], {
  error: (issue) => {
    if (issue.code !== 'invalid_union') return undefined;
    const given = (issue.input as { protocol?: unknown } | undefined)?.protocol;
    const known = PROTOCOLS.join(', ');
    return given === undefined
      ? `a target needs a protocol: ${known}`
      : `unknown protocol ${JSON.stringify(given)} (known: ${known})`;
  },
});
