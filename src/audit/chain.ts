// The hash chain. Each event's hash commits to its own content and to the previous event's
// hash, so editing, removing, inserting or reordering a stored event breaks the chain at that
// point:
//
//   hash = hex(SHA-256(prev_hash ‖ canonicalJson({seq, time, type, data})))
//
// prev_hash is the previous event's hash as 64 lowercase hex characters (the genesis event
// uses 64 zeros), ‖ is plain string concatenation, the whole input is UTF-8, `time` is epoch
// milliseconds. docs/audit.md documents the same construction for external verifiers.

import { createHash } from 'node:crypto';
import { CiportError } from '../errors/index.js';
import { CanonicalJsonError, canonicalJson, type JsonObject, type JsonValue } from './canonical.js';
import type { AuditDataMap, AuditEventInput, AuditEventType } from './events.js';
import { isSecretKey, redactSecrets, scrubText } from './redact.js';

export const GENESIS_HASH = '0'.repeat(64);

/** Keys an event's data may not use: exports put data next to these envelope fields. */
export const RESERVED_DATA_KEYS = ['seq', 'time', 'type', 'hash', 'prev_hash'] as const;

/** Longest string value kept in an event (characters); longer ones are cut and marked. */
export const MAX_STRING_LENGTH = 16 * 1024;

const HASH_PATTERN = /^[0-9a-f]{64}$/;

export interface HashedContent {
  seq: number;
  time: number;
  type: string;
  data: JsonValue;
}

export function eventHash(prevHash: string, event: HashedContent): string {
  const { seq, time, type, data } = event;
  return createHash('sha256')
    .update(prevHash, 'utf8')
    .update(canonicalJson({ seq, time, type, data }), 'utf8')
    .digest('hex');
}

/**
 * eventHash for an event whose data is already canonical JSON text (what the writer keeps):
 * the envelope's keys sort as data < seq < time < type, so its canonical form is spliced
 * together instead of re-serialising the data. Same result as eventHash (tested).
 */
export function chainHash(
  prevHash: string,
  seq: number,
  time: number,
  type: string,
  dataText: string,
): string {
  return createHash('sha256')
    .update(
      `${prevHash}{"data":${dataText},"seq":${JSON.stringify(seq)},"time":${JSON.stringify(time)},"type":${JSON.stringify(type)}}`,
      'utf8',
    )
    .digest('hex');
}

/** An event input checked, stripped of secrets and reduced to canonical JSON, ready to chain. */
export interface PreparedEvent {
  readonly type: AuditEventType;
  readonly time: number | undefined;
  /** The clean data (parsed from dataText on first use). */
  readonly data: JsonObject;
  /** canonicalJson(data): what the store keeps in `audit_events.data`. */
  readonly dataText: string;
}

class Prepared implements PreparedEvent {
  readonly type: AuditEventType;
  readonly time: number | undefined;
  readonly dataText: string;
  #data: JsonObject | undefined;

  constructor(type: AuditEventType, time: number | undefined, dataText: string, data?: JsonObject) {
    this.type = type;
    this.time = time;
    this.dataText = dataText;
    this.#data = data;
  }

  // Most writers (query events) never look at the data they wrote: parse it only when asked.
  get data(): JsonObject {
    this.#data ??= JSON.parse(this.dataText) as JsonObject;
    return this.#data;
  }
}

/**
 * Validate and normalise an event before it is chained. Secret-named members are removed (and
 * their paths listed under `redacted`), token-shaped strings are scrubbed, over-long strings are
 * cut. Throws CIPORT_E_INTERNAL for events that are programming errors (reserved keys, values
 * JSON cannot represent).
 *
 * One pass does all of it and writes the canonical JSON directly; an event that needs more
 * (a secret-named member to remove, a value to refuse) takes the general path below, which
 * produces the same text (tested) and the precise error.
 */
