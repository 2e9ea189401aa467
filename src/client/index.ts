// The client side of ciport (`exec`, `open`, `close`, `whoami`), for the CLI, the demo and tests.
export { type CommandExit, exitCodeOf, FORWARDED_SIGNALS, type RunOptions, runCommand } from './child.js';
export { formatDotenv, formatExports, parseDotenv, shellQuote, writeFileAtomic } from './dotenv.js';
export {
  type BoundTarget,
  childEnv,
  envName,
  exportedEnv,
  parseTargetSpec,
  parseTargetSpecs,
  type TargetSpec,
  targetUrl,
} from './env.js';
export { GatewayError, GatewayUnreachableError, SessionEndedError, TlsError } from './errors.js';
export { GatewayClient, gatewayUrl, TunnelRefused, trustedCas } from './gateway.js';
export { type ClientLog, connectGateway, type OpenPortOptions, Port, stderrLog } from './port.js';
export {
  describeEnd,
  Heartbeat,
  PortSession,
  type SessionEnd,
  type SessionInfo,
  type SessionTarget,
} from './session.js';
export { SignalTrap } from './signals.js';
export { defaultStateFile, type OpenState, readState } from './state.js';
export { acquireToken, DEFAULT_TOKEN_ENV, defaultAudience, fetchGithubActionsToken } from './token.js';
export { TargetListener } from './tunnel.js';
