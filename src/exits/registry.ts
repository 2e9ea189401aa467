// Every protocol ciport exits to, registered once: the gateway and agents build their exits here
// (docs/architecture.md, "Adding a protocol": a folder under src/exits and one line below).
import type { TargetConfig } from '../config/schema.js';
import type { Exit, ExitAdvertisement, ExitDefinition, ExitHost } from './contract.js';
import { httpExit } from './http/definition.js';
import { mysqlExit } from './mysql/definition.js';
import { postgresExit } from './postgres/definition.js';
import { redisExit } from './redis/definition.js';
import { tcpExit } from './tcp/definition.js';

const DEFINITIONS: Readonly<Record<TargetConfig['protocol'], ExitDefinition>> = {
  tcp: tcpExit,
  redis: redisExit,
  postgres: postgresExit,
  http: httpExit,
  mysql: mysqlExit,
};

export function exitDefinition(protocol: string): ExitDefinition | undefined {
  return Object.hasOwn(DEFINITIONS, protocol) ? DEFINITIONS[protocol as TargetConfig['protocol']] : undefined;
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
      const definition = exitDefinition(target.protocol);
      if (!definition) {
        onSkip(target, `protocol ${target.protocol} has no exit`);
        continue;
      }
      const built = definition.build(target, host);
      if ('skip' in built) onSkip(target, built.skip);
      else exits.set(target.name, built);
    }
  } catch (err) {
    for (const exit of exits.values()) exit.close();
    throw err;
  }
  return exits;
}

/** What an agent advertises for a target it serves. */
export function advertisement(target: TargetConfig): ExitAdvertisement {
  return (
    exitDefinition(target.protocol)?.advertise?.(target) ?? { name: target.name, protocol: target.protocol }
  );
}
