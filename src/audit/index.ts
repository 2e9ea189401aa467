export { CanonicalJsonError, canonicalJson, type JsonObject, type JsonValue } from './canonical.js';
export {
  type ChainHead,
  type ChainRow,
  chainHash,
  eventHash,
  GENESIS_HASH,
  MAX_STRING_LENGTH,
  type PreparedEvent,
  prepareAuditEvent,
  RESERVED_DATA_KEYS,
  type VerifyOptions,
  type VerifyResult,
  verifyRows,
} from './chain.js';
export * from './events.js';
export {
  CSV_COLUMNS,
  csvField,
  csvLine,
  type ExportFormat,
  type ExportOptions,
  exportEvents,
  jsonlLine,
  parseJsonlLine,
} from './export.js';
export {
  QUERY_BATCH_MAX_STATEMENTS,
  QUERY_BATCH_MAX_TEXT,
  QUERY_BATCH_WINDOW_MS,
  QueryBatch,
  type QueryBatchOptions,
  type QueryStatement,
} from './query-batch.js';
export { isSecretKey, REDACTED_JWT, redactSecrets, scrubText } from './redact.js';
export { storedRows, verifyChain } from './verify.js';
