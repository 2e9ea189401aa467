// Protocol `redis`: AUTH/SELECT injection at the exit, then a raw relay (see exit.ts,
// docs/redis.md); the local one-time-password gate of the client (client.ts); RESP (resp.ts).
export {
  authenticateRedisClient,
  type RedisClientAuth,
  type RedisGateOptions,
} from './client.js';
export { connectRedisUpstream, MAX_REDIS_REPLY, type RedisUpstreamOptions, redisInjects } from './exit.js';
export { readRespCommand, redisCommand, respError } from './resp.js';
