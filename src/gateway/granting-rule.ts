// The rule that granted a target to a live session, as the configuration in force has it. A
// reload may remove that rule, turn it into a deny rule or take the target from it; what the
// rule narrowed for its sessions (`ssh.<target>.principals`, `grants`) is then gone too, and
// falling back to the target's defaults would widen access a reload meant to take away. Callers
// refuse instead (ssh certificates, per-session roles).
import type { GatewayConfig } from '../config/schema.js';
import type { SessionRecord } from '../store/types.js';

type Rule = GatewayConfig['rules'][number];

export interface GrantingRule {
  /** The granting rule's name as the session recorded it. */
  readonly name: string | undefined;
  /** That rule, if it is in force, allows and still allows `target`; else undefined. */
  readonly rule: Rule | undefined;
}

export function grantingRule(
  rules: readonly Rule[],
  record: Pick<SessionRecord, 'rule' | 'targetRules'>,
  target: string,
): GrantingRule {
  // The rule that granted this target; sessions stored before that was recorded: the session's.
  const name = record.targetRules?.[target] ?? record.rule ?? undefined;
  const rule = rules.find((r) => r.name === name && !r.deny);
  return { name, rule: rule?.allow.includes(target) ? rule : undefined };
}

/** Why a session's target is no longer backed by its rule (the message of the refusal). */
export function noLongerGranted(granting: GrantingRule, session: string, target: string): string {
  return `rule ${granting.name ?? '?'} that granted ${target} to session ${session} no longer does (configuration reloaded)`;
}
