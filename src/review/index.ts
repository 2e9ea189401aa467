export {
  type Attestation,
  attestReview,
  REVIEW_COMMENT_MAX,
  type Reviewer,
  reviewComment,
  reviewerEmail,
  reviewerOf,
} from './attest.js';
export { buildReview } from './collect.js';
export { REVIEW_CSV_COLUMNS, reviewCsv } from './csv.js';
export { REVIEW_STYLE, reviewBody, reviewHtml } from './html.js';
export { parseReviewPeriod, parseReviewTime, type ReviewPeriod } from './period.js';
export * from './report.js';
