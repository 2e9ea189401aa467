// A connection's statements, gathered into one `query` audit event per short window.
//
// One event per statement made query audit the dominant cost of a busy connection: each event is
// a store hand-off, a row with its indexes, a hash and a share of a commit, whatever its size
// (docs/performance.md, "Query audit path"). A connection's statements share everything but
// their text, time and protocol, so they are gathered here and handed over together: the first
// statement of a batch starts a window of `windowMs`; the batch goes out when the window ends,
// when it holds `maxStatements` or `maxBytes` of text, or when the connection ends (the caller
// flushes before its `connection.closed`, so the chain keeps the order in which things happened).
// Each statement keeps its own time. What a crash loses is the open window, as it was the store's
// commit delay before (docs/audit.md, "When an event is durable").

/** One statement of a `query` event. */
export interface QueryStatement {
  /** When the app sent it (ISO 8601, ms). */
  at: string;
  statement: string;
  /** The statement was cut at the target's `query_max_length`. */
  truncated?: boolean;
  /** `simple` (Query message) or `extended` (Parse). */
  protocol?: string;
  /** mysql: `ok`, `error` (the server's reply began so) or `unanswered` (docs/audit.md). */
  outcome?: string;
  /** `hex`: `statement` is the statement's bytes in hex (mysql, a character set not sure). */
  encoding?: string;
}

/** What a statement may carry besides its text (QueryEvent's optional fields). */
export interface QueryStatementExtra {
  /** When the app sent it (epoch ms); default: when it is added. */
  at?: number | undefined;
  outcome?: string | undefined;
  encoding?: string | undefined;
}

export interface QueryBatchOptions {
  /** Called with each full batch, in order, never empty. Must not throw. */
  emit: (statements: QueryStatement[]) => void;
  /** How long the first statement of a batch may wait for company (default 20 ms). */
  windowMs?: number;
  /** Statements per event at most (default 256). */
  maxStatements?: number;
  /** Statement text per event at most, in UTF-16 code units (default 64 Ki). */
  maxBytes?: number;
}

export const QUERY_BATCH_WINDOW_MS = 20;
export const QUERY_BATCH_MAX_STATEMENTS = 256;
export const QUERY_BATCH_MAX_TEXT = 64 * 1024;

interface Pending {
  at: number;
  statement: string;
  truncated: boolean | undefined;
  protocol: string | undefined;
  outcome: string | undefined;
  encoding: string | undefined;
}

export class QueryBatch {
  readonly #emit: (statements: QueryStatement[]) => void;
  readonly #windowMs: number;
  readonly #maxStatements: number;
  readonly #maxText: number;
  #pending: Pending[] = [];
  #text = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: QueryBatchOptions) {
    this.#emit = opts.emit;
    this.#windowMs = opts.windowMs ?? QUERY_BATCH_WINDOW_MS;
    this.#maxStatements = opts.maxStatements ?? QUERY_BATCH_MAX_STATEMENTS;
    this.#maxText = opts.maxBytes ?? QUERY_BATCH_MAX_TEXT;
  }

  /** Statements waiting for their batch to go out. */
  get pending(): number {
    return this.#pending.length;
  }

  add(statement: string, truncated?: boolean, protocol?: string, extra: QueryStatementExtra = {}): void {
    const pending: Pending = {
      at: extra.at ?? Date.now(),
      statement,
      truncated,
      protocol,
      outcome: extra.outcome,
      encoding: extra.encoding,
    };
    if (this.#closed) {
      // After close (a late message of an ended connection): its own event, never dropped.
      this.#emit([toStatement(pending)]);
      return;
    }
    // A statement that would take the batch past its text bound starts the next batch.
    if (this.#pending.length > 0 && this.#text + statement.length > this.#maxText) this.flush();
    this.#pending.push(pending);
    this.#text += statement.length;
    if (this.#pending.length >= this.#maxStatements || this.#text >= this.#maxText) {
      this.flush();
      return;
    }
    if (this.#timer === undefined) {
      this.#timer = setTimeout(this.#onTimer, this.#windowMs);
      this.#timer.unref();
    }
  }

  readonly #onTimer = () => {
    this.#timer = undefined;
    this.flush();
  };

  /** Hand over what is pending now (nothing when empty). */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#pending.length === 0) return;
    const batch = this.#pending;
    this.#pending = [];
    this.#text = 0;
    this.#emit(batch.map(toStatement));
  }

  /** Flush and hand over any later statement at once. */
  close(): void {
    this.flush();
    this.#closed = true;
  }
}

function toStatement(p: Pending): QueryStatement {
  const out: QueryStatement = { at: new Date(p.at).toISOString(), statement: p.statement };
  if (p.truncated) out.truncated = true;
  if (p.protocol !== undefined) out.protocol = p.protocol;
  if (p.outcome !== undefined) out.outcome = p.outcome;
  if (p.encoding !== undefined) out.encoding = p.encoding;
  return out;
}
