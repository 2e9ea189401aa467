// Redis credential injection at the exit, against real redis-server processes (password, ACL
// user, TLS) and hand-written misbehaving servers; redis-cli plays the application.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TargetOf, targetSchema } from '../../src/config/targets/index.js';
import type { CiportError } from '../../src/errors/index.js';
import {
  connectRedisUpstream,
  MAX_REDIS_REPLY,
  redisCommand,
  redisInjects,
} from '../../src/exits/redis/index.js';
import { freePort } from '../fixtures/free-port.js';
import { type RedisServer, startRedis } from '../fixtures/redis-server.js';
import { makePki, type Pki, secret } from './http/helpers.js';

const PW = `pw-${randomBytes(12).toString('hex')}`;
const ALICE_PW = `alice-${randomBytes(12).toString('hex')}`;
const WRONG = `wrong-${randomBytes(12).toString('hex')}`;

// ---- fixtures -------------------------------------------------------------------------------------

interface FakeServer {
  port: number;
  close(): Promise<void>;
}

/** A TCP server that does whatever `onConnection` says: silence, floods, scripted replies. */
async function fakeServer(onConnection: (socket: Socket) => void): Promise<FakeServer> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

type RedisTarget = TargetOf<'redis'>;

function redisTarget(port: number, extra: Partial<RedisTarget> = {}): RedisTarget {
  return { name: 'cache', protocol: 'redis', address: `127.0.0.1:${port}`, tags: [], ...extra };
}

const creds = (password: string, user?: string): RedisTarget['credentials'] => ({
  password: secret(password),
  ...(user === undefined ? {} : { user }),
});

/** Write `wire` and collect what comes back until it ends with `until`. */
function exchange(socket: Socket, wire: Buffer | string, until: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(
      () => done(new Error(`no ${JSON.stringify(until)}; got ${JSON.stringify(got)}`)),
      timeoutMs,
    );
    function onData(d: Buffer) {
      got += d.toString('utf8');
      if (got.endsWith(until)) done();
    }
    function done(err?: Error) {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.pause();
      if (err) reject(err);
      else resolve(got);
    }
    socket.on('data', onData);
    socket.resume();
    if (wire.length > 0) socket.write(wire);
  });
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** redis-cli with a clean environment: no REDISCLI_AUTH unless given. */
function redisCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      'redis-cli',
      ['-h', '127.0.0.1', ...args],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: 10_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function rejection(p: Promise<unknown>): Promise<CiportError> {
  try {
    await p;
  } catch (err) {
    return err as CiportError;
  }
  throw new Error('expected a rejection');
}

function expectNoSecret(err: CiportError, ...secrets: string[]) {
  const text = `${err.message} ${JSON.stringify(err.details ?? {})} ${String(err.stack)}`;
  for (const s of secrets) expect(text).not.toContain(s);
}

// ---- servers ------------------------------------------------------------------------------------

let redis: RedisServer;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  redis = await startRedis([
    '--requirepass',
    PW,
    '--user',
    'alice',
    'on',
    `>${ALICE_PW}`,
    '~*',
    '&*',
    '+@all',
  ]);
  cleanups.push(() => redis.stop());
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

// ---- tests --------------------------------------------------------------------------------------

describe('redisInjects', () => {
  it('is true with a password or a database, false otherwise', () => {
    expect(redisInjects(redisTarget(1))).toBe(false);
    expect(redisInjects(redisTarget(1, { credentials: { user: 'u' } }))).toBe(false);
    expect(redisInjects(redisTarget(1, { credentials: creds('x') }))).toBe(true);
    expect(redisInjects(redisTarget(1, { database: 2 }))).toBe(true);
  });
});

describe('redisCommand', () => {
  it('encodes a RESP array of bulk strings (binary-safe: spaces, CRLF, UTF-8)', () => {
    expect(redisCommand('AUTH', 'a b\r\nc', 'é').toString()).toBe(
      '*3\r\n$4\r\nAUTH\r\n$6\r\na b\r\nc\r\n$2\r\né\r\n',
    );
  });
});

