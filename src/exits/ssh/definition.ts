// protocol ssh: the exit is a raw relay to the host's sshd (nothing to inject: the job logs in
// with the certificate the gateway signed for its session, and sshd enforces its principals).
// What an agent advertises is what the gateway needs to sign for the target and what the job's
// ssh needs to verify the host: principals, pinned host keys or host CA, alias, source address.
import { hostKeyAlias, type SshTarget } from '../../config/targets/ssh.js';
import type { ExitDefinition, SshTargetInfo } from '../contract.js';
import { rawExit } from '../tcp/definition.js';

/** The ssh facts of a target of this process's config. */
export function sshTargetInfo(target: SshTarget): SshTargetInfo {
  return {
    principals: [...target.principals],
    ...(target.host_keys ? { host_keys: [...target.host_keys] } : {}),
    ...(target.host_ca ? { host_ca: target.host_ca } : {}),
    host_key_alias: hostKeyAlias(target),
    ...(target.source_address ? { source_address: [...target.source_address] } : {}),
  };
}

export const sshExit: ExitDefinition<'ssh'> = {
  protocol: 'ssh',
  build: (target) => rawExit(target),
  advertise: (target) => ({ name: target.name, protocol: 'ssh', ssh: sshTargetInfo(target) }),
};
