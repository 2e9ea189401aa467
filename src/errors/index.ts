export { ERROR_CODES, type ErrorCode, ExitCode } from './codes.js';
export {
  asCiportError,
  CiportError,
  ConfigError,
  PolicyDeniedError,
  TokenRejectedError,
  UsageError,
} from './errors.js';