describe('connectRedisUpstream against redis-server', () => {
  it('the server really requires a password', async () => {
    const r = await redisCli(['-p', String(redis.port), 'GET', 'anything']);
    expect(`${r.stdout}${r.stderr}`).toMatch(/NOAUTH/);
  });

  it('AUTH password, then the socket is a raw relay (PING, SET, GET)', async () => {
    const socket = await connectRedisUpstream(redisTarget(redis.port, { credentials: creds(PW) }), {
      timeoutMs: 5000,
    });
    try {
      expect(socket.isPaused()).toBe(true);
      expect(await exchange(socket, redisCommand('PING'), '\r\n')).toBe('+PONG\r\n');
      expect(await exchange(socket, redisCommand('SET', 'relay-key', 'relay-value'), '\r\n')).toBe('+OK\r\n');
      expect(await exchange(socket, redisCommand('GET', 'relay-key'), 'relay-value\r\n')).toBe(
        '$11\r\nrelay-value\r\n',
      );
      // Inline commands too: the relay does not care what the application speaks.
      expect(await exchange(socket, 'PING hello\r\n', '\r\n')).toBe('$5\r\nhello\r\n');
    } finally {
      socket.destroy();
    }
  });

  it('AUTH user password with an ACL user', async () => {
    const socket = await connectRedisUpstream(
      redisTarget(redis.port, { credentials: creds(ALICE_PW, 'alice') }),
      { timeoutMs: 5000 },
    );
    try {
      expect(await exchange(socket, redisCommand('ACL', 'WHOAMI'), 'alice\r\n')).toBe('$5\r\nalice\r\n');
    } finally {
      socket.destroy();
    }
  });

  it('SELECT the target database: a key set through the socket lands in db 3', async () => {
    const key = `db3-${randomBytes(4).toString('hex')}`;
    const socket = await connectRedisUpstream(
      redisTarget(redis.port, { credentials: creds(PW), database: 3 }),
      { timeoutMs: 5000 },
    );
    try {
      expect(await exchange(socket, redisCommand('SET', key, 'in-three'), '\r\n')).toBe('+OK\r\n');
    } finally {
      socket.destroy();
    }
    const auth = { REDISCLI_AUTH: PW };
    const in3 = await redisCli(['-p', String(redis.port), '-n', '3', 'GET', key], auth);
    expect(in3.stdout.trim()).toBe('in-three');
    const in0 = await redisCli(['-p', String(redis.port), '-n', '0', 'EXISTS', key], auth);
    expect(in0.stdout.trim()).toBe('0');
  });

  it('a wrong password: CIPORT_E_UPSTREAM_AUTH, WRONGPASS, no password in the error', async () => {
    const err = await rejection(
      connectRedisUpstream(redisTarget(redis.port, { credentials: creds(WRONG) }), { timeoutMs: 5000 }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_AUTH');
    expect(err.details).toEqual({ step: 'auth', reply: 'WRONGPASS' });
    expect(err.message).toMatch(/refused AUTH: WRONGPASS/);
    expectNoSecret(err, WRONG, PW);
  });

  it('a wrong password for an ACL user: the user is named, the password is not', async () => {
    const err = await rejection(
      connectRedisUpstream(redisTarget(redis.port, { credentials: creds(WRONG, 'alice') }), {
        timeoutMs: 5000,
      }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_AUTH');
    expect(err.message).toContain('AUTH as "alice"');
    expectNoSecret(err, WRONG, ALICE_PW);
  });

  it('a database the server does not have: CIPORT_E_UPSTREAM_AUTH at the SELECT step', async () => {
    const err = await rejection(
      connectRedisUpstream(redisTarget(redis.port, { credentials: creds(PW), database: 999 }), {
        timeoutMs: 5000,
      }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_AUTH');
    expect(err.details).toMatchObject({ step: 'select' });
    expect(err.message).toMatch(/refused SELECT 999: ERR DB index is out of range/);
    expectNoSecret(err, PW);
  });

  it('only a database, no password, against a server that wants one: NOAUTH at SELECT', async () => {
    const err = await rejection(
      connectRedisUpstream(redisTarget(redis.port, { database: 1 }), { timeoutMs: 5000 }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_AUTH');
    expect(err.details).toEqual({ step: 'select', reply: 'NOAUTH' });
  });

  it('a database that is not a number is refused at load: the exit never gets one', () => {
    const parse = (database: unknown) =>
      targetSchema.safeParse({ name: 'cache', protocol: 'redis', address: 'r:6379', database });
    expect(parse('app').error?.issues[0]?.path).toEqual(['database']);
    expect(parse(-1).success).toBe(false);
    expect(parse(1.5).success).toBe(false);
    expect(parse('3').data).toMatchObject({ database: 3 });
    expect(parse(3).data).toMatchObject({ database: 3 });
  });

  it('redis-cli with no password through a local listener that injects', async () => {
    const target = redisTarget(redis.port, { credentials: creds(PW), database: 5 });
    const failures: unknown[] = [];
    const listener = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (client) => {
      client.on('error', () => {});
      connectRedisUpstream(target, { timeoutMs: 5000 }).then(
        (upstream) => {
          upstream.on('error', () => client.destroy());
          client.on('close', () => upstream.destroy());
          upstream.on('close', () => client.destroy());
          client.pipe(upstream);
          upstream.pipe(client);
          client.resume();
          upstream.resume();
        },
        (err: unknown) => {
          failures.push(err);
          client.destroy();
        },
      );
    });
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => listener.close(() => r())));
    const port = String((listener.address() as AddressInfo).port);
    const key = `cli-${randomBytes(4).toString('hex')}`;

    const set = await redisCli(['-p', port, 'SET', key, 'v']);
    expect(set).toMatchObject({ code: 0, stdout: 'OK\n' });
    const get = await redisCli(['-p', port, 'GET', key]);
    expect(get).toMatchObject({ code: 0, stdout: 'v\n' });
    // Database 5 was selected for the application without it asking.
    const direct = await redisCli(['-p', String(redis.port), '-n', '5', 'GET', key], { REDISCLI_AUTH: PW });
    expect(direct.stdout).toBe('v\n');
    expect(failures).toEqual([]);
  });
});

describe('connectRedisUpstream against misbehaving servers', () => {
  it('an unreachable port: CIPORT_E_UPSTREAM_UNREACHABLE', async () => {
    const port = await freePort();
    const err = await rejection(
      connectRedisUpstream(redisTarget(port, { credentials: creds(PW) }), { timeoutMs: 2000 }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_UNREACHABLE');
    expectNoSecret(err, PW);
  });

  it('a server that accepts and never answers: times out with a clear error', async () => {
    const fake = await fakeServer(() => {});
    cleanups.push(() => fake.close());
    const started = Date.now();
    const err = await rejection(
      connectRedisUpstream(redisTarget(fake.port, { credentials: creds(PW) }), { timeoutMs: 300 }),
    );
    const elapsed = Date.now() - started;
    expect(err.code).toBe('CIPORT_E_UPSTREAM_UNREACHABLE');
    expect(err.message).toMatch(/did not complete the Redis handshake: no reply within \d+ ms/);
    expect(err.details).toEqual({ reason: 'timeout' });
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(3000);
    expectNoSecret(err, PW);
  });

  it('a reply flood without CRLF (1 MB): a bounded error, no hang', async () => {
    const fake = await fakeServer((s) => {
      s.once('data', () => s.write(Buffer.alloc(1024 * 1024, 0x2b)));
    });
    cleanups.push(() => fake.close());
    const started = Date.now();
    const err = await rejection(
      connectRedisUpstream(redisTarget(fake.port, { credentials: creds(PW) }), { timeoutMs: 10_000 }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_UNREACHABLE');
    expect(err.message).toContain(`longer than ${MAX_REDIS_REPLY} bytes`);
    expect(err.details).toEqual({ reason: 'oversized-reply' });
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('a reply of exactly the maximum length is accepted', async () => {
    const received: string[] = [];
    const fake = await fakeServer((s) => {
      // The AUTH gets the longest reply allowed; later commands an ordinary one.
      s.on('data', (d: Buffer) => {
        received.push(d.toString('utf8'));
        s.write(received.length === 1 ? `+${'x'.repeat(MAX_REDIS_REPLY - 1)}\r\n` : '+PONG\r\n');
      });
    });
    cleanups.push(() => fake.close());
    const socket = await connectRedisUpstream(redisTarget(fake.port, { credentials: creds(PW) }), {
      timeoutMs: 2000,
    });
    try {
      expect(received).toEqual([redisCommand('AUTH', PW).toString()]);
      // The handshake is over and the connection relays.
      expect(await exchange(socket, redisCommand('PING'), '\r\n')).toBe('+PONG\r\n');
    } finally {
      socket.destroy();
    }
  });

  it('a reply that is not a RESP simple string or error is refused', async () => {
    const fake = await fakeServer((s) => {
      s.once('data', () => s.write('HTTP/1.1 400 Bad Request\r\n\r\n'));
    });
    cleanups.push(() => fake.close());
    const err = await rejection(
      connectRedisUpstream(redisTarget(fake.port, { credentials: creds(PW) }), { timeoutMs: 2000 }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_UNREACHABLE');
    expect(err.details).toEqual({ reason: 'unexpected-reply' });
  });

  it('a server that closes during the handshake', async () => {
    const fake = await fakeServer((s) => {
      s.once('data', () => s.end());
    });
    cleanups.push(() => fake.close());
    const err = await rejection(
      connectRedisUpstream(redisTarget(fake.port, { credentials: creds(PW) }), { timeoutMs: 2000 }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_UNREACHABLE');
    expect(err.details).toEqual({ reason: 'closed' });
  });

  it('an abort signal stops a pending handshake at once', async () => {
    const fake = await fakeServer(() => {});
    cleanups.push(() => fake.close());
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const started = Date.now();
    const err = await rejection(
      connectRedisUpstream(redisTarget(fake.port, { credentials: creds(PW) }), {
        timeoutMs: 10_000,
        signal: ac.signal,
      }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_UNREACHABLE');
    expect(err.details).toEqual({ reason: 'aborted' });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('an already aborted signal: nothing is dialed', async () => {
    let dialed = false;
    const fake = await fakeServer(() => {
      dialed = true;
    });
    cleanups.push(() => fake.close());
    const ac = new AbortController();
    ac.abort();
    const err = await rejection(
      connectRedisUpstream(redisTarget(fake.port, { credentials: creds(PW) }), {
        timeoutMs: 2000,
        signal: ac.signal,
      }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_UNREACHABLE');
    await new Promise((r) => setTimeout(r, 50));
    expect(dialed).toBe(false);
  });

  it('sends AUTH user password and SELECT on the wire; replies split across packets; bytes after them are kept', async () => {
    const seen: Buffer[] = [];
    const fake = await fakeServer((s) => {
      s.on('data', (d: Buffer) => {
        seen.push(d);
        if (Buffer.concat(seen).toString().endsWith('$1\r\n7\r\n')) {
          s.write('+O');
          setTimeout(() => s.write('K\r'), 20);
          setTimeout(() => s.write('\n+OK\r\n+EXTRA'), 40);
          setTimeout(() => s.write(' BYTES\r\n'), 60);
        }
      });
    });
    cleanups.push(() => fake.close());
    const socket = await connectRedisUpstream(
      redisTarget(fake.port, { credentials: creds('p w', 'bob'), database: 7 }),
      { timeoutMs: 2000 },
    );
    try {
      expect(Buffer.concat(seen).toString()).toBe(
        '*3\r\n$4\r\nAUTH\r\n$3\r\nbob\r\n$3\r\np w\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n7\r\n',
      );
      // Whatever followed the two replies reaches the relay, in order.
      expect(await exchange(socket, '', 'BYTES\r\n')).toBe('+EXTRA BYTES\r\n');
    } finally {
      socket.destroy();
    }
  });

  it('a target with nothing to inject sends nothing', async () => {
    const seen: Buffer[] = [];
    const fake = await fakeServer((s) => {
      s.on('data', (d: Buffer) => seen.push(d));
      s.write('+HELLO\r\n');
    });
    cleanups.push(() => fake.close());
    const socket = await connectRedisUpstream(redisTarget(fake.port), { timeoutMs: 2000 });
    try {
      expect(await exchange(socket, '', '\r\n')).toBe('+HELLO\r\n');
      expect(seen).toEqual([]);
    } finally {
      socket.destroy();
    }
  });

  it('an error reply that echoes the password is masked, printable and capped', async () => {
    const pw = `echo-${randomBytes(8).toString('hex')}`;
    const fake = await fakeServer((s) => {
      s.once('data', () =>
        s.write(`-ERR invalid password ${pw} \x1b[31m${'z'.repeat(1000)}\r\n-ERR second line ${pw}\r\n`),
      );
    });
    cleanups.push(() => fake.close());
    const err = await rejection(
      connectRedisUpstream(redisTarget(fake.port, { credentials: creds(pw) }), { timeoutMs: 2000 }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_AUTH');
    expectNoSecret(err, pw);
    expect(err.message).toContain('ERR invalid password *** ?[31m');
    expect(err.message).not.toContain('second line');
    expect(err.message.length).toBeLessThan(400);
    expect(err.details).toEqual({ step: 'auth', reply: 'ERR' });
  });
});

describe('connectRedisUpstream over TLS', () => {
  let pki: Pki;
  let otherPki: Pki;
  let tlsRedis: RedisServer;

  beforeAll(async () => {
    pki = makePki('ciport redis CA');
    otherPki = makePki('ciport other CA');
    const dir = mkdtempSync(join(tmpdir(), 'ciport-redis-tls-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'server.crt'), pki.certPem);
    writeFileSync(join(dir, 'server.key'), pki.keyPem, { mode: 0o600 });
    tlsRedis = await startRedis(
      [
        '--tls-cert-file',
        join(dir, 'server.crt'),
        '--tls-key-file',
        join(dir, 'server.key'),
        '--tls-auth-clients',
        'no',
        '--requirepass',
        PW,
      ],
      '--tls-port',
    );
    cleanups.push(() => tlsRedis.stop());
  });

  it('verifies the server against tls.ca and servername, then AUTH and relay', async () => {
    const socket = await connectRedisUpstream(
      redisTarget(tlsRedis.port, {
        tls: { ca: secret(pki.caPem, 'TEST_CA'), servername: 'localhost' },
        credentials: creds(PW),
        database: 2,
      }),
      { timeoutMs: 5000 },
    );
    try {
      expect('encrypted' in socket && socket.encrypted).toBe(true);
      expect(await exchange(socket, redisCommand('PING'), '\r\n')).toBe('+PONG\r\n');
    } finally {
      socket.destroy();
    }
  });

  it('verifies the IP address when no servername is given', async () => {
    const socket = await connectRedisUpstream(
      redisTarget(tlsRedis.port, { tls: { ca: secret(pki.caPem, 'TEST_CA') }, credentials: creds(PW) }),
      { timeoutMs: 5000 },
    );
    try {
      const tls = socket as TLSSocket;
      expect(tls.encrypted).toBe(true);
      expect(tls.authorized).toBe(true);
      // No SNI for an IP address: the certificate was checked against 127.0.0.1 itself.
      expect((tls as TLSSocket & { servername?: string | false }).servername).toBeFalsy();
      expect(tls.getPeerCertificate().subjectaltname).toContain('IP Address:127.0.0.1');
      expect(await exchange(socket, redisCommand('PING'), '\r\n')).toBe('+PONG\r\n');
    } finally {
      socket.destroy();
    }
  });

  it('refuses a certificate from another CA: CIPORT_E_TLS, no AUTH sent', async () => {
    const err = await rejection(
      connectRedisUpstream(
        redisTarget(tlsRedis.port, {
          tls: { ca: secret(otherPki.caPem, 'TEST_CA'), servername: 'localhost' },
          credentials: creds(PW),
        }),
        { timeoutMs: 5000 },
      ),
    );
    expect(err.code).toBe('CIPORT_E_TLS');
    expect(err.message).toMatch(/certificate/i);
    expectNoSecret(err, PW);
  });

  it('refuses a name the certificate does not carry', async () => {
    const err = await rejection(
      connectRedisUpstream(
        redisTarget(tlsRedis.port, {
          tls: { ca: secret(pki.caPem, 'TEST_CA'), servername: 'redis.example.com' },
          credentials: creds(PW),
        }),
        { timeoutMs: 5000 },
      ),
    );
    expect(err.code).toBe('CIPORT_E_TLS');
  });

  it('a plain target against the TLS port fails (no silent downgrade)', async () => {
    const err = await rejection(
      connectRedisUpstream(redisTarget(tlsRedis.port, { credentials: creds(PW) }), { timeoutMs: 1000 }),
    );
    expect(err.code).toBe('CIPORT_E_UPSTREAM_UNREACHABLE');
  });
});
