// HTML built with a tagged template that escapes every interpolated value (`escapeHtml`) unless
// it is already markup (an `Html`, made only by `html` itself or by `trusted` on constant text).
// Project names, refs, claims and reasons are hostile input; with this, forgetting to escape one
// takes an explicit `trusted(...)` call that review can spot.
import { escapeHtml } from '../text/html.js';

/** Markup that is safe to embed as is. */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export type HtmlValue = Html | string | number | boolean | null | undefined | readonly HtmlValue[];

function render(value: HtmlValue): string {
  if (value instanceof Html) return value.text;
  if (value === null || value === undefined || value === false || value === true) return '';
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : '';
  if (typeof value === 'string') return escapeHtml(value);
  return value.map(render).join('');
}

/** `html\`<td>${text}</td>\``: the literal parts as written, every value escaped. */
export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): Html {
  let out = strings[0] ?? '';
  for (let i = 0; i < values.length; i++) out += render(values[i] as HtmlValue) + (strings[i + 1] ?? '');
  return new Html(out);
}

/** Multi-line text for a <pre>: each line escaped, the line breaks kept. */
export function lines(text: string): Html {
  return new Html(text.split('\n').map(escapeHtml).join('\n'));
}

/** Markup the program produced itself (a constant, or a renderer that escapes: review pages). */
export function trusted(markup: string): Html {
  return new Html(markup);
}

/** An http(s) URL safe for an href, or undefined (javascript:, data:, relative, malformed…). */
export function httpUrl(text: unknown): string | undefined {
  if (typeof text !== 'string' || text.length > 2048) return undefined;
  try {
    const url = new URL(text);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.toString() : undefined;
  } catch {
    return undefined;
  }
}

/** A link to an http(s) URL from claims, or the plain text when the URL is not one. */
export function externalLink(url: unknown, label: string): Html {
  const href = httpUrl(url);
  return href ? html`<a href="${href}" rel="noreferrer noopener">${label}</a>` : html`${label}`;
}
