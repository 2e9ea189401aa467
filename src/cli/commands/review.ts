// `ciport review` (docs/review.md): the access review of a period as JSON, CSV or HTML, from the
// store a gateway config names (offline) or from a running gateway's admin API (online), and
// `ciport review attest`, a reviewer's sign-off recorded in the audit log.
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { jsonlLine } from '../../audit/export.js';
import { ExitCode, UsageError } from '../../errors/index.js';
import {
  attestReview,
  buildReview,
  parseReviewPeriod,
  type Reviewer,
  type ReviewReport,
  reviewComment,
  reviewCsv,
  reviewerEmail,
  reviewHtml,
} from '../../review/index.js';
import { escapeJsonControls } from '../../text/printable.js';
import { withAdmin } from '../admin.js';
import { action, type CliContext, examples } from '../command.js';
import { withStore } from '../configured-store.js';
import { osUser } from '../os-user.js';
import { type Io, printable, writeJson } from '../output.js';

interface SourceOptions {
  config?: string;
  gateway?: string;
  since?: string;
  until?: string;
}

/** Reports can be large and slow to build on a big log: more room than the session API's. */
const ONLINE = { requestTimeoutMs: 10 * 60_000, maxResponseBytes: 256 << 20 };

/** Offline (`--config`) or online (`--gateway`, or CIPORT_GATEWAY when no --config is given). */
function source(io: Io, opts: SourceOptions): { config: string } | { gateway: string | undefined } {
  if (opts.config !== undefined && opts.gateway !== undefined) {
    throw new UsageError('give --config FILE (read the store) or --gateway URL (ask the gateway), not both');
  }
  if (opts.config !== undefined) return { config: opts.config };
  if (opts.gateway !== undefined || io.env.CIPORT_GATEWAY) return { gateway: opts.gateway };
  throw new UsageError('give --config FILE (read the store) or --gateway URL (ask a running gateway)');
}

/** Check the times here (a usage error before any connection); online, the gateway resolves them. */
function period(opts: SourceOptions) {
  return parseReviewPeriod({ since: opts.since, until: opts.until }, Date.now());
}

async function fetchReport(io: Io, opts: SourceOptions): Promise<ReviewReport> {
  const from = source(io, opts);
  const range = period(opts);
  if ('config' in from) return withStore(from.config, io.env, (store) => buildReview(store, range));
  const query = new URLSearchParams({ since: opts.since as string, until: opts.until as string });
  return withAdmin(
    io,
    { gateway: from.gateway },
    async (client, token) =>
      (await client.api('GET', `/v1/review?${query}`, { bearer: token })).body as ReviewReport,
    ONLINE,
  );
}

const FORMATS = {
  json: (r: ReviewReport) => `${escapeJsonControls(JSON.stringify(r, null, 2))}\n`,
  csv: reviewCsv,
  html: reviewHtml,
};

/** The OS account running the command: who signs off offline. */
function localReviewer(io: Io, email: string | undefined): Reviewer {
  return { issuer: 'local', subject: osUser(io), ...(email !== undefined ? { email } : {}) };
}

function sourceOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'gateway configuration: read its store (offline)')
    .option(
      '--gateway <url>',
      'ask a running gateway (as CIPORT_ADMIN_TOKEN, else your `ciport login`; default CIPORT_GATEWAY)',
    )
    .option('--since <time>', 'start, inclusive: ISO 8601 date or time, or a duration back from now (30d)')
    .option('--until <time>', 'end, exclusive: ISO 8601 date or time, a duration back from now, or "now"');
}

export function registerReview(program: Command, ctx: CliContext): void {
  const review = examples(
    program
      .command('review')
      .description('access review of a period: who reached which target, denials, policy and agent changes')
      .usage('(--config FILE | --gateway URL) --since T --until T [--format json|csv|html] [--output FILE]')
      .addHelpText(
        'after',
        '\nThe options are those of `ciport review report --help` (the default command). T: an ISO 8601\ndate or time, a duration back from now (30d, 12h) or "now". See docs/review.md.',
      ),
    [
      'ciport review --config gw.yaml --since 2026-11-01 --until 2026-12-01 > review.json',
      'ciport review --gateway https://ciport.example.com:8443 --since 30d --until now --format html --output review.html',
      'ciport review attest --config gw.yaml --since 2026-11-01 --until 2026-12-01 --reviewer alice@example.com',
    ],
  );

  examples(
    sourceOptions(
      review
        .command('report', { isDefault: true })
        .description('the review as JSON (default), CSV or HTML (what `ciport review` runs)'),
    )
      .option('--format <format>', 'json, csv or html', 'json')
      .option('--output <file>', 'write the report to this file instead of stdout'),
    [
      'ciport review --config gw.yaml --since 2026-11-01 --until 2026-12-01 --format csv --output nov.csv',
      'ciport review --config gw.yaml --since 90d --until now | jq ".denials"',
    ],
  ).action(
    action(ctx, async (opts: SourceOptions & { format: string; output?: string }) => {
      const render = Object.hasOwn(FORMATS, opts.format)
        ? FORMATS[opts.format as keyof typeof FORMATS]
        : undefined;
      if (!render)
        throw new UsageError(`--format: expected json, csv or html, got ${printable(opts.format)}`);
      const text = render(await fetchReport(ctx.io, opts));
      if (opts.output === undefined) ctx.io.stdout.write(text);
      else writeFileSync(opts.output, text, { mode: 0o600 });
      return ExitCode.ok;
    }),
  );

  examples(
    sourceOptions(
      review
        .command('attest')
        .description(
          'sign off the review of a period: verifies the audit chain, then records review.attested',
        ),
    )
      .option('--comment <text>', 'recorded with the sign-off (at most 1000 characters)')
      .option('--reviewer <email>', 'offline: your e-mail, recorded beside your OS user name')
      .option('--json', 'print the review.attested event as `audit export --format jsonl` does'),
    [
      'ciport review attest --config gw.yaml --since 2026-11-01 --until 2026-12-01 --reviewer alice@example.com',
      'CIPORT_ADMIN_TOKEN=… ciport review attest --gateway https://ciport.example.com:8443 --since 2026-11-01 --until 2026-12-01 --comment "Q4 review, ticket SEC-42"',
    ],
  ).action(
    action(ctx, async (opts: SourceOptions & { comment?: string; reviewer?: string; json?: boolean }) => {
      const from = source(ctx.io, opts);
      const range = period(opts);
      const comment = reviewComment(opts.comment);
      let event: Record<string, unknown>;
      if ('config' in from) {
        const email = opts.reviewer === undefined ? undefined : reviewerEmail(opts.reviewer);
        const reviewer = localReviewer(ctx.io, email);
        const done = await withStore(from.config, ctx.io.env, (store) =>
          attestReview(store, range, reviewer, { comment }),
        );
        event = JSON.parse(jsonlLine(done.event)) as Record<string, unknown>;
      } else {
        if (opts.reviewer !== undefined) {
          throw new UsageError('--reviewer is for --config; the gateway records who its admin token names');
        }
        const body = { since: opts.since, until: opts.until, ...(comment ? { comment } : {}) };
        event = await withAdmin(
          ctx.io,
          { gateway: from.gateway },
          async (client, token) =>
            (await client.api('POST', '/v1/review/attest', { bearer: token, body })).body as Record<
              string,
              unknown
            >,
          ONLINE,
        );
      }
      if (opts.json) writeJson(ctx.io, event);
      else
        ctx.io.stdout.write(
          `attested review ${printable(String(event.review_hash))} (audit seq ${Number(event.seq)})\n`,
        );
      return ExitCode.ok;
    }),
  );
}
