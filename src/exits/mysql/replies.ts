// Following the server's replies: which command each reply answers. A MySQL server reads one
// command, answers it completely, then reads the next; a client may send several before reading
// (pipelining), so replies come in the order of the commands and only their framing says where
// one ends. The tracker keeps the commands sent and not yet answered, oldest first, and reads the
// start of every server packet (at most REPLY_HEAD bytes) to follow each reply's shape:
//
//   single      OK, ERR, EOF or a string: COM_PING, COM_INIT_DB, COM_STATISTICS, COM_SET_OPTION,
//               COM_RESET_CONNECTION, COM_STMT_RESET
//   fields      ERR, or column definitions up to an EOF: COM_FIELD_LIST
//   result      COM_QUERY, COM_STMT_EXECUTE: OK | ERR | LOCAL INFILE request | a result set —
//               column count n, n column definitions, an EOF (without CLIENT_DEPRECATE_EOF, or
//               when it opened a cursor: then the reply ends there), rows, and an EOF / OK-with-
//               0xfe / ERR; an OK or end of rows with SERVER_MORE_RESULTS_EXISTS starts another
//   rows        COM_STMT_FETCH: rows up to an EOF / OK-with-0xfe / ERR
//   prepare     COM_STMT_PREPARE: ERR, or PREPARE_OK (statement id, n columns, p parameters)
//               followed by p parameter definitions and n column definitions, each group ended
//               by an EOF unless CLIENT_DEPRECATE_EOF
//
// Sequence ids are checked too: a reply starts at the id after its command's last packet and
// counts up by one. A packet the tracker cannot place (with an honest server: never) makes it
// `lost`; the caller decides what that means (the exit closes the connection).
import { MAX_PAYLOAD } from './packets.js';

export type ReplyShape = 'single' | 'fields' | 'result' | 'rows' | 'prepare';

export const SERVER_MORE_RESULTS_EXISTS = 0x0008;
export const SERVER_STATUS_CURSOR_EXISTS = 0x0040;

/** Bytes of each server packet the tracker reads: an OK's header (1 + 9 + 9 + 2). */
export const REPLY_HEAD = 21;

type State =
  | { at: 'first' }
  | { at: 'start' }
  | { at: 'defs'; left: number }
  | { at: 'meta-eof' }
  | { at: 'rows' }
  | { at: 'skip'; left: number };

interface Expected<T> {
  item: T;
  shape: ReplyShape;
  seq: number;
}

export type ReplyStep<T> =
  | undefined
  /** The first packet of the reply to `item` (the oldest command waiting); `head` is its start. */
  | { answered: T; head: Buffer }
  /** The tracker cannot follow the replies from here on. */
  | { lost: string };

/** The status flags of an EOF (5 bytes) or of an OK (`0x00`/`0xfe`, ≥ 7 bytes). */
export function statusOf(head: Buffer, length: number): number | undefined {
  if (length <= 5) return head.length >= 5 ? head.readUInt16LE(3) : undefined;
  let pos = 1;
  for (let i = 0; i < 2; i++) {
    const first = head[pos];
    if (first === undefined) return undefined;
    pos += first < 0xfb ? 1 : first === 0xfc ? 3 : first === 0xfd ? 4 : first === 0xfe ? 9 : Number.NaN;
  }
  return Number.isNaN(pos) || pos + 2 > head.length ? undefined : head.readUInt16LE(pos);
}

/** A column count (length-encoded, 1 … 2²⁴), or undefined. */
function columnCount(head: Buffer): number | undefined {
  const first = head[0] as number;
  if (first > 0 && first < 0xfb) return first;
  if (first === 0xfc && head.length >= 3) return head.readUInt16LE(1) || undefined;
  if (first === 0xfd && head.length >= 4) return head.readUIntLE(1, 3) || undefined;
  return undefined;
}

/** An EOF, or the OK that replaces it with CLIENT_DEPRECATE_EOF (a row starting 0xfe is ≥ 16 MiB). */
const isEnd = (head: Buffer, length: number) => head[0] === 0xfe && length < MAX_PAYLOAD;

export class ReplyTracker<T> {
  readonly #deprecateEof: boolean;
  #queue: Expected<T>[] = [];
  #head = 0;
  #current: Expected<T> | undefined;
  #state: State = { at: 'first' };
  /** The sequence id the next packet of the current reply must carry (undefined: not checked). */
  #nextSeq: number | undefined;
  lost: string | undefined;

  constructor(deprecateEof: boolean) {
    this.#deprecateEof = deprecateEof;
  }

  /** Commands waiting for (the rest of) their reply. */
  get waiting(): number {
    return this.#queue.length - this.#head + (this.#current ? 1 : 0);
  }

  /** A command was sent whose reply has `shape`; its last packet had sequence id `lastSeq`. */
  expect(item: T, shape: ReplyShape, lastSeq: number): void {
    this.#queue.push({ item, shape, seq: (lastSeq + 1) & 0xff });
  }

