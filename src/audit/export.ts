// `ciport audit export`: the log as JSON lines or CSV, streamed page by page with backpressure.

import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type { AuditStore } from '../store/types.js';
import { defuseFormula, escapeJsonControls, printable } from '../text/printable.js';
import { canonicalJson, type JsonObject, type JsonValue } from './canonical.js';
import { type ChainRow, RESERVED_DATA_KEYS } from './chain.js';
import type { AuditEvent } from './events.js';

export type ExportFormat = 'jsonl' | 'csv';

export interface ExportOptions {
  format: ExportFormat;
  /** Epoch ms, inclusive. */
  since?: number;
  /** Epoch ms, exclusive. */
  until?: number;
  /** Events read per query (default 1000). */
  pageSize?: number;
}

export const CSV_COLUMNS = [
  'seq',
  'time',
  'type',
  'session',
  'target',
  'rule',
  'project',
  'ref',
  'pipeline',
  'job',
  'job_url',
  'hash',
  'prev_hash',
  'data',
] as const;

const PAGE = 1000;

/**
 * Write the events of [since, until) to `out` in seq order. Does not end `out` (it may be
 * stdout). Returns the number of events written.
 */
export async function exportEvents(
  store: AuditStore,
  options: ExportOptions,
  out: Writable,
): Promise<number> {
  const line = options.format === 'csv' ? csvLine : jsonlLine;
  if (options.format === 'csv') await write(out, `${CSV_COLUMNS.join(',')}\r\n`);
  let count = 0;
  let afterSeq = 0;
  const limit = options.pageSize ?? PAGE;
  for (;;) {
    const page = await store.auditEvents({ since: options.since, until: options.until, afterSeq, limit });
    for (const event of page) {
      await write(out, line(event));
      count++;
    }
    const last = page.at(-1);
    if (!last) return count;
    afterSeq = last.seq;
  }
}

async function write(out: Writable, chunk: string): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain');
}

// ---- JSON lines ----------------------------------------------------------------------------

/** `{seq, time, type, ...data, hash, prev_hash}` with `time` as ISO 8601 (millisecond precision). */
export function jsonlLine(event: AuditEvent): string {
  const record: Record<string, JsonValue> = {
    seq: event.seq,
    time: new Date(event.time).toISOString(),
    type: event.type,
  };
  for (const [key, value] of Object.entries(event.data)) record[key] = value;
  record.hash = event.hash;
  record.prev_hash = event.prevHash;
  return `${JSON.stringify(record)}\n`;
}

/** The inverse of `jsonlLine`, for verifying an export: feed the rows to `verifyRows`. */
export function parseJsonlLine(line: string): ChainRow {
  const record = JSON.parse(line) as Record<string, JsonValue>;
  const { seq, time, type, hash, prev_hash: prevHash } = record;
  if (typeof seq !== 'number' || typeof time !== 'string' || typeof type !== 'string') {
    throw new SyntaxError('not an exported audit event: seq, time or type missing');
  }
  if (typeof hash !== 'string' || typeof prevHash !== 'string') {
    throw new SyntaxError('not an exported audit event: hash or prev_hash missing');
  }
  const ms = Date.parse(time);
  if (Number.isNaN(ms)) throw new SyntaxError(`not an ISO 8601 time: ${time}`);
  const data: JsonObject = {};
  for (const [key, value] of Object.entries(record)) {
    if (!(RESERVED_DATA_KEYS as readonly string[]).includes(key)) data[key] = value;
  }
  return { seq, time: ms, type, data, hash, prevHash };
}

// ---- CSV -----------------------------------------------------------------------------------

/**
 * One RFC 4180 record: fields with a comma, quote, CR or LF (or surrounding blanks) are quoted,
 * quotes doubled, records end in CRLF. `target` is the event's target, or its targets separated
 * by spaces; `data` is the canonical JSON of all the event's data, so a CSV export can be
 * verified like a JSON-lines one.
 *
 * Values come from job tokens, so they are made safe for the spreadsheet that opens the file:
 * a text cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'` (OWASP's advice
 * against formula injection) and control characters are shown as escapes (`\x1b`). The `data`
 * column stays exact: it is JSON, starts with `{`, and its control characters are JSON escapes.
 */
export function csvLine(event: AuditEvent): string {
  const d = event.data;
  const principal = isObject(d.principal) ? d.principal : {};
  const target =
    typeof d.target === 'string' ? d.target : Array.isArray(d.targets) ? d.targets.join(' ') : null;
  const fields: (JsonValue | undefined)[] = [
    event.seq,
    new Date(event.time).toISOString(),
    event.type,
    d.session,
    target,
    d.rule,
    principal.project,
    principal.ref,
    principal.pipeline,
    principal.job,
    principal.job_url,
    event.hash,
    event.prevHash,
  ];
  return `${[...fields.map(csvField), quote(jsonCell(d))].join(',')}\r\n`;
}

export function csvField(value: JsonValue | undefined): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'object') return quote(jsonCell(value));
  const shown = printable(value);
  const text = defuseFormula(shown);
  // A defused cell is always quoted, so that no reader takes the `'` for a delimiter.
  return text !== shown ? `"${text.replaceAll('"', '""')}"` : quote(text);
}

/** Canonical JSON with every control and bidi character as a `\uXXXX` escape (same value). */
function jsonCell(value: JsonValue): string {
  return escapeJsonControls(canonicalJson(value));
}

function quote(text: string): string {
  return /[",\r\n]|^\s|\s$/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
