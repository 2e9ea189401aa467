// The identity layer's principal, reduced to what audit events carry.
import type { JsonObject } from '../audit/canonical.js';
import type { PrincipalSummary } from '../audit/events.js';
import type { Principal } from '../identity/principal.js';

export function principalSummary(principal: Principal | JsonObject): PrincipalSummary {
  const p = principal as unknown as Partial<Principal>;
  return {
    issuer: String(p.issuer ?? ''),
    subject: p.subject ?? '',
    project: p.project?.path ?? null,
    project_id: p.project?.id ?? null,
    ref: p.ref?.name ?? null,
    pipeline: p.pipeline_id ?? null,
    job: p.job_id ?? null,
    job_url: p.job_url ?? null,
    actor: p.actor ?? null,
    environment: p.environment?.name ?? null,
  };
}

/** The principal as stored (plain JSON). */
export function principalJson(principal: Principal): JsonObject {
  return JSON.parse(JSON.stringify(principal)) as JsonObject;
}