  /** The commands not answered at all, oldest first (the tracker forgets them). */
  drain(): T[] {
    const out = this.#queue.slice(this.#head).map((e) => e.item);
    this.#queue = [];
    this.#head = 0;
    this.#current = undefined;
    return out;
  }

  /** One server packet: its sequence id, its first bytes, its length; pieces of a 16 MiB one. */
  packet(seq: number, head: Buffer, length: number, continuation: boolean): ReplyStep<T> {
    if (this.lost) return undefined;
    if (continuation) {
      if (this.#current) return this.#sequence(seq) ?? undefined;
      return undefined;
    }
    let answered: T | undefined;
    if (!this.#current) {
      // Nothing asked: a server's goodbye (an ERR before it closes an idle connection).
      if (this.#head >= this.#queue.length) return undefined;
      const next = this.#queue[this.#head++] as Expected<T>;
      if (this.#head > 64 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      this.#current = next;
      this.#state = { at: 'first' };
      this.#nextSeq = next.seq;
      answered = next.item;
    }
    const wrongSeq = this.#sequence(seq);
    if (wrongSeq) return wrongSeq;
    const step = this.#step(this.#current.shape, head, length);
    if (step === 'lost') return this.#lose(`a reply packet 0x${(head[0] ?? 0).toString(16)} out of place`);
    if (step === 'done') this.#current = undefined;
    return answered === undefined ? undefined : { answered, head };
  }

  #sequence(seq: number): { lost: string } | undefined {
    if (this.#nextSeq !== undefined && seq !== this.#nextSeq) {
      return this.#lose(`a reply packet with sequence id ${seq} where ${this.#nextSeq} was due`);
    }
    this.#nextSeq = (seq + 1) & 0xff;
    return undefined;
  }

  #lose(why: string): { lost: string } {
    this.lost = why;
    return { lost: why };
  }

  /** Advance the current reply by one packet. */
  #step(shape: ReplyShape, head: Buffer, length: number): 'more' | 'done' | 'lost' {
    const s = this.#state;
    const first = head[0];
    if (s.at === 'first') {
      switch (shape) {
        case 'single':
          return 'done';
        case 'fields':
          if (first === 0xff || isEnd(head, length)) return 'done';
          this.#state = { at: 'rows' };
          return 'more';
        case 'rows':
          this.#state = { at: 'rows' };
          return this.#rows(head, length);
        case 'prepare': {
          if (first === 0xff) return 'done';
          if (first !== 0x00 || head.length < 9) return 'lost';
          const columns = head.readUInt16LE(5);
          const params = head.readUInt16LE(7);
          const eofs = this.#deprecateEof ? 0 : Number(params > 0) + Number(columns > 0);
          const left = columns + params + eofs;
          if (left === 0) return 'done';
          this.#state = { at: 'skip', left };
          return 'more';
        }
        case 'result':
          this.#state = { at: 'start' };
          return this.#start(head, length);
      }
    }
    switch (s.at) {
      case 'start':
        return this.#start(head, length);
      case 'defs':
        if (first === 0xff) return 'done';
        s.left--;
        if (s.left === 0) this.#state = this.#deprecateEof ? { at: 'rows' } : { at: 'meta-eof' };
        return 'more';
      case 'meta-eof': {
        if (first === 0xff) return 'done';
        if (!isEnd(head, length)) return 'lost';
        const status = statusOf(head, length);
        if (status === undefined) return 'lost';
        // A cursor was opened (COM_STMT_EXECUTE): its rows come with COM_STMT_FETCH.
        if (status & SERVER_STATUS_CURSOR_EXISTS) return this.#next(status);
        this.#state = { at: 'rows' };
        return 'more';
      }
      case 'rows':
        return this.#rows(head, length);
      case 'skip':
        s.left--;
        return s.left === 0 ? 'done' : 'more';
      default:
        return 'lost';
    }
  }

  /** The start of one result of a `result` reply. */
  #start(head: Buffer, length: number): 'more' | 'done' | 'lost' {
    const first = head[0];
    if (first === 0xff) return 'done';
    if (first === 0x00) {
      const status = statusOf(head, length);
      return status === undefined ? 'lost' : this.#next(status);
    }
    if (first === 0xfb) {
      // LOCAL INFILE request (never negotiated through a port): the application's file packets
      // come between this and the server's OK, so the sequence ids are not ours to check.
      this.#nextSeq = undefined;
      return 'more';
    }
    const n = columnCount(head);
    if (n === undefined) return 'lost';
    this.#state = { at: 'defs', left: n };
    return 'more';
  }

  #rows(head: Buffer, length: number): 'more' | 'done' | 'lost' {
    if (head[0] === 0xff) return 'done';
    if (!isEnd(head, length)) return 'more';
    const status = statusOf(head, length);
    return status === undefined ? 'lost' : this.#next(status);
  }

  /** After an OK or the end of a result set: another result follows, or the reply is over. */
  #next(status: number): 'more' | 'done' {
    if (!(status & SERVER_MORE_RESULTS_EXISTS)) return 'done';
    this.#state = { at: 'start' };
    return 'more';
  }
}
