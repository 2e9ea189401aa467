// The access review over the admin API (docs/review.md): `GET /v1/review?since=&until=` returns
// the report as JSON, `POST /v1/review/attest` records a sign-off. Both behind the admin token;
// the report itself is built by src/review, the same code `ciport review --config` runs offline.
import { jsonlLine } from '../audit/export.js';
import { CiportError } from '../errors/index.js';
import { attestReview, buildReview, parseReviewPeriod, reviewComment, reviewerOf } from '../review/index.js';
import type { ApiDeps } from './api.js';
import { type Req, type Res, readJsonBody, sendJson } from './http.js';
import { authorizeOperator } from './operators.js';

const PARAMS = { since: 'since', until: 'until' };

export async function getReview(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  await authorizeOperator(deps, req, 'review.read');
  const query = new URL(req.url ?? '/', 'https://gateway.invalid').searchParams;
  const period = parseReviewPeriod(
    { since: query.get('since') ?? undefined, until: query.get('until') ?? undefined },
    Date.now(),
    PARAMS,
  );
  sendJson(res, 200, await buildReview(deps.store, period));
}

export async function postAttest(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  const operator = await authorizeOperator(deps, req, 'review.attest');
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
  const { event } = await attestReview(deps.store, period, reviewerOf(operator), {
    comment: reviewComment(comment as string | undefined),
    now,
  });
  deps.log.info({ seq: event.seq, review_hash: event.data.review_hash }, 'access review attested');
  // The event as `ciport audit export --format jsonl` prints it.
  sendJson(res, 201, JSON.parse(jsonlLine(event)));
}
