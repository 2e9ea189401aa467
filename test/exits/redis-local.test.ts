// The client's local redis gate (src/exits/redis/client.ts) in front of the machine's real
// Redis: redis-cli and raw RESP/inline clients must present the one-time password with AUTH or
// HELLO … AUTH; until then Redis's own NOAUTH answers, and nothing is relayed.
import { execFile } from 'node:child_process';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { oneTimePassword } from '../../src/credentials/otp.js';
import type { CiportError } from '../../src/errors/index.js';
import { authenticateRedisClient, readRespCommand, redisCommand } from '../../src/exits/redis/index.js';

const execFileAsync = promisify(execFile);
const OTP = oneTimePassword();
let server: Server;
let port: number;
/** How each gated connection ended: 'relayed' or the rejection's code and reason. */
const outcomes: string[] = [];
/** Connections that reached the "upstream" (the real Redis). */
let relayed = 0;

beforeAll(async () => {
  server = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (app: Socket) => {
    app.on('error', () => {});
    authenticateRedisClient(app, { password: OTP, timeoutMs: 500 }).then(
      (auth) => {
        relayed += 1;
        outcomes.push('relayed');
        // As the client's listener does: the tunnel (here Redis itself) first, then the reply.
        const up = connect(6379, '127.0.0.1', () => {
          app.write(auth.reply);
          app.pipe(up).pipe(app);
        });
        up.on('error', () => app.destroy());
      },
      (err: CiportError) => outcomes.push(`${err.code} ${(err.details as { reason: string }).reason}`),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => server.close());

async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  try {
    const r = await execFileAsync('redis-cli', ['-p', String(port), ...args], {
      env: { ...process.env, ...env },
    });
    return { out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { stdout: string; stderr: string };
    return { out: x.stdout, err: x.stderr };
  }
}

/** Send `bytes`, collect everything until the server closes or `until` is seen. */
function raw(bytes: Buffer | string, until?: string, end = false): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (until && got.includes(until)) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', () => {});
    s.on('close', () => resolve(got));
    s.write(bytes);
    if (end) s.end();
  });
}