export function prepareAuditEvent(input: AuditEventInput): PreparedEvent {
  const known = (input as { [PREPARED]?: PreparedEvent })[PREPARED];
  if (known !== undefined) return known;
  const { type, time } = input;
  if (time !== undefined && !Number.isSafeInteger(time)) {
    throw invalid(type, `time must be integer epoch milliseconds, got ${time}`);
  }
  const raw = input.data as unknown;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw invalid(type, 'data must be an object');
  }
  for (const key of RESERVED_DATA_KEYS) {
    if (Object.hasOwn(raw, key)) throw invalid(type, `data may not use the reserved key "${key}"`);
  }
  const fast = cleanCanonical(raw, 0);
  if (fast !== undefined) return new Prepared(type, time, fast);
  return prepareSlowly(type, time, raw as JsonObject);
}

/** The general path: cap, redact (recording what was removed), canonicalise. Exported for tests. */
export function prepareSlowly(
  type: AuditEventType,
  time: number | undefined,
  raw: JsonObject,
): PreparedEvent {
  // Cut first so that scrubbing works on bounded strings.
  const { data: clean, removed } = redactSecrets(capStrings(raw) as JsonObject);
  if (removed.length > 0) {
    const earlier = Array.isArray(clean.redacted) ? clean.redacted : [];
    clean.redacted = [...earlier, ...removed];
  }
  let dataText: string;
  try {
    dataText = canonicalJson(clean);
  } catch (err) {
    if (err instanceof CanonicalJsonError) throw invalid(type, err.message, err);
    throw err;
  }
  return new Prepared(type, time, dataText);
}

/** Where an input made by an AuditEventTemplate carries its prepared form. */
const PREPARED: unique symbol = Symbol('ciport.audit.prepared');

type Variable<T extends AuditEventType, V extends keyof AuditDataMap[T]> = Pick<AuditDataMap[T], V>;
type Constant<T extends AuditEventType, V extends keyof AuditDataMap[T]> = Omit<AuditDataMap[T], V>;

/**
 * Events of one type whose data is mostly constant (a connection's `query` events: principal,
 * session, target, … are the same for every statement). The constant members are checked and
 * reduced to canonical JSON once; each event then only cleans its variable members (cut, scrub,
 * JSON) and splices them in key order. `input()` returns an ordinary AuditEventInput (its `data`
 * is the plain merged object, built only when read) that also carries its prepared form, which
 * prepareAuditEvent returns as is: exactly the text prepareAuditEvent would have produced from
 * the merged data (tested). Whenever that cannot be guaranteed cheaply — a secret-named or
 * reserved member, a value the fast path refuses — it prepares the merged data the general way.
 */
export class AuditEventTemplate<T extends AuditEventType, V extends keyof AuditDataMap[T] & string> {
  readonly type: T;
  readonly #constant: Constant<T, V>;
  /** Canonical JSON pieces in key order: a string is a constant `"key":value` (no comma), a number the index of a variable key. */
  readonly #parts: Array<string | number> | undefined;
  readonly #variableKeys: readonly V[];
  readonly #variableNames: readonly string[];

  constructor(type: T, constant: Constant<T, V>, variableKeys: readonly V[]) {
    this.type = type;
    this.#constant = constant;
    this.#variableKeys = variableKeys;
    this.#variableNames = variableKeys.map((k) => JSON.stringify(k));
    this.#parts = templateParts(constant as Record<string, unknown>, variableKeys);
  }

