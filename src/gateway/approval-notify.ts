// Notifications of pending approvals (docs/approvals.md, "Notifications"): for each session
// created pending, every `approvals.webhooks` receiver gets one POST of a Slack-compatible
// incoming-webhook message (`{text, blocks}`), signed like the audit webhook sink (postSigned:
// X-Ciport-Signature `t=…,v1=…` over "<t>.<body>", X-Ciport-Timestamp).
//
// Delivery never holds up or fails session creation: `pending()` queues and returns; a bounded
// number of deliveries run at once and a bounded number wait (more are dropped and counted);
// each is retried twice after 1 s and 4 s on failure, within the webhook's timeout per attempt.
// Outcomes are counted in `ciport_approval_notifications_total{webhook,outcome}` and failures
// logged with the webhook's name, never its URL (a Slack URL holds a token) or secret.
//
// Text from the job's token (project path, ref, …) is shown escaped: control characters as
// `\xNN`, and `&`, `<`, `>` as Slack's entities, so a branch named `<!channel>` pings nobody.
import { readFileSync } from 'node:fs';
import { Counter, type Registry } from 'prom-client';
import { postSigned, type SignedReceiver } from '../audit/sinks/webhook.js';
import { type ApprovalWebhookConfig, urlProblem } from '../config/approvals.js';
import { asCiportError, ConfigError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import type { SessionRecord } from '../store/types.js';
import { printable } from '../text/printable.js';

/** Deliveries in flight at once, and waiting, over all webhooks. */
const MAX_IN_FLIGHT = 8;
const MAX_QUEUED = 200;
const RETRY_DELAYS_MS = [1_000, 4_000];

export interface ApprovalNotifierOptions {
  webhooks: readonly ApprovalWebhookConfig[];
  log: Logger;
  registry?: Registry | undefined;
  /** The console link of a session (approval-view.ts approvalUrl). */
  linkOf: (id: string) => string;
  now?: () => number;
  /** Retry delays (tests shorten them). */
  retryDelaysMs?: readonly number[];
}

export interface ApprovalNotifier {
  /** Announce a pending session; returns at once, never throws. */
  pending(record: SessionRecord): void;
  /** Settles when nothing is queued or in flight (tests, drain). */
  idle(): Promise<void>;
  stop(): void;
}

interface Job {
  hook: { name: string; receiver: SignedReceiver };
  body: Buffer;
  session: string;
}

/** The notifier, or undefined when no webhook is configured. Throws ConfigError on a bad URL. */
export function startApprovalNotifier(options: ApprovalNotifierOptions): ApprovalNotifier | undefined {
  if (options.webhooks.length === 0) return undefined;
  const hooks = options.webhooks.map((w) => {
    const url = typeof w.url === 'string' ? w.url : w.url.reveal();
    const problem = urlProblem(url);
    if (problem) {
      // A URL given as a secret is not repeated: it may hold a token.
      throw new ConfigError(
        'CIPORT_E_CONFIG_INVALID',
        `approvals.webhooks[${w.name}].url${typeof w.url === 'string' ? '' : ` (${w.url.origin})`}: ${problem}`,
      );
    }
    const receiver: SignedReceiver = {
      url: new URL(url),
      ca: w.ca ? readFileSync(w.ca.file, 'utf8') : undefined,
      secret: w.secret.reveal(),
      timeoutMs: w.timeout,
      what: `approval webhook ${w.name}`,
    };
    return { name: w.name, receiver };
  });
  const outcomes = options.registry
    ? new Counter({
        name: 'ciport_approval_notifications_total',
        help: 'Approval notifications, by webhook and outcome (sent, failed, dropped).',
        labelNames: ['webhook', 'outcome'],
        registers: [options.registry],
      })
    : undefined;
  const delays = options.retryDelaysMs ?? RETRY_DELAYS_MS;
  const stopped = new AbortController();
  const queue: Job[] = [];
  let inFlight = 0;
  let idleWaiters: Array<() => void> = [];

  const settleIdle = () => {
    if (inFlight > 0 || queue.length > 0) return;
    const waiters = idleWaiters;
    idleWaiters = [];
    for (const w of waiters) w();
  };
  const pump = () => {
    while (inFlight < MAX_IN_FLIGHT && queue.length > 0 && !stopped.signal.aborted) {
      const job = queue.shift() as Job;
      inFlight++;
      void deliver(job).finally(() => {
        inFlight--;
        pump();
        settleIdle();
      });
    }
    if (stopped.signal.aborted) queue.length = 0;
    settleIdle();
  };
  const deliver = async (job: Job): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      try {
        await postSigned(
          job.hook.receiver,
          job.body,
          { 'x-ciport-session': job.session },
          stopped.signal,
          options.now,
        );
        outcomes?.inc({ webhook: job.hook.name, outcome: 'sent' });
        return;
      } catch (err) {
        const e = asCiportError(err);
        const delay = delays[attempt];
        if (delay === undefined || stopped.signal.aborted) {
          outcomes?.inc({ webhook: job.hook.name, outcome: 'failed' });
          options.log.warn(
            { webhook: job.hook.name, session: job.session, attempts: attempt + 1, err: e.message },
            'approval notification failed',
          );
          return;
        }
        await sleep(delay, stopped.signal);
      }
    }
  };

  return {
    pending(record) {
      try {
        const body = Buffer.from(JSON.stringify(slackMessage(record, options.linkOf(record.id))));
        for (const hook of hooks) {
          if (queue.length >= MAX_QUEUED || stopped.signal.aborted) {
            outcomes?.inc({ webhook: hook.name, outcome: 'dropped' });
            options.log.warn(
              { webhook: hook.name, session: record.id },
              'approval notification dropped: queue full',
            );
            continue;
          }
          queue.push({ hook, body, session: record.id });
        }
        pump();
      } catch (err) {
        options.log.error(
          { session: record.id, err: asCiportError(err).message },
          'approval notification not sent',
        );
      }
    },
    idle() {
      if (inFlight === 0 && queue.length === 0) return Promise.resolve();
      return new Promise((resolve) => idleWaiters.push(resolve));
    },
    stop() {
      stopped.abort();
      queue.length = 0;
      settleIdle();
    },
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    timer.unref();
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

// ---- the message ----------------------------------------------------------------------------

/** Slack mrkdwn text from untrusted input: controls escaped, `& < >` as entities, bounded. */
export function slackText(value: unknown, max = 200): string {
  const text = printable(String(value ?? '-'));
  const cut = text.length > max ? `${text.slice(0, max - 1)}…` : text;
  return cut.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

/** `<url|label>` when `url` is a plain http(s) URL Slack can link; the label alone otherwise. */
function link(url: unknown, label: string): string {
  if (typeof url !== 'string' || !/^https?:\/\/[^\s<>|]+$/.test(url) || url.length > 500) return label;
  return `<${url}|${label}>`;
}

/**
 * The Slack incoming-webhook message for a pending session: `text` (the notification line and
 * the fallback) and `blocks` (header, who and what, a button to the console page).
 */
export function slackMessage(record: SessionRecord, consoleUrl: string): { text: string; blocks: unknown[] } {
  const p = record.principal as Record<string, unknown>;
  const obj = (v: unknown) => (v && typeof v === 'object' ? (v as Record<string, unknown>) : {});
  const project = obj(p.project).path ?? p.subject;
  const ref = obj(p.ref).name;
  const env = obj(p.environment).name;
  const targets = record.targets.map((t) => slackText(t, 64)).join(', ');
  const requirements = (record.approval?.requirements ?? [])
    .map((r) => `${r.count} of ${r.groups.map((g) => slackText(g, 64)).join(' or ')}`)
    .join('; ');
  const deadline = record.approval ? new Date(record.approval.deadline).toISOString() : '';
  const who = `${slackText(project)}${ref ? ` @ ${slackText(ref)}` : ''}`;
  const field = (label: string, value: string) => ({ type: 'mrkdwn', text: `*${label}*\n${value}` });
  return {
    text: `ciport: approval needed: ${who} wants ${targets} (rule ${slackText(record.rule, 64)}): ${link(consoleUrl, 'review')}`,
    blocks: [
      {
        type: 'header',
        text: {
          type: 'plain_text',
          text: `Approval needed: ${printable(record.targets.join(', ')).slice(0, 120)}`,
        },
      },
      {
        type: 'section',
        text: {
          type: 'mrkdwn',
          text: `*${who}* asks for *${targets}* (rule \`${slackText(record.rule, 64)}\`). Needs ${requirements || 'approval'} before ${deadline}.`,
        },
      },
      {
        type: 'section',
        fields: [
          field('Project', slackText(project)),
          field('Ref', slackText(ref)),
          field('Pipeline', slackText(p.pipeline_id, 64)),
          field('Job', link(p.job_url, slackText(p.job_id, 64))),
          field('Environment', slackText(env)),
          field('Triggered by', slackText(p.actor, 100)),
          field('Targets', targets),
          field('Session', slackText(record.id, 80)),
        ],
      },
      {
        type: 'actions',
        elements: [
          {
            type: 'button',
            text: { type: 'plain_text', text: 'Approve or deny' },
            url: consoleUrl,
            style: 'primary',
          },
        ],
      },
    ],
  };
}
