// The first frame of a database tunnel stream (postgres startup-wire.ts, mysql connect-wire.ts):
// what the job's local listener learned from the application, for the exit.
//
//   offset 0  4 bytes   magic ("CIPG", "CIMY")
//          4  1 byte    version
//          5  uint32BE  length N of the payload (≤ the protocol's bound)
//          9  N bytes   UTF-8 JSON, validated by the protocol
//
// It comes from the job's machine: bounded, read with a deadline, parsed here; each protocol
// validates the parsed value.

export const JSON_FRAME_HEADER = 9;

export interface JsonFrameSpec {
  magic: Buffer;
  version: number;
  maxPayload: number;
  /** The protocol's error for a bad frame. */
  bad(message: string): Error;
}

export function encodeJsonFrame(spec: JsonFrameSpec, body: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(body));
  if (payload.length > spec.maxPayload) throw spec.bad(`${payload.length} bytes exceed the bound`);
  const head = Buffer.allocUnsafe(JSON_FRAME_HEADER);
  spec.magic.copy(head, 0);
  head.writeUInt8(spec.version, 4);
  head.writeUInt32BE(payload.length, 5);
  return Buffer.concat([head, payload]);
}

function checkMagic(spec: JsonFrameSpec, head: Buffer): void {
  if (head.length < JSON_FRAME_HEADER || !head.subarray(0, 4).equals(spec.magic)) {
    throw spec.bad(`missing ${spec.magic.toString('latin1')} magic`);
  }
}

/** The payload length a header announces; throws on an oversized payload. */
function payloadLength(spec: JsonFrameSpec, head: Buffer): number {
  const n = head.readUInt32BE(5);
  if (n > spec.maxPayload) throw spec.bad(`${n} bytes exceed the bound`);
  return n;
}

/** Parse one whole frame (header + payload) into its JSON value, not yet validated. */
export function decodeJsonFrame(spec: JsonFrameSpec, frame: Buffer): unknown {
  checkMagic(spec, frame);
  if (frame[4] !== spec.version) throw spec.bad(`unsupported version ${frame[4]}`);
  if (frame.length !== JSON_FRAME_HEADER + payloadLength(spec, frame)) throw spec.bad('length mismatch');
  try {
    return JSON.parse(frame.toString('utf8', JSON_FRAME_HEADER));
  } catch {
    throw spec.bad('payload is not JSON');
  }
}

/** Read one whole frame with `read` (n bytes within a deadline); the payload read is bounded. */
export async function readJsonFrame(
  spec: JsonFrameSpec,
  read: (n: number, timeoutMs: number) => Promise<Buffer>,
  timeoutMs: number,
): Promise<Buffer> {
  const deadline = Date.now() + timeoutMs;
  const head = await read(JSON_FRAME_HEADER, timeoutMs);
  checkMagic(spec, head);
  const payload = await read(payloadLength(spec, head), Math.max(1, deadline - Date.now()));
  return Buffer.concat([head, payload]);
}

/**
 * The frame at the start of a stream observed chunk by chunk (the gateway watching a stream it
 * relays to an agent): `push` answers `pending` until the frame is whole, then the frame and
 * the bytes after it; `invalid` for an oversized announcement. Holds at most the frame.
 */
export class JsonFrameCollector {
  readonly #maxPayload: number;
  #chunks: Buffer[] = [];
  #bytes = 0;
  #length: number | undefined;

  constructor(maxPayload: number) {
    this.#maxPayload = maxPayload;
  }

  push(chunk: Buffer): 'pending' | 'invalid' | { frame: Buffer; rest: Buffer } {
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    if (this.#length === undefined) {
      if (this.#bytes < JSON_FRAME_HEADER) return 'pending';
      const head = Buffer.concat(this.#chunks);
      this.#chunks = [head];
      const n = head.readUInt32BE(5);
      if (n > this.#maxPayload) {
        this.#chunks = [];
        return 'invalid';
      }
      this.#length = JSON_FRAME_HEADER + n;
    }
    if (this.#bytes < this.#length) return 'pending';
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [];
    return { frame: all.subarray(0, this.#length), rest: all.subarray(this.#length) };
  }
}