  /** The event with these variable members (prepared, or prepared the general way). */
  input(variable: Variable<T, V>): Extract<AuditEventInput, { type: T }> {
    const constant = this.#constant;
    const type = this.type;
    let prepared: PreparedEvent | undefined;
    const parts = this.#parts;
    if (parts !== undefined) {
      let out = '{';
      for (let i = 0; i < parts.length; i++) {
        const part = parts[i] as string | number;
        let piece: string;
        if (typeof part === 'string') piece = part;
        else {
          const member = (variable as Record<string, unknown>)[this.#variableKeys[part] as string];
          if (member === undefined) continue;
          const text = cleanCanonical(member, 1);
          if (text === undefined) {
            out = '';
            break;
          }
          piece = `${this.#variableNames[part]}:${text}`;
        }
        out += out.length === 1 ? piece : `,${piece}`;
      }
      if (out !== '') prepared = new Prepared(type, undefined, `${out}}`);
    }
    let data: AuditDataMap[T] | undefined;
    const merged = () => {
      data ??= { ...constant, ...variable } as unknown as AuditDataMap[T];
      return data;
    };
    // The general way: same checks, same errors as an ordinary event's (thrown here).
    prepared ??= prepareAuditEvent({ type, data: merged() } as AuditEventInput);
    return {
      type,
      get data() {
        return merged();
      },
      [PREPARED]: prepared,
    } as unknown as Extract<AuditEventInput, { type: T }>;
  }
}

/** The constant members' canonical pieces and the variable slots, in key order; undefined: no fast path. */
function templateParts(
  constant: Record<string, unknown>,
  variableKeys: readonly string[],
): Array<string | number> | undefined {
  if (constant === null || typeof constant !== 'object' || Array.isArray(constant)) return undefined;
  const proto = Object.getPrototypeOf(constant);
  if (proto !== Object.prototype && proto !== null) return undefined;
  const keys = new Set([...Object.keys(constant), ...variableKeys]);
  for (const key of keys) {
    if (isSecretKey(key) || (RESERVED_DATA_KEYS as readonly string[]).includes(key)) return undefined;
  }
  const parts: Array<string | number> = [];
  for (const key of [...keys].sort()) {
    const slot = variableKeys.indexOf(key);
    // A key in both: the variable member wins, as in `{ ...constant, ...variable }`.
    if (slot >= 0) {
      parts.push(slot);
      continue;
    }
    const member = constant[key];
    if (member === undefined) continue;
    const text = cleanCanonical(member, 1);
    if (text === undefined) return undefined;
    parts.push(`${JSON.stringify(key)}:${text}`);
  }
  return parts;
}

/** Deeper than this, the general path (which detects cycles) decides. */
const MAX_FAST_DEPTH = 32;

/**
 * capStrings + redactSecrets + canonicalJson in one walk, for data that needs no member removed
 * and holds nothing canonicalJson refuses; undefined otherwise (the caller takes the general
 * path). Strings are cut, then scrubbed, exactly as the general path does.
 */
function cleanCanonical(value: unknown, depth: number): string | undefined {
  switch (typeof value) {
    case 'string': {
      const capped =
        value.length <= MAX_STRING_LENGTH
          ? value
          : `${value.slice(0, MAX_STRING_LENGTH)}…[truncated ${value.length - MAX_STRING_LENGTH} chars]`;
      return JSON.stringify(scrubText(capped));
    }
    case 'number':
      return Number.isFinite(value) ? JSON.stringify(value) : undefined;
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (value === null) return 'null';
      if (depth >= MAX_FAST_DEPTH) return undefined;
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          const item = value[i] as unknown;
          if (item === undefined) return undefined;
          const text = cleanCanonical(item, depth + 1);
          if (text === undefined) return undefined;
          out += i === 0 ? text : `,${text}`;
        }
        return `${out}]`;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) return undefined;
      const record = value as Record<string, unknown>;
      let out = '{';
      let first = true;
      for (const key of Object.keys(record).sort()) {
        // A secret-named member is removed and listed even when undefined: the general path.
        if (isSecretKey(key)) return undefined;
        const member = record[key];
        if (member === undefined) continue;
        const text = cleanCanonical(member, depth + 1);
        if (text === undefined) return undefined;
        out += `${first ? '' : ','}${JSON.stringify(key)}:${text}`;
        first = false;
      }
      return `${out}}`;
    }
    default:
      return undefined;
  }
}

function invalid(type: string, why: string, cause?: unknown): CiportError {
  return new CiportError('CIPORT_E_INTERNAL', `invalid audit event ${type}: ${why}`, { cause });
}

