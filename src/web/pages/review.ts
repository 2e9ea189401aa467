// Access reviews (docs/console.md, docs/review.md): the review of a period as `ciport review
// --format html` renders it (src/review, the same report and hash), and an Attest button that
// records `review.attested` by the signed-in reviewer — refused when the chain fails
// verification, or when the report's hash is no longer the one shown (the period's events
// changed since the page was rendered).
import { asCiportError } from '../../errors/index.js';
import { assertMayDo } from '../../gateway/operators.js';
import { mayDo } from '../../identity/operator.js';
import {
  attestReview,
  buildReview,
  parseReviewPeriod,
  REVIEW_COMMENT_MAX,
  type ReviewPeriod,
  reviewBody,
  reviewComment,
  reviewerOf,
} from '../../review/index.js';
import { ERROR_HEADER } from '../../transport/wire.js';
import type { PageCtx } from '../context.js';
import { field } from '../form.js';
import { type Html, html, trusted } from '../html.js';
import { csrfField, page } from '../layout.js';
import { sendHtml } from '../respond.js';

const NAMES = { since: 'since', until: 'until' };

/** The last whole calendar month (UTC): the usual period of a monthly review. */
function lastMonth(now: number): { since: string; until: string } {
  const d = new Date(now);
  const until = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  const u = new Date(until);
  const since = Date.UTC(u.getUTCFullYear(), u.getUTCMonth() - 1, 1);
  return { since: new Date(since).toISOString(), until: new Date(until).toISOString() };
}

function periodForm(since: string, until: string): Html {
  return html`<form class="search" method="get" action="/ui/review">
<label>Since<input type="text" name="since" value="${since}" maxlength="64"></label>
<label>Until<input type="text" name="until" value="${until}" maxlength="64"></label>
<button type="submit">Show the review</button></form>`;
}

function show(ctx: PageCtx, status: number, body: Html, headers: Record<string, string> = {}): void {
  sendHtml(
    ctx.res,
    status,
    page(ctx.viewer, { title: 'Access review', current: '/ui/review', styles: ['review.css'] }, body),
    { headers },
  );
}

function failed(ctx: PageCtx, thrown: unknown, form: Html): void {
  const err = asCiportError(thrown);
  if (err.code === 'CIPORT_E_INTERNAL') throw err;
  show(
    ctx,
    err.httpStatus,
    html`<h1>Access review</h1>${form}<div class="error"><p>${err.message}</p><p class="muted">Code <code>${err.code}</code></p></div>`,
    { [ERROR_HEADER]: err.code },
  );
}

export async function reviewPage(ctx: PageCtx): Promise<void> {
  assertMayDo(ctx.deps.log, ctx.viewer.operator, 'review.read', ctx.url.pathname);
  const q = ctx.url.searchParams;
  const fallback = lastMonth(ctx.now);
  const since = (q.get('since') ?? fallback.since).slice(0, 64);
  const until = (q.get('until') ?? fallback.until).slice(0, 64);
  let period: ReviewPeriod;
  try {
    period = parseReviewPeriod({ since, until }, ctx.now, NAMES);
  } catch (err) {
    failed(ctx, err, periodForm(since, until));
    return;
  }
  const report = await buildReview(ctx.deps.store, period);
  const ended = period.until <= ctx.now;
  const canAttest = mayDo(ctx.viewer.operator, 'review.attest');
  const attest = !canAttest
    ? ''
    : !ended
      ? html`<p class="notice no-print">This period has not ended yet: it can be attested once it has.</p>`
      : html`<form method="post" action="/ui/review/attest" class="no-print">${csrfField(ctx.viewer)}
<input type="hidden" name="since" value="${report.period.since}"><input type="hidden" name="until" value="${report.period.until}">
<input type="hidden" name="review_hash" value="${report.review_hash}">
<p><label>Comment (optional)<br><input type="text" name="comment" maxlength="${REVIEW_COMMENT_MAX}" size="80"></label></p>
<p><button type="submit">Attest this review</button> <span class="muted">records <code>review.attested</code> with the review hash, as you</span></p></form>`;
  show(
    ctx,
    200,
    html`<div class="no-print"><h1>Access review</h1>${periodForm(since, until)}${attest}</div>
<div class="review">${trusted(reviewBody(report))}</div>`,
  );
}

/** POST /ui/review/attest: sign off the review of the period shown, if it is still the one shown. */
export async function attestPage(ctx: PageCtx): Promise<void> {
  assertMayDo(ctx.deps.log, ctx.viewer.operator, 'review.attest', ctx.url.pathname);
  const form = ctx.form ?? new URLSearchParams();
  const since = (form.get('since') ?? '').slice(0, 64);
  const until = (form.get('until') ?? '').slice(0, 64);
  try {
    const hash = field(form, 'review_hash', 64);
    const period = parseReviewPeriod(
      { since: since || undefined, until: until || undefined },
      ctx.now,
      NAMES,
    );
    const { event, report } = await attestReview(ctx.deps.store, period, reviewerOf(ctx.viewer.operator), {
      comment: reviewComment(field(form, 'comment', REVIEW_COMMENT_MAX * 2)),
      now: ctx.now,
      ...(hash ? { expectedHash: hash } : {}),
    });
    ctx.deps.log.info({ seq: event.seq, review_hash: report.review_hash }, 'console: access review attested');
    show(
      ctx,
      200,
      html`<h1>Review attested</h1>
<div class="notice"><p>Recorded <code>review.attested</code> (seq ${event.seq}) for ${report.period.since} – ${report.period.until}, review hash <code>${report.review_hash}</code>.</p></div>
<p><a href="/ui/review?since=${encodeURIComponent(report.period.since)}&amp;until=${encodeURIComponent(report.period.until)}">Back to the review</a></p>`,
    );
  } catch (err) {
    failed(ctx, err, periodForm(since, until));
  }
}
