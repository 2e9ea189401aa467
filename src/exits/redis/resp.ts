// RESP, the Redis wire format, as far as ciport speaks it on either side: commands encoded as
// arrays of bulk strings (the exit's AUTH/SELECT), and a bounded incremental reader of the
// commands an application sends before it has authenticated (the client's local listener).
// A command is either a RESP array of bulk strings (`*2\r\n$4\r\nAUTH\r\n$3\r\npw1\r\n`, what
// every driver sends) or an inline line (`AUTH pw1\r\n`, what a human types into nc).

/** A command as a RESP array of bulk strings: binary-safe, so any password byte is fine. */
export function redisCommand(...args: string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(arg, 'utf8');
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** A RESP simple error (`-CODE text`); CR and LF cannot occur in one, so they are replaced. */
export function respError(text: string): Buffer {
  return Buffer.from(`-${text.replace(/[\r\n]/g, ' ')}\r\n`);
}

export const RESP_OK = Buffer.from('+OK\r\n');

export interface RespReaderLimits {
  /** Most arguments in one command. */
  maxArgs: number;
  /** Most bytes one command may take on the wire (array header, bulk headers, data, CRLFs). */
  maxCommandBytes: number;
}

export class RespProtocolError extends Error {}

/** One complete command and the bytes it took. */
export interface RespCommand {
  args: Buffer[];
  /** Bytes of the input this command used. */
  size: number;
}

/**
 * The first complete command at the start of `buf`, `undefined` when more bytes are needed, or
 * a RespProtocolError when the bytes cannot be a command within `limits` (Redis itself answers
 * `-ERR Protocol error` and closes). Pure: the caller keeps the buffer.
 */
export function readRespCommand(buf: Buffer, limits: RespReaderLimits): RespCommand | undefined {
  if (buf.length === 0) return undefined;
  return buf[0] === 0x2a ? readArray(buf, limits) : readInline(buf, limits);
}

/** The CRLF-terminated line at `from`, or undefined; too long a line is a protocol error. */
function line(
  buf: Buffer,
  from: number,
  limits: RespReaderLimits,
): { text: string; next: number } | undefined {
  const window = buf.subarray(from, Math.min(buf.length, limits.maxCommandBytes));
  const eol = window.indexOf('\r\n');
  if (eol < 0) {
    if (from + window.length >= limits.maxCommandBytes) {
      throw new RespProtocolError(`a command is longer than ${limits.maxCommandBytes} bytes`);
    }
    return undefined;
  }
  return { text: window.toString('latin1', 0, eol), next: from + eol + 2 };
}

function count(text: string, what: string, max: number): number {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(text))
    throw new RespProtocolError(`invalid ${what} "${text.slice(0, 20)}"`);
  const n = Number(text);
  if (n > max) throw new RespProtocolError(`${what} ${n} is over the limit of ${max}`);
  return n;
}

function readArray(buf: Buffer, limits: RespReaderLimits): RespCommand | undefined {
  const header = line(buf, 0, limits);
  if (!header) return undefined;
  const n = count(header.text.slice(1), 'array length', limits.maxArgs);
  const args: Buffer[] = [];
  let at = header.next;
  for (let i = 0; i < n; i++) {
    const bulk = line(buf, at, limits);
    if (!bulk) return undefined;
    if (!bulk.text.startsWith('$')) throw new RespProtocolError('expected a bulk string');
    const len = count(bulk.text.slice(1), 'bulk length', limits.maxCommandBytes);
    const end = bulk.next + len;
    if (end + 2 > limits.maxCommandBytes) {
      throw new RespProtocolError(`a command is longer than ${limits.maxCommandBytes} bytes`);
    }
    if (buf.length < end + 2) return undefined;
    if (buf[end] !== 0x0d || buf[end + 1] !== 0x0a)
      throw new RespProtocolError('a bulk string lacks its CRLF');
    args.push(buf.subarray(bulk.next, end));
    at = end + 2;
  }
  return { args, size: at };
}

/** Inline: space-separated words on one line (a lone LF ends it too, as in Redis). */
function readInline(buf: Buffer, limits: RespReaderLimits): RespCommand | undefined {
  const window = buf.subarray(0, Math.min(buf.length, limits.maxCommandBytes));
  const eol = window.indexOf('\n');
  if (eol < 0) {
    if (window.length >= limits.maxCommandBytes) {
      throw new RespProtocolError(`a command is longer than ${limits.maxCommandBytes} bytes`);
    }
    return undefined;
  }
  const text = window.toString('latin1', 0, eol).replace(/\r$/, '');
  const words = text.split(/[ \t]+/).filter((w) => w.length > 0);
  if (words.length > limits.maxArgs) throw new RespProtocolError(`more than ${limits.maxArgs} arguments`);
  return { args: words.map((w) => Buffer.from(w, 'latin1')), size: eol + 1 };
}
