// The ssh facts an agent advertises, checked by the gateway before it signs anything with them
// (the agent is authenticated, but its JSON is still input): principals that are login names,
// host keys that parse, bounded lists. Anything else drops the facts: the target then gets no
// certificate (CIPORT_E_SSH_CERTIFICATE_REFUSED) rather than a certificate built on garbage.
import { createHash } from 'node:crypto';
import { parsePublicKeyLine, SSH_PRINCIPAL_RE } from '../../credentials/ssh-keys.js';
import type { SshTargetInfo } from '../contract.js';

const MAX_ITEMS = 64;

function strings(value: unknown, ok: (s: string) => boolean): string[] | undefined {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_ITEMS) return undefined;
  return value.every((v) => typeof v === 'string' && v.length < 8192 && ok(v))
    ? (value as string[])
    : undefined;
}

const isKey = (line: string) => typeof parsePublicKeyLine(line) !== 'string';

export function advertisedSshInfo(value: unknown): SshTargetInfo | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const v = value as Record<string, unknown>;
  const principals = strings(v.principals, (p) => SSH_PRINCIPAL_RE.test(p));
  const hostKeys = v.host_keys === undefined ? undefined : strings(v.host_keys, isKey);
  const hostCa = typeof v.host_ca === 'string' && isKey(v.host_ca) ? v.host_ca : undefined;
  const alias =
    typeof v.host_key_alias === 'string' && /^[A-Za-z0-9_.:-]{1,253}$/.test(v.host_key_alias)
      ? v.host_key_alias
      : undefined;
  const source =
    v.source_address === undefined
      ? undefined
      : strings(v.source_address, (s) => /^[0-9A-Fa-f:.]+(\/\d{1,3})?$/.test(s));
  if (!principals || !alias || (hostKeys === undefined) === (hostCa === undefined)) return undefined;
  if (v.source_address !== undefined && !source) return undefined;
  return {
    principals,
    ...(hostKeys ? { host_keys: hostKeys } : {}),
    ...(hostCa ? { host_ca: hostCa } : {}),
    host_key_alias: alias,
    ...(source ? { source_address: source } : {}),
  };
}

/** The `ssh` member of a checked advertisement: present only for a valid ssh target. */
export function advertisedSsh(t: { protocol?: unknown; ssh?: unknown }): { ssh?: SshTargetInfo } {
  const ssh = t.protocol === 'ssh' ? advertisedSshInfo(t.ssh) : undefined;
  return ssh ? { ssh } : {};
}

const FACTS = ['principals', 'host_keys', 'host_ca', 'host_key_alias', 'source_address'] as const;

/** One fact, order-insensitive (a list re-ordered by the agent is the same list). */
function factText(info: SshTargetInfo | undefined, fact: (typeof FACTS)[number]): string {
  const v = info?.[fact];
  return JSON.stringify(Array.isArray(v) ? [...v].sort() : (v ?? null));
}

/**
 * The ssh facts that differ between what the gateway pinned for an agent's target and what the
 * agent advertises now (docs/agent.md, "Pinned protocol and ssh facts"); `ssh` when one side has
 * none (no valid ssh settings). Empty: the same facts.
 */
export function changedSshFacts(
  pinned: SshTargetInfo | undefined,
  advertised: SshTargetInfo | undefined,
): string[] {
  if (pinned === undefined && advertised === undefined) return [];
  if (pinned === undefined || advertised === undefined) return ['ssh'];
  return FACTS.filter((f) => factText(pinned, f) !== factText(advertised, f));
}

/** `sha256:<16 hex>` of the facts: names a pinned or advertised set in logs and audit events. */
export function sshFactsDigest(info: SshTargetInfo | undefined): string {
  const text = FACTS.map((f) => factText(info, f)).join('\n');
  return `sha256:${createHash('sha256').update(text).digest('hex').slice(0, 16)}`;
}
