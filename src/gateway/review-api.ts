// The access review over the admin API (docs/review.md): `GET /v1/review?since=&until=` returns
// the report as JSON, `POST /v1/review/attest` records a sign-off. Both behind the admin token;
// the report itself is built by src/review, the same code `ciport review --config` runs offline.
import { jsonlLine } from '../audit/export.js';
import { CiportError } from '../errors/index.js';
import {
  attestReview,
  buildReview,
  parseReviewPeriod,
  type Reviewer,
  reviewComment,
} from '../review/index.js';
import type { ApiDeps } from './api.js';
import { requireAdmin } from './api.js';
import { type Req, type Res, readJsonBody, sendJson } from './http.js';

const PARAMS = { since: 'since', until: 'until' };

/**
 * Who signs off, as the API knows the caller. Admin tokens carry no identity yet, so every
 * attestation made with one is `admin-token` / `admin`. Named admin tokens and operator sign-in
 * (issue 14) replace this one function.
 */
export function reviewerOf(_deps: Pick<ApiDeps, 'adminTokens'>, _req: Req): Reviewer {
  return { issuer: 'admin-token', subject: 'admin' };
}

export async function getReview(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  requireAdmin(deps, req);
  const query = new URL(req.url ?? '/', 'https://gateway.invalid').searchParams;
  const period = parseReviewPeriod(
    { since: query.get('since') ?? undefined, until: query.get('until') ?? undefined },
    Date.now(),
    PARAMS,
  );
  sendJson(res, 200, await buildReview(deps.store, period));
}

export async function postAttest(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  requireAdmin(deps, req);
  const body = await readJsonBody(req, deps.config.server.max_body_bytes);
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new CiportError('CIPORT_E_USAGE', 'request body must be a JSON object');
  }
  const { since, until, comment, ...rest } = body as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw new CiportError('CIPORT_E_USAGE', `unknown field(s): ${unknown.join(', ')}`);
  for (const [name, value] of Object.entries({ since, until, comment })) {
    if (value !== undefined && value !== null && typeof value !== 'string') {
      throw new CiportError('CIPORT_E_USAGE', `"${name}" must be a string`);
    }
  }
  const now = Date.now();
  const period = parseReviewPeriod(
    { since: since as string | undefined, until: until as string | undefined },
    now,
    PARAMS,
  );
  const { event } = await attestReview(deps.store, period, reviewerOf(deps, req), {
    comment: reviewComment(comment as string | undefined),
    now,
  });
  deps.log.info({ seq: event.seq, review_hash: event.data.review_hash }, 'access review attested');
  // The event as `ciport audit export --format jsonl` prints it.
  sendJson(res, 201, JSON.parse(jsonlLine(event)));
}
