// What the HTML and CSV renderings of a review say in words rather than as JSON.
import type { OperatorReview } from './report.js';

/**
 * A configuration's operators in one line: `ci-bot (admin), ops (approver; groups dba, sre)`;
 * `none` for an empty list, `not recorded` for an event that predates the list (`?` and `no role`
 * where an edited event lacks a name or roles).
 */
export function operatorsInWords(operators: readonly OperatorReview[] | null): string {
  if (operators === null) return 'not recorded';
  if (operators.length === 0) return 'none';
  return operators
    .map((o) => {
      const groups = o.groups?.length ? `; groups ${o.groups.join(', ')}` : '';
      return `${o.name || '?'} (${o.roles.join(', ') || 'no role'}${groups})`;
    })
    .join(', ');
}
