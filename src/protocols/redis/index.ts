// Protocol `redis`: AUTH/SELECT injection at the exit, then a raw relay (see exit.ts, docs/redis.md).
export {
  connectRedisUpstream,
  MAX_REDIS_REPLY,
  type RedisUpstreamOptions,
  redisCommand,
  redisInjects,
} from './exit.js';
