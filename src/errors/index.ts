export { ERROR_CODES, type ErrorCode, ExitCode } from './codes.js';
export {
  AuditSinkError,
  asCiportError,
  CiportError,
  ConfigError,
  PolicyDeniedError,
  TokenRejectedError,
  UsageError,
} from './errors.js';
