// A statement an exit saw on a database connection, before it becomes (part of) a `query` audit
// event (src/audit/query-batch.ts). Shared by every database protocol.
export interface QueryEvent {
  type: 'query';
  /** Statement text, cut at the target's `query_max_length` UTF-8 bytes (on a character boundary). */
  text: string;
  truncated: boolean;
  /** How the protocol carried it (postgres: simple Query or extended Parse). */
  protocol: 'simple' | 'extended';
}
