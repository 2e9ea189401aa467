// Query events for a MySQL connection after its handshake. A streaming scanner follows the
// packet framing of each direction, keeping at most a bounded prefix of the packets it cares
// about; everything else (result sets, execute parameters) is counted and skipped, never
// buffered.
//
// Application → server: a command is a packet with sequence id 0 that does not continue a
// 16 MiB packet. COM_QUERY and COM_STMT_PREPARE give their text, COM_INIT_DB a `USE` statement,
// COM_STMT_EXECUTE the text of the statement it runs (never its parameter values); commands
// that would act unaudited or as someone else (COM_CHANGE_USER, …) and statements that would
// switch the connection to a character set the audit cannot read are refused (violation).
//
// Server → application: the replies, followed command by command (replies.ts). A command is
// reported when its reply begins — with `outcome: 'ok'` or `'error'` — so a command the server
// never read (it dropped the connection first) is never reported as answered; what is still
// unanswered when the connection ends is reported then, `outcome: 'unanswered'` (a statement
// cut while it ran, or one the server never read). Execute events resolve their statement id
// when their reply begins: each COM_STMT_PREPARE_OK is paired with its own prepare.
import { scrubText } from '../../audit/redact.js';
import type { QueryEvent } from '../query-event.js';
import { CharsetScan, type CharsetStatement, charsetStatement, collationClass } from './charset.js';
import { MysqlError } from './errors.js';
import { Cap, Command, MAX_PAYLOAD, RELAYED_COMMANDS } from './packets.js';
import {
  REPLY_HEAD,
  type ReplyShape,
  ReplyTracker,
  SERVER_MORE_RESULTS_EXISTS,
  statusOf,
} from './replies.js';

/** A QueryEvent (the audit takes it as is) plus the MySQL command it came from. */
export interface MysqlQueryEvent extends QueryEvent {
  command: 'query' | 'prepare' | 'execute' | 'init_db';
}

/**
 * Called when a packet ends with what was kept of it. `offset`: where its payload starts in the
 * chunk being pushed, when the whole payload is in that chunk (valid during the call only).
 */
export type PacketHandler = (
  seq: number,
  prefix: Buffer,
  length: number,
  continuation: boolean,
  offset: number | undefined,
) => void;

/** Payload bytes of the current packet, as they pass (`chunk[from..to)`). */
export type BodyHandler = (chunk: Buffer, from: number, to: number) => void;

/** Follows packet framing; hands each packet's kept prefix to `onPacket` when the packet ends. */
export class PacketScanner {
  readonly #head = Buffer.alloc(4);
  #headFill = 0;
  #remaining = 0;
  #length = 0;
  #seq = 0;
  #continuation = false;
  #capture: Buffer | undefined;
  #captured = 0;
  /** Offset of the current packet's payload in the chunk being pushed, when all of it is there. */
  #wholeAt: number | undefined;
  /**
   * Where the current packet's header began in the chunk being pushed (0 when it began in an
   * earlier chunk): what comes before it in this chunk belongs to earlier packets.
   */
  headerAt = 0;
  #want: (seq: number, continuation: boolean, length: number) => number;
  #onPacket: PacketHandler;
  #onBody: BodyHandler | undefined;

  constructor(
    want: (seq: number, continuation: boolean, length: number) => number,
    onPacket: PacketHandler,
    onBody?: BodyHandler,
  ) {
    this.#want = want;
    this.#onPacket = onPacket;
    this.#onBody = onBody;
  }

