// Query events for a MySQL connection after its handshake. A streaming scanner follows the
// packet framing of each direction, keeping at most a bounded prefix of the packets it cares
// about; everything else (result sets, LOAD DATA file contents, execute parameters) is counted
// and skipped, never buffered.
//
// Application → server: a command is a packet with sequence id 0 that does not continue a
// 16 MiB packet. COM_QUERY and COM_STMT_PREPARE give their text, COM_INIT_DB a `USE` statement,
// COM_STMT_EXECUTE the text of the statement it runs (never its parameter values),
// COM_CHANGE_USER is a violation (it would authenticate as someone else than the injected user).
// Server → application: only the first packet after a COM_STMT_PREPARE is read, for the
// statement id of its COM_STMT_PREPARE_OK.
import type { QueryEvent } from '../postgres/relay.js';
import { Command, MAX_PAYLOAD, RELAYED_COMMANDS } from './packets.js';

/** A postgres-shaped QueryEvent (the audit takes it as is) plus the MySQL command it came from. */
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
  #want: (seq: number, continuation: boolean) => number;
  #onPacket: PacketHandler;

  constructor(want: (seq: number, continuation: boolean) => number, onPacket: PacketHandler) {
    this.#want = want;
    this.#onPacket = onPacket;
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
    const want = Math.min(this.#want(this.#seq, this.#continuation), this.#length);
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

export interface MysqlQueryObserverOptions {
  /** Absent: no events, only the COM_CHANGE_USER guard and the last-command tracking. */
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
}

/** A same-length byte replacement in the chunk last pushed to `app`. */
export interface Rewrite {
  offset: number;
  bytes: Buffer;
}

/** `KILL 123`, `KILL QUERY 123`, `KILL CONNECTION 123;` — the whole statement, nothing else. */
const KILL_RE = /^(\s*KILL\s+(?:(?:QUERY|CONNECTION)\s+)?)(\d{1,10})\s*;?\s*$/i;
const MAX_KILL_TEXT = 64;

export class MysqlQueryObserver {
  readonly #onQuery: ((event: MysqlQueryEvent) => void) | undefined;
  readonly #max: number;
  readonly #maxStatements: number;
  readonly #statements = new Map<number, { text: string; truncated: boolean }>();
  /** Prepares whose COM_STMT_PREPARE_OK is still to come, oldest first. */
  readonly #pending: { text: string; truncated: boolean }[] = [];
  #awaitingPrepareOk = false;
  readonly app: PacketScanner;
  readonly server: PacketScanner;
  /** The command byte of the application's last command (COM_QUIT: it said goodbye). */
  lastCommand = -1;
  /** Set when the application sent a command that must not reach the upstream. */
  violation: string | undefined;
  /**
   * Where the refused packet began in the chunk last pushed to `app`: the bytes before it are
   * earlier, complete commands (already reported), to be forwarded; nothing from it on is.
   */
  violationAt = 0;
  /** KILL statements to rewrite in the chunk just pushed to `app`; the caller applies and clears. */
  readonly rewrites: Rewrite[] = [];
  readonly #killTarget: ((localId: number) => number | undefined) | undefined;

  constructor(options: MysqlQueryObserverOptions = {}) {
    this.#onQuery = options.onQuery;
    this.#max = options.maxQueryLength ?? 4096;
    this.#maxStatements = options.maxStatements ?? 1024;
    this.#killTarget = options.killTarget;
    const commandBytes = Math.max(
      this.#onQuery ? this.#max + 2 : 1,
      this.#killTarget ? MAX_KILL_TEXT + 1 : 1,
    );
    this.app = new PacketScanner(
      (seq, continuation) => {
        if (this.violation) return 0;
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
        return seq === 0 && !continuation ? commandBytes : 0;
      },
      (seq, prefix, length, continuation, offset) => {
        if (this.violation) return;
        if (seq !== 0 || continuation || prefix.length === 0) return;
        this.#command(prefix, length);
        if (offset !== undefined && prefix[0] === Command.QUERY && length <= MAX_KILL_TEXT + 1) {
          this.#kill(prefix.subarray(1), offset + 1);
        }
      },
    );
    this.server = new PacketScanner(
      (_seq, continuation) => (this.#awaitingPrepareOk && !continuation ? 5 : 0),
      (_seq, prefix, _length, continuation) => {
        if (!this.#awaitingPrepareOk || continuation) return;
        this.#awaitingPrepareOk = false;
        const prepared = this.#pending.shift();
        if (prepared && prefix.length === 5 && prefix[0] === 0x00) {
          const id = prefix.readUInt32LE(1);
          this.#statements.delete(id);
          this.#statements.set(id, prepared);
          if (this.#statements.size > this.#maxStatements)
            this.#statements.delete(this.#statements.keys().next().value as number);
        }
      },
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
  #refuse(why: string): void {
    this.violation = why;
    this.violationAt = this.app.headerAt;
  }

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
    if (!this.#onQuery) return;
    const body = prefix.subarray(1);
    const truncated = length - 1 > this.#max;
    switch (cmd) {
      case Command.QUERY:
        this.#emit(utf8Prefix(body, this.#max), truncated, 'simple', 'query');
        return;
      case Command.STMT_PREPARE: {
        const text = utf8Prefix(body, this.#max);
        this.#pending.push({ text, truncated });
        if (this.#pending.length > 16) this.#pending.shift();
        this.#awaitingPrepareOk = true;
        this.#emit(text, truncated, 'extended', 'prepare');
        return;
      }
      case Command.STMT_EXECUTE: {
        if (body.length < 4) return;
        const stmt = this.#statements.get(body.readUInt32LE(0));
        if (stmt) this.#emit(stmt.text, stmt.truncated, 'extended', 'execute');
        return;
      }
      case Command.STMT_CLOSE:
        if (body.length >= 4) this.#statements.delete(body.readUInt32LE(0));
        return;
      case Command.INIT_DB: {
        const db = utf8Prefix(body, this.#max).replaceAll('`', '``');
        this.#emit(`USE \`${db}\``, truncated, 'simple', 'init_db');
        return;
      }
    }
  }

  #emit(
    text: string,
    truncated: boolean,
    protocol: QueryEvent['protocol'],
    command: MysqlQueryEvent['command'],
  ) {
    try {
      this.#onQuery?.({ type: 'query', text, truncated, protocol, command });
    } catch {
      // An observer must never break the connection.
    }
  }
}
