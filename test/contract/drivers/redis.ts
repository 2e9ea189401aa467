// redis: redis-cli with the port's one-time password (REDIS_URL / REDISCLI_AUTH) against a
// `redis-server --requirepass`, database 1; the exit sends the real AUTH and SELECT.
import { createHash, randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import type { Driver, JobPort } from '../driver.js';
import { run } from '../driver.js';
import { dial, exchange, held } from './socket.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const cli = (job: JobPort, ...args: string[]) =>
  job.run(['redis-cli', '--no-auth-warning', '-u', job.exported.REDIS_URL as string, ...args]);
const resp = (...args: string[]) =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

export const redisDriver: Driver = {
  protocol: 'redis',
  target: (name, up) => ({
    name,
    protocol: 'redis',
    address: `127.0.0.1:${up.redis.port}`,
    database: '1',
    credentials: { password: { env: 'REDIS_PW' } },
  }),

  async attempt(job) {
    const r = await cli(job, 'PING');
    return { ok: r.code === 0 && r.stdout.trim() === 'PONG', detail: `${r.code} ${r.stdout}${r.stderr}` };
  },

  async dataBothWays(job, up) {
    const key = `contract:${randomBytes(6).toString('hex')}`;
    const value = randomBytes(512 * 1024).toString('hex'); // 1 MiB of text
    const set = await job.run(
      ['redis-cli', '--no-auth-warning', '-u', job.exported.REDIS_URL as string, '-x', 'SET', key],
      { stdin: value },
    );
    expect(set).toMatchObject({ code: 0, stdout: 'OK\n' });
    // The server holds exactly what the app sent ...
    expect(sha((await up.redisDirect('GET', key)).replace(/\n$/, ''))).toBe(sha(value));
    // ... and the app reads it back intact.
    const get = await cli(job, 'GET', key);
    expect(get.code).toBe(0);
    expect(get.stdout.length).toBe(value.length + 1);
    expect(sha(get.stdout.slice(0, -1))).toBe(sha(value));
  },

  async injectedCredential(job, up) {
    const whoami = await cli(job, 'ACL', 'WHOAMI');
    expect(whoami).toMatchObject({ code: 0, stdout: 'default\n' });
    // The server demands its password: the port's one-time password is not it.
    const direct = await run(['redis-cli', '-p', String(up.redis.port), '--no-auth-warning', 'PING'], {
      PATH: job.env.PATH as string,
      REDISCLI_AUTH: job.exported.REDISCLI_AUTH as string,
    });
    expect(direct.stdout + direct.stderr).toMatch(/WRONGPASS|NOAUTH/);
    expect(direct.stdout).not.toContain('PONG');
  },

  auditTraffic(events) {
    expect(events.filter((e) => e.type === 'query' || e.type === 'http.request')).toEqual([]);
  },

  async hold(job) {
    const s = await dial(job.port);
    const otp = job.exported.REDISCLI_AUTH as string;
    const back = await exchange(s, resp('AUTH', otp) + resp('PING'), {
      done: (b) => b.toString().includes('+PONG'),
    });
    expect(back.toString()).toBe('+OK\r\n+PONG\r\n');
    return held(s);
  },

  async upstreamOpen(up) {
    // CLIENT LIST names the asking connection too.
    return (await up.redisDirect('CLIENT', 'LIST')).trim().split('\n').length - 1;
  },
  upstreamAccepted: (up) => up.redisAccepted(),
};
