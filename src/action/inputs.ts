// The action's inputs (action.yml `inputs:`), as the runner passes them: INPUT_<NAME>, the name
// upper-cased with spaces turned into `_`. Targets are checked here, before anything runs, so a
// name carrying a newline, `=` or a leading `-` never reaches the client's command line.
import { parseTargetSpecs } from '../client/env.js';
import { parseDuration } from '../config/duration.js';
import { UsageError } from '../errors/index.js';

/** Every input action.yml declares (a test keeps the two in step). */
export const INPUT_NAMES = ['gateway', 'targets', 'audience', 'ca', 'ttl'] as const;
export type InputName = (typeof INPUT_NAMES)[number];

export interface ActionInputs {
  /** Empty: the client reads CIPORT_GATEWAY from the job's environment. */
  gateway: string | undefined;
  /** `NAME` or `NAME:LOCALPORT`; none: every target policy grants. */
  targets: string[];
  audience: string | undefined;
  /** PEM text or a path; undefined: system CAs (or the job's CIPORT_CA_FILE). */
  ca: string | undefined;
  ttl: string | undefined;
}

export function input(env: NodeJS.ProcessEnv, name: InputName): string | undefined {
  const value = env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`]?.trim();
  return value ? value : undefined;
}

export function readInputs(env: NodeJS.ProcessEnv): ActionInputs {
  const targets = (input(env, 'targets') ?? '').split(/[\s,]+/).filter(Boolean);
  parseTargetSpecs(targets);
  const gateway = input(env, 'gateway');
  if (!gateway && !env.CIPORT_GATEWAY) {
    throw new UsageError('input "gateway" is empty and CIPORT_GATEWAY is not set: name the gateway URL');
  }
  const ttl = input(env, 'ttl');
  if (ttl !== undefined && parseDuration(ttl) === undefined) {
    throw new UsageError(`input "ttl": "${ttl}" is not a duration such as 30s, 15m or 2h`);
  }
  return { gateway, targets, audience: input(env, 'audience'), ca: input(env, 'ca'), ttl };
}

/** The job's environment minus the action's inputs: what the client is started with. */
export function withoutInputs(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('INPUT_')));
}
