export { CancelRegistry, type CancelTarget, forwardCancel, sendCancelRequest } from './cancel.js';
export { type PgClientOptions, type PgClientResult, servePgClientConnection } from './client.js';
export { PgError, pgErrorFields, sendErrorAndClose } from './errors.js';
export {
  type PgExitOptions,
  type PgExitResult,
  type PgUpstreamTarget,
  pgUpstreamFromTarget,
  servePgExitStream,
} from './exit.js';
export { type AcceptPgClientOptions, acceptPgClient } from './frontend.js';
export { PgStreamObserver } from './observe.js';
export {
  type QueryEvent,
  QueryObserver,
  type QueryObserverOptions,
  type RelayOptions,
  type RelayResult,
  relayPg,
} from './relay.js';
export {
  clearSaltedPasswordCache,
  saltedPasswordCacheStats,
} from './scram.js';
export {
  decodeStartupFrame,
  encodeStartupFrame,
  MAX_STARTUP_FRAME_PAYLOAD,
  type PgStartup,
  readStartupFrame,
} from './startup-wire.js';
export {
  type BackendKey,
  type ConnectUpstreamOptions,
  connectUpstream,
  type PgAuthMethod,
  type UpstreamConnection,
  type UpstreamTlsMode,
  type UpstreamTlsOptions,
  upstreamStartupParams,
} from './upstream.js';