describe('the local redis gate', () => {
  it('redis-cli with REDISCLI_AUTH (no password in argv) and with a redis:// URL works', async () => {
    const key = `gate-${Math.random().toString(36).slice(2)}`;
    expect((await cli(['SET', key, 'v1'], { REDISCLI_AUTH: OTP })).out).toBe('OK\n');
    expect(
      (await cli(['-u', `redis://:${OTP}@127.0.0.1:${port}/0`, '--no-auth-warning', 'GET', key])).out,
    ).toBe('v1\n');
    // RESP3: redis-cli -3 sends HELLO 3 after AUTH; the real server answers it.
    expect((await cli(['-3', 'GET', key], { REDISCLI_AUTH: OTP })).out).toBe('v1\n');
  });

  it('without the password: NOAUTH for every command, nothing relayed; a wrong one: WRONGPASS', async () => {
    const before = relayed;
    expect((await cli(['PING'])).out).toMatch(/^NOAUTH Authentication required/);
    const wrong = await cli(['PING'], { REDISCLI_AUTH: 'not-the-otp' });
    expect(wrong.err + wrong.out).toMatch(/WRONGPASS/);
    expect(relayed).toBe(before);
  });

  it('pipelined AUTH + commands in one write, RESP and inline, user "default" or none', async () => {
    const key = `pipe-${Math.random().toString(36).slice(2)}`;
    const resp = Buffer.concat([
      redisCommand('AUTH', 'default', OTP),
      redisCommand('SET', key, 'x'),
      redisCommand('GET', key),
    ]);
    expect(await raw(resp, '$1\r\nx\r\n')).toBe('+OK\r\n+OK\r\n$1\r\nx\r\n');
    // The application half-closes right after its commands (`printf … | nc -N`): nothing is lost.
    expect(await raw(`AUTH ${OTP}\r\nGET ${key}\r\n`, undefined, true)).toBe('+OK\r\n$1\r\nx\r\n');
    expect(await raw(`PING\r\nAUTH ${OTP}\r\nGET ${key}\r\n`, '$1\r\nx\r\n')).toBe(
      '-NOAUTH Authentication required.\r\n+OK\r\n$1\r\nx\r\n',
    );
  });

  it('HELLO 3 AUTH default OTP SETNAME: the real server answers HELLO (without the AUTH clause)', async () => {
    const hello = redisCommand('HELLO', '3', 'AUTH', 'default', OTP, 'SETNAME', 'gate-test');
    const got = await raw(Buffer.concat([hello, redisCommand('CLIENT', 'GETNAME')]), 'gate-test\r\n');
    expect(got).toMatch(/^%\d+\r\n/);
    expect(got).toContain('redis');
    expect(got.endsWith('$9\r\ngate-test\r\n')).toBe(true);
    // HELLO without AUTH before authenticating: Redis's own answer.
    expect(await raw(redisCommand('HELLO', '3'), '\r\n')).toMatch(/^-NOAUTH HELLO must be called/);
    expect(await raw(redisCommand('HELLO', '3', 'AUTH', 'alice', OTP), '\r\n')).toMatch(/^-WRONGPASS/);
  });

  it('three wrong passwords, a malformed command, QUIT or silence close the connection', async () => {
    outcomes.length = 0;
    const three = Buffer.concat([1, 2, 3].map((i) => redisCommand('AUTH', `wrong-${i}`)));
    const closedAfterThree = await raw(Buffer.concat([three, redisCommand('AUTH', OTP)]));
    expect(closedAfterThree.match(/-WRONGPASS/g)).toHaveLength(3);
    expect(closedAfterThree).not.toContain('+OK');
    expect(await raw('*1\r\n$99999999\r\n')).toMatch(/^-ERR Protocol error/);
    expect(await raw(`${'x'.repeat(20_000)}\r\n`)).toMatch(/^-ERR Protocol error/);
    expect(await raw(redisCommand('QUIT'))).toBe('+OK\r\n');
    expect(await raw('')).toBe('');
    // (Earlier tests' clients that hung up after their answer end as 'closed', at any time.)
    expect(outcomes.filter((o) => !o.endsWith(' closed'))).toEqual([
      'CIPORT_E_REDIS_AUTH wrong-password',
      'CIPORT_E_REDIS_AUTH protocol',
      'CIPORT_E_REDIS_AUTH protocol',
      'CIPORT_E_REDIS_AUTH quit',
      'CIPORT_E_REDIS_AUTH timeout',
    ]);
  });
});

describe('readRespCommand', () => {
  const limits = { maxArgs: 4, maxCommandBytes: 64 };
  it('waits for a whole command, byte by byte', () => {
    const wire = redisCommand('AUTH', 'p\r\nw');
    for (let n = 0; n < wire.length; n++)
      expect(readRespCommand(wire.subarray(0, n), limits)).toBeUndefined();
    const got = readRespCommand(Buffer.concat([wire, Buffer.from('rest')]), limits);
    expect(got?.args.map(String)).toEqual(['AUTH', 'p\r\nw']);
    expect(got?.size).toBe(wire.length);
  });
  it('refuses what cannot be a bounded command', () => {
    expect(() => readRespCommand(Buffer.from('*5\r\n'), limits)).toThrow(/over the limit/);
    expect(() => readRespCommand(Buffer.from('*1\r\n+x\r\n'), limits)).toThrow(/bulk/);
    expect(() => readRespCommand(Buffer.from('*1\r\n$1\r\nxyz'), limits)).toThrow(/CRLF/);
    expect(() => readRespCommand(Buffer.from('*-1\r\n'), limits)).toThrow(/invalid/);
    expect(() => readRespCommand(Buffer.from('a'.repeat(64)), limits)).toThrow(/longer than/);
  });
});
