export {
  CACHING_SHA2,
  cachingSha2Token,
  ED25519,
  ed25519Token,
  NATIVE,
  nativeToken,
  verifyToken,
} from './auth.js';
export { type MysqlClientOptions, serveMysqlClientConnection } from './client.js';
export {
  decodeConnectFrame,
  encodeConnectFrame,
  MAX_CONNECT_FRAME_PAYLOAD,
  type MysqlConnectRequest,
  readConnectFrame,
} from './connect-wire.js';
export { MysqlError, mysqlErrPayload, sendErrorAndClose } from './errors.js';
export {
  type MysqlConnectedInfo,
  type MysqlExitOptions,
  type MysqlExitResult,
  serveMysqlExitStream,
} from './exit.js';
export {
  type AcceptedMysqlClient,
  type AcceptMysqlClientOptions,
  acceptMysqlClient,
  DEFAULT_SERVER_VERSION,
  LOCAL_CAPABILITIES,
} from './frontend.js';
export { killMysqlQuery } from './kill.js';
export { type MysqlQueryEvent, MysqlQueryObserver, type MysqlQueryObserverOptions } from './observe.js';
export { MysqlStreamObserver } from './observe-stream.js';
export { type MysqlRelayOptions, type RelayResult, relayMysql } from './relay.js';
export { MysqlThreadRegistry } from './threads.js';
export {
  type ConnectMysqlUpstreamOptions,
  connectMysqlUpstream,
  type MysqlTlsMode,
  type MysqlUpstreamConnection,
  type MysqlUpstreamTarget,
  type MysqlUpstreamTls,
} from './upstream.js';
