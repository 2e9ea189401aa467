// Small formatting helpers of the console pages: times, ages, byte counts, principals and the
// links to their CI platform (from the principal's claims; only http(s) URLs become links).
import type { JsonObject } from '../audit/canonical.js';
import { type Html, html, httpUrl } from './html.js';

export function isoTime(ms: number | null | undefined): string {
  return typeof ms === 'number' && Number.isFinite(ms) ? new Date(ms).toISOString() : '';
}

/** `3h 05m`, `4m 12s`, `9s`. */
export function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** The fields the console shows of a principal, from a session's (stored) or an event's form. */
export interface PrincipalView {
  issuer: string;
  kind: string | null;
  project: string | null;
  ref: string | null;
  pipeline: string | null;
  job: string | null;
  jobUrl: string | null;
  actor: string | null;
  environment: string | null;
}

const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
const obj = (v: unknown): Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

export function principalView(value: unknown): PrincipalView {
  const p = obj(value);
  const project = typeof p.project === 'object' ? str(obj(p.project).path) : str(p.project);
  const ref = typeof p.ref === 'object' ? str(obj(p.ref).name) : str(p.ref);
  const environment = typeof p.environment === 'object' ? str(obj(p.environment).name) : str(p.environment);
  return {
    issuer: str(p.issuer) ?? '',
    kind: str(p.kind),
    project,
    ref,
    pipeline: str(p.pipeline_id) ?? str(p.pipeline),
    job: str(p.job_id) ?? str(p.job),
    jobUrl: str(p.job_url),
    actor: str(p.actor),
    environment,
  };
}

/** A project path safe to put in a URL path: plain segments, no dot segments. */
const SAFE_PATH = /^(?!.*(^|\/)\.{1,2}(\/|$))[A-Za-z0-9_.~-]+(\/[A-Za-z0-9_.~-]+)*$/;

export interface PrincipalLinks {
  project?: string;
  ref?: string;
  pipeline?: string;
  job?: string;
}

/**
 * Links to the project, ref, pipeline and job on the CI platform, derived from the job URL the
 * identity layer built from the verified token (GitLab `…/-/jobs/N`, GitHub `…/actions/runs/N…`).
 * Anything that is not a plain http(s) URL of the job URL's origin gets no link.
 */
export function principalLinks(p: PrincipalView): PrincipalLinks {
  const job = httpUrl(p.jobUrl);
  if (!job) return {};
  const links: PrincipalLinks = { job };
  const origin = new URL(job).origin;
  const within = (path: string): string | undefined => {
    const url = httpUrl(`${origin}${path}`);
    return url && new URL(url).origin === origin ? url : undefined;
  };
  const gitlab = job.indexOf('/-/jobs/');
  const github = job.indexOf('/actions/runs/');
  const projectPath = p.project && SAFE_PATH.test(p.project) ? p.project : undefined;
  if (projectPath) links.project = within(`/${projectPath}`);
  const base = links.project;
  if (gitlab > 0) {
    const jobProject = job.slice(0, gitlab);
    if (p.pipeline && /^\d{1,20}$/.test(p.pipeline))
      links.pipeline = `${jobProject}/-/pipelines/${p.pipeline}`;
    if (base && p.ref) links.ref = `${base}/-/tree/${encodeURIComponent(p.ref)}`;
  } else if (github > 0) {
    const repo = job.slice(0, github);
    if (p.pipeline && /^\d{1,20}$/.test(p.pipeline)) links.pipeline = `${repo}/actions/runs/${p.pipeline}`;
    if (base && p.ref) links.ref = `${base}/tree/${encodeURIComponent(p.ref)}`;
  }
  return links;
}

function link(url: string | undefined, label: string): Html {
  return url ? html`<a href="${url}" rel="noreferrer noopener">${label}</a>` : html`${label}`;
}

/** The principal as a table cell's content: project, ref, pipeline and job with their links. */
export function principalCell(value: unknown): Html {
  const p = principalView(value);
  const l = principalLinks(p);
  const parts: Html[] = [];
  parts.push(p.project ? link(l.project, p.project) : html`<span class="muted">${p.issuer}</span>`);
  if (p.ref) parts.push(html` @ ${link(l.ref, p.ref)}`);
  const more: Html[] = [];
  if (p.pipeline) more.push(html`pipeline ${link(l.pipeline, p.pipeline)}`);
  if (p.job) more.push(html`job ${link(l.job, p.job)}`);
  else if (l.job) more.push(link(l.job, 'job'));
  if (p.environment) more.push(html`env ${p.environment}`);
  if (p.actor) more.push(html`by ${p.actor}`);
  return html`${parts}${more.length ? html`<br><span class="muted">${joinHtml(more, ' · ')}</span>` : ''}`;
}

export function joinHtml(items: readonly Html[], separator: string): Html[] {
  const out: Html[] = [];
  items.forEach((item, i) => {
    if (i > 0) out.push(html`${separator}`);
    out.push(item);
  });
  return out;
}

/** An event's data member as text, or ''. */
export function member(data: JsonObject, name: string): string {
  const v = data[name];
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '';
}
