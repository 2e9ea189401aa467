// protocol redis: the exit dials (TLS from the first byte when `tls` is set), sends AUTH and
// SELECT with the target's credential and database, then relays raw (src/exits/redis,
// docs/redis.md).
import { z } from 'zod';
import { keysOf, targetMember, upstreamTlsSchema, userPasswordFields } from './member.js';

/** `SELECT` takes a non-negative integer; Redis's own limit is `databases` (16 by default). */
const MAX_DATABASE = 999_999_999;

export const redisTargetSchema = targetMember(
  'redis',
  'Redis: AUTH and SELECT sent at the exit, then raw bytes (docs/redis.md).',
  {
    database: z
      .union([
        z.int().min(0).max(MAX_DATABASE),
        z
          .string()
          .regex(/^(0|[1-9][0-9]{0,8})$/, 'a redis database is a number (the SELECT index)')
          .transform(Number),
      ])
      .optional()
      .meta({
        description: 'The database number the exit selects, `3` or `"3"` (`SELECT n`; default: Redis\'s 0).',
      }),
    tls: upstreamTlsSchema.meta({
      description:
        'TLS to the upstream from the first byte (rediss://), verified: true, or {ca, servername}.',
    }),
    credentials: keysOf('the credentials of a redis target', {
      user: z
        .string()
        .min(1)
        .optional()
        .meta({ description: 'ACL user (Redis 6+): `AUTH user password`; without: `AUTH password`.' }),
      password: userPasswordFields.password,
    })
      .optional()
      .meta({ description: 'What the exit sends in AUTH; the job never sees it.' }),
  },
);

export type RedisTarget = z.output<typeof redisTargetSchema>;
