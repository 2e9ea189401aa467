// A statement an exit saw on a database connection, before it becomes (part of) a `query` audit
// event (src/audit/query-batch.ts). Shared by every database protocol.
export interface QueryEvent {
  type: 'query';
  /** Statement text, cut at the target's `query_max_length` UTF-8 bytes (on a character boundary). */
  text: string;
  truncated: boolean;
  /** How the protocol carried it (postgres: simple Query or extended Parse). */
  protocol: 'simple' | 'extended';
  /** When the application sent it (epoch ms); absent: when the event is handed over. */
  at?: number | undefined;
  /**
   * mysql, which reports a statement once the server's reply begins: `ok` or `error` (the reply's
   * first packet), `unanswered` (the connection ended first: cut while it ran, or never read).
   * Absent: reported when sent (postgres; mysql when its observer could not follow the replies).
   */
  outcome?: 'ok' | 'error' | 'unanswered' | undefined;
  /**
   * `hex`: `text` is the statement's bytes in hex (up to `query_max_length` bytes), because the
   * server may not have read them as UTF-8 (mysql, docs/mysql.md "Character sets").
   */
  encoding?: 'hex' | undefined;
}