  push(chunk: Buffer): void {
    let i = 0;
    // A header split across chunks began in the previous one.
    this.headerAt = 0;
    while (i < chunk.length) {
      if (this.#remaining === 0 && this.#headFill < 4) {
        if (this.#headFill === 0) this.headerAt = i;
        const n = Math.min(4 - this.#headFill, chunk.length - i);
        chunk.copy(this.#head, this.#headFill, i, i + n);
        this.#headFill += n;
        i += n;
        if (this.#headFill < 4) return;
        this.#start(chunk.length - i >= this.#head.readUIntLE(0, 3) ? i : undefined);
        continue;
      }
      const n = Math.min(this.#remaining, chunk.length - i);
      if (this.#capture && this.#captured < this.#capture.length) {
        const take = Math.min(n, this.#capture.length - this.#captured);
        chunk.copy(this.#capture, this.#captured, i, i + take);
        this.#captured += take;
      }
      this.#onBody?.(chunk, i, i + n);
      this.#remaining -= n;
      i += n;
      if (this.#remaining === 0) this.#end();
    }
  }

  #start(wholeAt: number | undefined): void {
    this.#wholeAt = wholeAt;
    this.#length = this.#head.readUIntLE(0, 3);
    this.#seq = this.#head[3] as number;
    this.#remaining = this.#length;
    const want = Math.min(this.#want(this.#seq, this.#continuation, this.#length), this.#length);
    this.#capture = want > 0 ? Buffer.allocUnsafe(want) : undefined;
    this.#captured = 0;
    if (this.#remaining === 0) this.#end();
  }

  #end(): void {
    const prefix = this.#capture ? this.#capture.subarray(0, this.#captured) : Buffer.alloc(0);
    this.#capture = undefined;
    this.#headFill = 0;
    const continuation = this.#continuation;
    this.#continuation = this.#length === MAX_PAYLOAD;
    this.#onPacket(this.#seq, prefix, this.#length, continuation, this.#wholeAt);
  }
}

/** Cut `buf` to at most `max` bytes without splitting a UTF-8 sequence. */
function utf8Prefix(buf: Buffer, max: number): string {
  if (buf.length <= max) return buf.toString('utf8');
  let end = max;
  while (end > 0 && ((buf[end] as number) & 0xc0) === 0x80) end--;
  return buf.toString('utf8', 0, end);
}

/** The bytes as hex, password literals first scrubbed (the audit's scrubber cannot read hex). */
function hexOf(buf: Buffer, max: number): string {
  const latin1 = buf.toString('latin1', 0, Math.min(buf.length, max));
  return Buffer.from(scrubText(latin1), 'latin1').toString('hex');
}

export interface MysqlQueryObserverOptions {
  /** Absent: no events, only the guards (refused commands, character set) and reply tracking. */
  onQuery?: ((event: MysqlQueryEvent) => void) | undefined;
  /** Longest statement text kept, in UTF-8 bytes (default 4096). */
  maxQueryLength?: number | undefined;
  /** Prepared statements remembered per connection for COM_STMT_EXECUTE (default 1024). */
  maxStatements?: number | undefined;
  /**
   * The upstream thread id of a connection the application knows by the listener's id (same
   * session), for rewriting `KILL [QUERY|CONNECTION] <listener's id>` (see `rewrites`).
   */
  killTarget?: ((localId: number) => number | undefined) | undefined;
  /**
   * The capabilities the connection negotiated: given, the server's replies are followed (the
   * shape of a prepare's reply depends on CLIENT_DEPRECATE_EOF) and commands are reported when
   * answered. Absent (the local listener's guard): no reply tracking, no events.
   */
  capabilities?: number | undefined;
  /** The handshake's collation: a UTF-8 one (charset.ts) starts the connection verified. */
  collation?: number | undefined;
  /**
   * The replies could not be followed (replies.ts). Absent (a passive observer): the commands
   * not yet answered are reported unanswered, and later ones when sent, without an outcome.
   */
  onLost?: ((why: string) => void) | undefined;
  /** Commands sent and not answered before `room()` asks to wait (default 1024). */
  maxWaiting?: number | undefined;
  /** Statement bytes they hold before `room()` asks to wait (default 1 MiB). */
  maxWaitingBytes?: number | undefined;
}

/** A same-length byte replacement in the chunk last pushed to `app`. */
export interface Rewrite {
  offset: number;
  bytes: Buffer;
}

/** `KILL 123`, `KILL QUERY 123`, `KILL CONNECTION 123;` — the whole statement, nothing else. */
const KILL_RE = /^(\s*KILL\s+(?:(?:QUERY|CONNECTION)\s+)?)(\d{1,10})\s*;?\s*$/i;
const MAX_KILL_TEXT = 64;
/** Bytes kept of every command, events or not: enough for the KILL and character-set checks. */
const GUARD_BYTES = 160;
/** MariaDB: COM_STMT_EXECUTE/CLOSE/… of statement id -1 mean the statement prepared last. */
const LAST_PREPARED = 0xffffffff;

/** A statement as the audit shows it (text, or hex when the character set was not sure). */
interface Statement {
  text: string;
  truncated: boolean;
  hex: boolean;
  /** Running it may change the character set. */
  taint: boolean;
}

/** A command sent, from its last packet until it is answered (or the connection ends). */
interface Sent {
  cmd: number;
  at: number;
  /** The kept start of its payload, command byte excluded. */
  body: Buffer;
  length: number;
  nonAscii: boolean;
  /** It mentions a word that can change the character set, or runs dynamic SQL. */
  taint: boolean;
  /** A plain session `SET NAMES <UTF-8 set>`: verifies the set once answered OK. */
  verifies: boolean;
  /** Replies expected: false for COM_STMT_CLOSE (applied in order, when reached). */
  replied: boolean;
}

/** A command whose packets are arriving. */
interface Current {
  cmd: number;
  body: Buffer;
  length: number;
  scan: CharsetScan | undefined;
  /** It is nothing but a statement setting the character set (charset.ts). */
  set: CharsetStatement | undefined;
}

const SHAPES: Partial<Record<number, ReplyShape>> = {
  [Command.INIT_DB]: 'single',
  [Command.QUERY]: 'result',
  [Command.FIELD_LIST]: 'fields',
  [Command.STATISTICS]: 'single',
  [Command.PING]: 'single',
  [Command.STMT_PREPARE]: 'prepare',
  [Command.STMT_EXECUTE]: 'result',
  [Command.STMT_RESET]: 'single',
  [Command.SET_OPTION]: 'single',
  [Command.STMT_FETCH]: 'rows',
  [Command.RESET_CONNECTION]: 'single',
};

export class MysqlQueryObserver {
  readonly #onQuery: ((event: MysqlQueryEvent) => void) | undefined;
  readonly #max: number;
  readonly #maxStatements: number;
  readonly #statements = new Map<number, Statement>();
  #lastPrepared: number | undefined;
  readonly app: PacketScanner;
  readonly server: PacketScanner;
  /** The command byte of the application's last command (COM_QUIT: it said goodbye). */
  lastCommand = -1;
  /** Set when the application sent a command that must not reach the upstream. */
  violation: string | undefined;
  /** The error the application gets for the violation (its message is `violation`). */
  violationError: MysqlError | undefined;
  /**
   * Where the refused packet began in the chunk last pushed to `app`: the bytes before it are
   * earlier, complete commands, to be forwarded; nothing from it on is.
   */
  violationAt = 0;
  /** KILL statements to rewrite in the chunk just pushed to `app`; the caller applies and clears. */
  readonly rewrites: Rewrite[] = [];
  readonly #killTarget: ((localId: number) => number | undefined) | undefined;
  readonly #tracker: ReplyTracker<Sent> | undefined;
  readonly #onLost: ((why: string) => void) | undefined;
  /** Sent and not yet answered (or applied), oldest first; `#tracker` has the replied ones. */
  #sent: Sent[] = [];
  #sentHead = 0;
  #waitingBytes = 0;
  readonly #maxWaiting: number;
  readonly #maxWaitingBytes: number;
  #roomWaiters: (() => void)[] = [];
  /** The replies could not be followed: commands are reported when sent. */
  #atSend = false;
  #finished = false;
  /** The server reads statements as UTF-8 (a pinned set), as far as the replies so far say. */
  #verified: boolean;
  /** The command whose packets are arriving. */
  #cur: Current | undefined;
  #firstByte = false;

  constructor(options: MysqlQueryObserverOptions = {}) {
    this.#onQuery = options.onQuery;
    this.#max = options.maxQueryLength ?? 4096;
    this.#maxStatements = options.maxStatements ?? 1024;
    this.#killTarget = options.killTarget;
    this.#onLost = options.onLost;
    this.#maxWaiting = options.maxWaiting ?? 1024;
    this.#maxWaitingBytes = options.maxWaitingBytes ?? 1024 * 1024;
    this.#verified = options.collation === undefined || collationClass(options.collation) === 'utf8';
    const tracked = options.capabilities !== undefined;
    this.#tracker = tracked
      ? new ReplyTracker<Sent>(((options.capabilities as number) & Cap.DEPRECATE_EOF) !== 0)
      : undefined;
    const commandBytes = Math.max(this.#onQuery && tracked ? this.#max + 2 : 0, GUARD_BYTES);
    this.app = new PacketScanner(
      (seq, continuation) => {
        if (this.violation || this.#finished) return 0;
        // After the handshake an application sends commands (sequence id 0) and the pieces of a
        // 16 MiB one; anything else (out of order for the server, which then drops the
        // connection) or anything after COM_QUIT would never run, yet read as a command here.
        if (!continuation && seq !== 0) {
          this.#refuse(`a packet out of sequence (id ${seq}) where a command was due`);
          return 0;
        }
        if (!continuation && this.lastCommand === Command.QUIT) {
          this.#refuse('data after COM_QUIT');
          return 0;
        }
        if (continuation) return 0;
        this.#cur = undefined;
        this.#firstByte = true;
        return commandBytes;
      },
      (seq, prefix, length, continuation, offset) => {
        if (this.violation || this.#finished) return;
        if (!continuation) {
          if (prefix.length === 0) {
            // No command byte: the server answers with an ERR nobody would wait for, which would
            // shift every later reply onto the wrong command.
            this.#refuse('an empty packet where a command was due');
            return;
          }
          this.#command(prefix, length);
          if (this.violation) return;
          if (offset !== undefined && prefix[0] === Command.QUERY && length <= MAX_KILL_TEXT + 1) {
            this.#kill(prefix.subarray(1), offset + 1);
          }
        } else if (this.#cur) {
          this.#cur.length += length;
        }
        // The command's last piece: its reply starts with the next sequence id.
        if (length < MAX_PAYLOAD && this.#cur) this.#sentCommand(this.#cur, seq);
      },
      (chunk, from, to) => {
        if (this.#firstByte) {
          this.#firstByte = false;
          const cmd = chunk[from] as number;
          this.#cur = {
            cmd,
            body: Buffer.alloc(0),
            length: 0,
            set: undefined,
            scan: cmd === Command.QUERY || cmd === Command.STMT_PREPARE ? new CharsetScan() : undefined,
          };
          from++;
        }
        this.#cur?.scan?.push(chunk, from, to);
      },
    );
    this.server = new PacketScanner(
      (_seq, continuation) => (this.#tracker && !continuation ? REPLY_HEAD : 0),
      (seq, head, length, continuation) => this.#serverPacket(seq, head, length, continuation),
    );
  }

  /**
   * The application's `KILL … <id>` names a connection by the id the local listener gave it;
   * upstream that is another number. Rewritten in place, same length (zero-padded: `KILL QUERY
   * 0000000042` is valid SQL), so only a statement wholly inside one chunk can be rewritten;
   * anything else goes through unchanged and names no thread (listener ids are ≥ 2³¹).
   */
  #kill(text: Buffer, offset: number): void {
    if (!this.#killTarget) return;
    const m = KILL_RE.exec(text.toString('latin1'));
    if (!m) return;
    const digits = m[2] as string;
    const target = this.#killTarget(Number(digits));
    if (target === undefined) return;
    const replacement = String(target).padStart(digits.length, '0');
    if (replacement.length !== digits.length) return;
    this.rewrites.push({
      offset: offset + (m[1] as string).length,
      bytes: Buffer.from(replacement, 'latin1'),
    });
  }

  /** Stop here: the packet that begins at `app.headerAt` and everything after it is refused. */
  #refuse(why: string, error?: MysqlError): void {
    this.violation = why;
    this.violationError = error ?? new MysqlError('CIPORT_E_MYSQL_PROTOCOL', 1043, '08S01', why);
    this.violationAt = this.app.headerAt;
    this.#cur = undefined;
  }

  /** The first packet of a command ended: check it, keep its start. */
  #command(prefix: Buffer, length: number): void {
    const cmd = prefix[0] as number;
    this.lastCommand = cmd;
    if (cmd === Command.CHANGE_USER) {
      this.#refuse('COM_CHANGE_USER is not allowed through a ciport port (the exit injects the identity)');
      return;
    }
    if (!RELAYED_COMMANDS.has(cmd)) {
      this.#refuse(
        `command 0x${cmd.toString(16).padStart(2, '0')} is not relayed by a ciport port (it would run without a query event); use SQL`,
      );
      return;
    }
    const body = prefix.subarray(1);
    let set: CharsetStatement | undefined;
    // Only statements every observer keeps whole (GUARD_BYTES), so that an agent's exit and the
    // gateway watching its stream refuse the same ones; longer ones are left to the taint scan.
    if ((cmd === Command.QUERY || cmd === Command.STMT_PREPARE) && length <= GUARD_BYTES) {
      set = charsetStatement(body);
      if (set?.verdict === 'refused') {
        const why = `"${body.toString('latin1')}" is refused: through a ciport port the client character set stays UTF-8 (utf8mb4, utf8mb3), ascii, binary or a single-byte one like latin1, which the audit can read as the server does; use utf8mb4`;
        this.#refuse(why, new MysqlError('CIPORT_E_MYSQL_CHARSET', 1115, '42000', why));
        return;
      }
    }
    if (this.#cur?.cmd === cmd) {
      this.#cur.body = body;
      this.#cur.length = length;
      this.#cur.set = set;
    }
  }

  /** All of a command is in: it waits for its reply (or is applied, when it has none). */
  #sentCommand(cur: Current, lastSeq: number): void {
    this.#cur = undefined;
    const { cmd, body, length, set } = cur;
    cur.scan?.end();
    const sent: Sent = {
      cmd,
      at: Date.now(),
      body,
      length,
      nonAscii: cur.scan?.nonAscii ?? false,
      // A UTF-8 set named outright changes nothing the audit cares about.
      taint: set !== undefined ? set.verdict !== 'utf8' : (cur.scan?.taint ?? false),
      verifies: cmd === Command.QUERY && set !== undefined && set.verdict === 'utf8' && set.session,
      replied: SHAPES[cmd] !== undefined,
    };
    if (cmd === Command.INIT_DB) sent.nonAscii = body.some((b) => b >= 0x80);
    if (cmd === Command.QUIT || cmd === Command.STMT_SEND_LONG_DATA) return;
    if (!this.#tracker || this.#atSend) {
      this.#apply(sent, undefined);
      return;
    }
    if (!sent.replied && this.waiting === 0) {
      // Nothing before it waits for a reply: it takes effect now (no reply would ever let a
      // queue of them go, and the relay waits while too many are queued).
      this.#apply(sent, undefined);
      return;
    }
    if (sent.replied) this.#tracker.expect(sent, SHAPES[cmd] as ReplyShape, lastSeq);
    this.#sent.push(sent);
    this.#waitingBytes += body.length;
  }

  #serverPacket(seq: number, head: Buffer, length: number, continuation: boolean): void {
    if (!this.#tracker || this.#finished || this.#atSend) return;
    // A passive observer sees the exit's refusal (an ERR of its own) among the replies: what
    // still waits is unanswered as far as it can tell. An exit's upstream stays pure.
    if (this.violation && !this.#onLost) return;
    const step = this.#tracker.packet(seq, head, length, continuation);
    if (!step) return;
    if ('lost' in step) {
      if (this.#onLost) {
        this.#onLost(step.lost);
        return;
      }
      // A passive observer cannot stop the connection: report what is pending, then each
      // command when it is sent (as before replies were followed).
      this.#drain('unanswered');
      this.#atSend = true;
      return;
    }
    // Commands without a reply sent before this one take effect first, in order.
    while (this.#sentHead < this.#sent.length) {
      const next = this.#sent[this.#sentHead++] as Sent;
      this.#waitingBytes -= next.body.length;
      if (next === step.answered) break;
      this.#apply(next, undefined);
    }
    if (this.#sentHead > 64 && this.#sentHead * 2 > this.#sent.length) {
      this.#sent = this.#sent.slice(this.#sentHead);
      this.#sentHead = 0;
    }
    this.#apply(step.answered, head, length);
    this.#wake();
  }

  /**
   * A command reached its end for the audit: answered (`head`: its reply's first packet),
   * unanswered (`head` null) or, after the replies were lost, sent (`head` undefined).
   */
  #apply(s: Sent, head: Buffer | null | undefined, length = 0): void {
    const outcome: MysqlQueryEvent['outcome'] =
      head === undefined ? undefined : head === null ? 'unanswered' : head[0] === 0xff ? 'error' : 'ok';
    const ok = head ? head[0] !== 0xff : false;
    const truncated = s.length - 1 > this.#max;
    switch (s.cmd) {
      case Command.QUERY:
        this.#emit(this.#statement(s, truncated), s, 'simple', 'query', outcome);
        break;
      case Command.STMT_PREPARE: {
        const stmt = this.#statement(s, truncated);
        this.#emit(stmt, s, 'extended', 'prepare', outcome);
        if (head && ok && head.length >= 5) {
          const id = head.readUInt32LE(1);
          this.#statements.delete(id);
          this.#statements.set(id, stmt);
          if (this.#statements.size > this.#maxStatements)
            this.#statements.delete(this.#statements.keys().next().value as number);
          this.#lastPrepared = id;
        } else if (head !== undefined) {
          this.#lastPrepared = undefined;
        }
        break;
      }
      case Command.STMT_EXECUTE: {
        const stmt = s.body.length >= 4 ? this.#statementById(s.body.readUInt32LE(0)) : undefined;
        // Unknown (forgotten, or not known here): it may run anything, a SET NAMES included.
        if (!stmt || stmt.taint) this.#verified = false;
        if (stmt) this.#emit(stmt, s, 'extended', 'execute', outcome);
        break;
      }
      case Command.STMT_CLOSE:
        if (s.body.length >= 4) {
          const id = s.body.readUInt32LE(0);
          const known = id === LAST_PREPARED ? this.#lastPrepared : id;
          if (known !== undefined) this.#statements.delete(known);
          if (known === this.#lastPrepared) this.#lastPrepared = undefined;
        }
        break;
      case Command.INIT_DB: {
        const hex = s.nonAscii && !this.#verified;
        const text = hex
          ? hexOf(s.body, this.#max)
          : `USE \`${utf8Prefix(s.body, this.#max).replaceAll('`', '``')}\``;
        this.#emit({ text, truncated, hex, taint: false }, s, 'simple', 'init_db', outcome);
        break;
      }
      case Command.RESET_CONNECTION:
        if (ok || head === undefined) {
          this.#statements.clear();
          this.#lastPrepared = undefined;
        }
        // MariaDB restores the handshake's set; MySQL may take the server's default.
        this.#verified = false;
        break;
    }
    if (s.taint && s.cmd !== Command.STMT_PREPARE) this.#verified = false;
    if (
      s.verifies &&
      head &&
      head[0] === 0x00 &&
      !((statusOf(head, length) ?? SERVER_MORE_RESULTS_EXISTS) & SERVER_MORE_RESULTS_EXISTS)
    ) {
      this.#verified = true;
    }
  }

  /** Statement text as the server reads it, or the bytes in hex when the set is not sure. */
  #statement(s: Sent, truncated: boolean): Statement {
    const hex = s.nonAscii && (s.taint || !this.#verified);
    const text = hex ? hexOf(s.body, this.#max) : utf8Prefix(s.body, this.#max);
    return { text, truncated, hex, taint: s.taint };
  }

  #statementById(id: number): Statement | undefined {
    const known = id === LAST_PREPARED ? this.#lastPrepared : id;
    return known === undefined ? undefined : this.#statements.get(known);
  }

  #emit(
    stmt: Statement,
    s: Sent,
    protocol: QueryEvent['protocol'],
    command: MysqlQueryEvent['command'],
    outcome: MysqlQueryEvent['outcome'],
  ): void {
    if (!this.#onQuery) return;
    const event: MysqlQueryEvent = {
      type: 'query',
      text: stmt.text,
      truncated: stmt.truncated,
      protocol,
      command,
    };
    event.at = s.at;
    if (outcome) event.outcome = outcome;
    if (stmt.hex) event.encoding = 'hex';
    try {
      this.#onQuery(event);
    } catch {
      // An observer must never break the connection.
    }
  }

  /** Report every command still waiting, in order, with `head` (null: unanswered). */
  #drain(_why: 'unanswered'): void {
    this.#tracker?.drain();
    while (this.#sentHead < this.#sent.length) {
      const s = this.#sent[this.#sentHead++] as Sent;
      this.#apply(s, s.replied ? null : undefined);
    }
    this.#sent = [];
    this.#sentHead = 0;
    this.#waitingBytes = 0;
    this.#wake();
  }

  /**
   * The connection is over: the commands the server never answered are reported
   * (`outcome: 'unanswered'`). Nothing is observed after this.
   */
  finish(): void {
    if (this.#finished) return;
    this.#drain('unanswered');
    this.#finished = true;
  }

  /** Commands sent and not yet answered. */
  get waiting(): number {
    return this.#sent.length - this.#sentHead;
  }

  /**
   * undefined while the commands waiting for their reply are within bounds; else a promise that
   * settles once half of them were answered (or the connection is over): the caller stops
   * reading from the application meanwhile.
   */
  room(): Promise<void> | undefined {
    if (!this.#full()) return undefined;
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  #full(): boolean {
    return (
      this.waiting > this.#maxWaiting || (this.waiting > 1 && this.#waitingBytes > this.#maxWaitingBytes)
    );
  }

  #wake(): void {
    if (this.#roomWaiters.length === 0) return;
    const n = this.waiting;
    if (n > this.#maxWaiting / 2 || (n > 1 && this.#waitingBytes > this.#maxWaitingBytes / 2)) return;
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const w of waiters) w();
  }
}