function capStrings(value: JsonValue): JsonValue {
  if (typeof value === 'string') {
    if (value.length <= MAX_STRING_LENGTH) return value;
    return `${value.slice(0, MAX_STRING_LENGTH)}…[truncated ${value.length - MAX_STRING_LENGTH} chars]`;
  }
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(capStrings);
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value; // canonicalJson refuses it
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(value)) out[k] = capStrings(v);
  return out;
}

// ---- verification --------------------------------------------------------------------------

/** One stored or exported event as the verifier sees it; `data` as stored text or parsed. */
export interface ChainRow {
  seq: number;
  time: number;
  type: string;
  data: string | JsonValue;
  hash: string;
  prevHash: string;
}

export interface ChainHead {
  seq: number;
  hash: string;
}

export type VerifyResult =
  | { ok: true; count: number; head: ChainHead | null }
  | { ok: false; seq: number; reason: string; count: number };

export interface VerifyOptions {
  /**
   * `genesis` (default): the rows must start at seq 1 from the genesis hash. `first`: trust the
   * first row's seq and prev_hash (verifying an excerpt, e.g. an export of one period).
   */
  from?: 'genesis' | 'first';
  /**
   * A head recorded earlier outside the database (`ciport audit verify` prints it). The chain
   * must contain this exact event: this catches removal of events from the end, which no chain
   * can reveal on its own.
   */
  anchor?: ChainHead;
}

/**
 * Check rows given in ascending seq order. Stops at the FIRST bad event and says which seq and
 * why; `count` is the number of events that verified before it.
 */
export async function verifyRows(
  rows: AsyncIterable<ChainRow> | Iterable<ChainRow>,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  let expectedSeq = 1;
  let expectedPrev = GENESIS_HASH;
  let count = 0;
  let head: ChainHead | null = null;
  const anchor = options.anchor;
  const fail = (seq: number, reason: string): VerifyResult => ({ ok: false, seq, reason, count });

  for await (const row of rows) {
    if (count === 0 && options.from === 'first') {
      expectedSeq = row.seq;
      expectedPrev = row.prevHash;
    }
    if (row.seq > expectedSeq) {
      return fail(
        expectedSeq,
        `event ${expectedSeq} is missing (the next stored event is ${row.seq}): events were deleted`,
      );
    }
    if (row.seq < expectedSeq) {
      return fail(row.seq, `event ${row.seq} is out of order or duplicated (expected ${expectedSeq})`);
    }
    if (!HASH_PATTERN.test(row.hash) || !HASH_PATTERN.test(row.prevHash)) {
      return fail(row.seq, 'hash or prev_hash is not 64 lowercase hex characters');
    }
    let data: JsonValue;
    if (typeof row.data === 'string') {
      try {
        data = JSON.parse(row.data) as JsonValue;
      } catch {
        return fail(row.seq, 'data is not valid JSON: the event was altered');
      }
    } else {
      data = row.data;
    }
    let recomputed: string;
    try {
      recomputed = eventHash(row.prevHash, { seq: row.seq, time: row.time, type: row.type, data });
    } catch (err) {
      return fail(row.seq, `event cannot be hashed (${(err as Error).message}): the event was altered`);
    }
    if (recomputed !== row.hash) {
      return fail(row.seq, 'hash mismatch: the event was altered (or moved from another position)');
    }
    if (row.prevHash !== expectedPrev) {
      return fail(
        row.seq,
        row.seq === 1 && options.from !== 'first'
          ? 'the first event does not start from the genesis hash'
          : `prev_hash does not match the hash of event ${row.seq - 1}: events were inserted, removed or reordered`,
      );
    }
    if (anchor && row.seq === anchor.seq && row.hash !== anchor.hash) {
      return fail(row.seq, 'event does not match the anchored hash: the chain was rewritten');
    }
    count++;
    head = { seq: row.seq, hash: row.hash };
    expectedSeq = row.seq + 1;
    expectedPrev = row.hash;
  }
  if (anchor && (head === null || head.seq < anchor.seq)) {
    return fail(
      expectedSeq,
      `the chain ends at event ${expectedSeq - 1} but event ${anchor.seq} was anchored: events were removed from the end`,
    );
  }
  return { ok: true, count, head };
}
