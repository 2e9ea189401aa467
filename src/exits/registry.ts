// Every protocol ciport exits to, registered once: the gateway and agents build their exits here
// (docs/architecture.md, "Adding a protocol": a folder under src/exits and one line below). The
// map is keyed by the protocols of the target schema (src/config/targets/), each definition
// typed for its own member, so a protocol cannot be added to one without the other.
import type { Protocol, TargetConfig, TargetOf } from '../config/targets/index.js';
import type { Exit, ExitAdvertisement, ExitDefinition, ExitHost } from './contract.js';
import { httpExit } from './http/definition.js';
import { mysqlExit } from './mysql/definition.js';
import { postgresExit } from './postgres/definition.js';
import { redisExit } from './redis/definition.js';
import { sshExit } from './ssh/definition.js';
import { tcpExit } from './tcp/definition.js';

const DEFINITIONS: { readonly [P in Protocol]: ExitDefinition<P> } = {
  tcp: tcpExit,
  redis: redisExit,
  postgres: postgresExit,
  http: httpExit,
  mysql: mysqlExit,
  ssh: sshExit,
};

/** The definition of a protocol a peer named (an agent's advertisement), if there is one. */
export function exitDefinition(protocol: string): ExitDefinition | undefined {
  for (const definition of Object.values(DEFINITIONS))
    if (definition.protocol === protocol) return definition;
  return undefined;
}

/** The exit of one target, by its protocol's definition. */
function build<P extends Protocol>(
  protocol: P,
  target: TargetOf<P>,
  host: ExitHost,
): Exit | { skip: string } {
  return DEFINITIONS[protocol].build(target, host);
}

/**
 * The exits of `targets` for one host. A target its protocol skips is reported to `onSkip` and
 * left out; a target that fails to build (a bad secret) closes what was built and throws.
 */
export function buildExits(
  targets: Iterable<TargetConfig>,
  host: ExitHost,
  onSkip: (target: TargetConfig, why: string) => void,
): Map<string, Exit> {
  const exits = new Map<string, Exit>();
  try {
    for (const target of targets) {
      const built = build(target.protocol, target, host);
      if ('skip' in built) onSkip(target, built.skip);
      else exits.set(target.name, built);
    }
  } catch (err) {
    for (const exit of exits.values()) exit.close();
    throw err;
  }
  return exits;
}

/** What an agent advertises for a target. */
export function advertisement(target: TargetConfig): ExitAdvertisement {
  const advertise = <P extends Protocol>(protocol: P, t: TargetOf<P>) => DEFINITIONS[protocol].advertise?.(t);
  return advertise(target.protocol, target) ?? { name: target.name, protocol: target.protocol };
}
