// The client's local redis hop: before a tunnel is opened, the application must present the
// port's one-time password the way any Redis client does, with `AUTH [default] OTP` or
// `HELLO proto AUTH default OTP …`. Until then every other command gets Redis's own
// `-NOAUTH` answer; nothing reaches the gateway. Once authenticated the connection is a raw
// relay again: the exit has already sent the real AUTH/SELECT upstream (exit.ts).
//
// The gate consumes only what it answers itself: an `AUTH` is answered `+OK` by the caller once
// the tunnel is up; a `HELLO … AUTH …` is forwarded without its AUTH clause so the real server
// answers it (its reply is a map of server facts ciport cannot make up). Bytes pipelined behind
// the authenticating command are pushed back into the socket for the relay.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import { CiportError } from '../../errors/index.js';
import { RESP_OK, RespProtocolError, readRespCommand, redisCommand, respError } from './resp.js';

export interface RedisGateOptions {
  /** The port's one-time password. */
  password: string;
  /** Time the application has to authenticate (default 30 s). */
  timeoutMs?: number | undefined;
}

export interface RedisClientAuth {
  /** Write this to the application once its tunnel is open (`+OK`, or nothing after HELLO). */
  reply: Buffer;
}

/** Wrong passwords accepted on one connection before it is closed. */
const MAX_FAILURES = 3;
/** Commands answered `-NOAUTH` before the connection is closed. */
const MAX_UNAUTHENTICATED = 32;
const LIMITS = { maxArgs: 16, maxCommandBytes: 16 * 1024 };
const NOAUTH = 'NOAUTH Authentication required.';
const HELLO_NOAUTH =
  'NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time';
const WRONGPASS =
  'WRONGPASS invalid username-password pair or user is disabled. (ciport: the one-time password of this port is in REDISCLI_AUTH and CIPORT_<TARGET>_URL)';

function digest(bytes: Buffer | string): Buffer {
  return createHash('sha256').update(bytes).digest();
}

/** The local user name must be Redis's `default` (or empty, as `redis://:OTP@…` gives). */
function passwordMatches(user: Buffer | undefined, given: Buffer | undefined, expected: Buffer): boolean {
  if (!given) return false;
  const okUser = user === undefined || user.length === 0 || user.toString('latin1') === 'default';
  // Compared as digests: constant time whatever the lengths.
  return timingSafeEqual(digest(given), expected) && okUser;
}

type Outcome =
  | { kind: 'answer'; reply: Buffer }
  | { kind: 'ok'; reply: Buffer; forward?: Buffer }
  | { kind: 'wrong'; reply: Buffer }
  | { kind: 'quit' };

function judge(args: Buffer[], expected: Buffer): Outcome {
  const name = args[0]?.toString('latin1').toUpperCase() ?? '';
  if (name === 'AUTH') {
    if (args.length < 2 || args.length > 3) {
      return { kind: 'answer', reply: respError("ERR wrong number of arguments for 'auth' command") };
    }
    const user = args.length === 3 ? args[1] : undefined;
    return passwordMatches(user, args[args.length - 1], expected)
      ? { kind: 'ok', reply: RESP_OK }
      : { kind: 'wrong', reply: respError(WRONGPASS) };
  }
  if (name === 'HELLO') {
    // HELLO [protover [AUTH username password] [SETNAME clientname]]
    const keep: string[] = ['HELLO'];
    let auth: { user: Buffer | undefined; password: Buffer | undefined } | undefined;
    for (let i = 1; i < args.length; i++) {
      const word = (args[i] as Buffer).toString('latin1');
      if (i > 1 && word.toUpperCase() === 'AUTH') {
        auth = { user: args[i + 1], password: args[i + 2] };
        i += 2;
      } else keep.push((args[i] as Buffer).toString('utf8'));
    }
    if (!auth) return { kind: 'answer', reply: respError(HELLO_NOAUTH) };
    return passwordMatches(auth.user, auth.password, expected)
      ? { kind: 'ok', reply: Buffer.alloc(0), forward: redisCommand(...keep) }
      : { kind: 'wrong', reply: respError(WRONGPASS) };
  }
  if (name === 'QUIT') return { kind: 'quit' };
  if (name === '') return { kind: 'answer', reply: Buffer.alloc(0) };
  return { kind: 'answer', reply: respError(NOAUTH) };
}

/**
 * Answer the application's commands until it authenticates with `password`. Resolves with the
 * socket paused and the bytes still to relay pushed back into it. Rejects with
 * CIPORT_E_REDIS_AUTH (wrong password three times, too many unauthenticated commands, a
 * protocol error, no authentication within the timeout, QUIT, or the socket closing), after
 * closing the socket. No message carries a password.
 */
export function authenticateRedisClient(socket: Socket, opts: RedisGateOptions): Promise<RedisClientAuth> {
  const expected = digest(opts.password);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    let failures = 0;
    let answered = 0;
    const timer = setTimeout(() => fail(`no AUTH within ${timeoutMs / 1000} s`, 'timeout'), timeoutMs);
    timer.unref();

    function cleanup() {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('close', onEnd);
    }
    function fail(what: string, reason: string, reply?: Buffer) {
      cleanup();
      if (reply && !socket.destroyed) socket.end(reply);
      else socket.destroy();
      reject(new CiportError('CIPORT_E_REDIS_AUTH', `redis: ${what}`, { details: { reason } }));
    }
    function onEnd() {
      fail('the application closed the connection before AUTH', 'closed');
    }
    function onData(chunk: Buffer) {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      for (;;) {
        let command: ReturnType<typeof readRespCommand>;
        try {
          command = readRespCommand(buffered, LIMITS);
        } catch (err) {
          const message = err instanceof RespProtocolError ? err.message : 'unreadable command';
          fail(`protocol error: ${message}`, 'protocol', respError(`ERR Protocol error: ${message}`));
          return;
        }
        if (!command) return;
        buffered = buffered.subarray(command.size);
        const outcome = judge(command.args, expected);
        if (outcome.kind === 'ok') {
          cleanup();
          socket.pause();
          const rest = outcome.forward ? Buffer.concat([outcome.forward, buffered]) : buffered;
          if (rest.length > 0) socket.unshift(rest);
          resolve({ reply: outcome.reply });
          return;
        }
        if (outcome.kind === 'quit') {
          fail('the application sent QUIT before AUTH', 'quit', RESP_OK);
          return;
        }
        if (outcome.kind === 'wrong') {
          failures += 1;
          if (failures >= MAX_FAILURES) {
            fail('wrong one-time password', 'wrong-password', outcome.reply);
            return;
          }
        } else if (++answered > MAX_UNAUTHENTICATED) {
          fail(`${MAX_UNAUTHENTICATED} commands without AUTH`, 'noauth', outcome.reply);
          return;
        }
        if (outcome.reply.length > 0) socket.write(outcome.reply);
      }
    }
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.resume();
  });
}
