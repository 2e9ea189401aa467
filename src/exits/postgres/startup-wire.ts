// The first frame on a postgres tunnel stream: what the local listener learned from the
// application's startup (its parameters) or a CancelRequest to forward. The exit reads it before
// anything else; after it the stream carries plain PostgreSQL protocol both ways.
//
//   offset 0  4 bytes   "CIPG"
//          4  1 byte    version, 1
//          5  uint32BE  length N of the payload (≤ MAX_STARTUP_FRAME_PAYLOAD)
//          9  N bytes   UTF-8 JSON: {"kind":"startup","params":{"user":"…","database":"…",…}}
//                                or {"kind":"cancel","processId":123,"secretKey":-456}
//
// The exit must not trust it: it comes from the job's machine. It is only parsed (bounded,
// validated) here; which parameters reach the upstream is decided by the exit (upstream.ts).
import type { Readable } from 'node:stream';
import { decodeJsonFrame, encodeJsonFrame, readJsonFrame } from '../json-frame.js';
import { PgError } from './errors.js';
import { MessageReader } from './messages.js';

export type PgStartup =
  | { kind: 'startup'; params: Record<string, string> }
  | { kind: 'cancel'; processId: number; secretKey: number };

/** Bound on the JSON payload. PostgreSQL's own startup packet is at most 10 000 bytes. */
export const MAX_STARTUP_FRAME_PAYLOAD = 32 * 1024;

function bad(message: string): PgError {
  return new PgError('CIPORT_E_PG_PROTOCOL', '08P01', `postgres stream header: ${message}`);
}

const FRAME = { magic: Buffer.from('CIPG'), version: 1, maxPayload: MAX_STARTUP_FRAME_PAYLOAD, bad };

const isInt32 = (n: unknown): n is number =>
  Number.isInteger(n) && (n as number) >= -(2 ** 31) && (n as number) < 2 ** 31;

function validate(value: unknown): PgStartup {
  if (typeof value !== 'object' || value === null) throw bad('not an object');
  const v = value as Record<string, unknown>;
  if (v.kind === 'cancel') {
    if (!isInt32(v.processId) || !isInt32(v.secretKey)) throw bad('cancel key is not two int32 values');
    return { kind: 'cancel', processId: v.processId, secretKey: v.secretKey };
  }
  if (v.kind !== 'startup') throw bad('unknown kind');
  if (typeof v.params !== 'object' || v.params === null || Array.isArray(v.params))
    throw bad('params missing');
  const params: Record<string, string> = Object.create(null);
  for (const [key, val] of Object.entries(v.params as Record<string, unknown>)) {
    if (key === '' || key.includes('\0') || typeof val !== 'string' || val.includes('\0')) {
      throw bad('params must map non-empty names to strings without NUL');
    }
    params[key] = val;
  }
  return { kind: 'startup', params };
}

export function encodeStartupFrame(startup: PgStartup): Buffer {
  const body =
    startup.kind === 'cancel'
      ? { kind: 'cancel', processId: startup.processId, secretKey: startup.secretKey }
      : { kind: 'startup', params: startup.params };
  return encodeJsonFrame(FRAME, validate(body));
}

/** Decode one whole frame (header + payload). */
export function decodeStartupFrame(frame: Buffer): PgStartup {
  return validate(decodeJsonFrame(FRAME, frame));
}

/**
 * Read the frame from the start of a stream. Bytes after it stay in the stream (paused) for the
 * relay. Fails with CIPORT_E_PG_PROTOCOL on a bad frame, a closed stream or after `timeoutMs`.
 */
export async function readStartupFrame(stream: Readable, timeoutMs = 10_000): Promise<PgStartup> {
  const reader = new MessageReader(stream, (why, detail) =>
    why === 'timeout' ? bad(`not received: ${detail}`) : bad(`${why}: ${detail}`),
  );
  try {
    return decodeStartupFrame(await readJsonFrame(FRAME, (n, ms) => reader.read(n, ms), timeoutMs));
  } finally {
    reader.release();
  }
}
