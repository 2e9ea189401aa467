// Protocol `redis`: credential injection at the exit. The application talks to its local port
// without a password; the exit dials Redis (TLS when the target says so), sends `AUTH` with the
// target's credentials and `SELECT` for its database, checks the replies, and from then on the
// tunnel relays raw bytes. The password never leaves this module except on the wire to Redis.
import { isIP, type Socket } from 'node:net';
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { TargetOf } from '../../config/targets/index.js';
import { CiportError } from '../../errors/index.js';
import { dialTcp, splitHostPort } from '../tcp/exit.js';
import { redisCommand } from './resp.js';

export interface RedisUpstreamOptions {
  /** The whole connect + TLS + AUTH/SELECT exchange must finish within this. */
  timeoutMs: number;
  /** Abort the attempt (the session ended or the stream went away meanwhile). */
  signal?: AbortSignal | undefined;
}

/** Longest handshake reply line accepted (without its CRLF); a longer one fails the handshake. */
export const MAX_REDIS_REPLY = 4096;
/** Characters of an upstream error reply kept in the error message. */
const MAX_REPLY_IN_MESSAGE = 200;

/** True when the exit has something to inject: a password (AUTH) or a database (SELECT). */
export function redisInjects(target: TargetOf<'redis'>): boolean {
  return target.credentials?.password !== undefined || target.database !== undefined;
}

interface Step {
  /** What the reply answers, for messages: never carries an argument. */
  name: 'AUTH' | 'SELECT';
  wire: Buffer;
}

function handshakeSteps(target: TargetOf<'redis'>): Step[] {
  const steps: Step[] = [];
  const password = target.credentials?.password;
  if (password !== undefined) {
    const user = target.credentials?.user;
    const wire =
      user === undefined
        ? redisCommand('AUTH', password.reveal())
        : redisCommand('AUTH', user, password.reveal());
    steps.push({ name: 'AUTH', wire });
  }
  // A whole number ≥ 0: the schema refuses anything else (src/config/targets/redis.ts).
  if (target.database !== undefined) {
    steps.push({ name: 'SELECT', wire: redisCommand('SELECT', String(target.database)) });
  }
  return steps;
}

/**
 * Dial the target, wrap it in TLS when `target.tls` is set (verified against `tls.ca`, or the
 * system roots, and `tls.servername` or the host), send `AUTH [user] password` and
 * `SELECT n` as configured, and check that each reply is `+…`. Resolves with the socket paused and
 * positioned right after the last reply: any byte that followed the replies is unshifted back, so
 * the caller can start a raw relay.
 *
 * Rejects with CIPORT_E_UPSTREAM_UNREACHABLE (connect failure, timeout, abort, a reply that is not
 * a bounded simple string or error, the connection closing), CIPORT_E_TLS, CIPORT_E_UPSTREAM_AUTH
 * (Redis refused AUTH or SELECT: `details.reply` is the error's first word, e.g. WRONGPASS). No
 * message contains the password.
 */
export async function connectRedisUpstream(
  target: TargetOf<'redis'>,
  options: RedisUpstreamOptions,
): Promise<Socket | TLSSocket> {
  try {
    return await handshake(target, options);
  } catch (err) {
    // WRONGPASS / NOAUTH: a provider-backed password may have been rotated. It is read again
    // (rate-limited); when it changed, one more attempt with it before the app sees the error.
    const auth =
      err instanceof CiportError && err.code === 'CIPORT_E_UPSTREAM_AUTH' && err.details?.step === 'auth';
    if (!auth || !(await target.credentials?.password?.refused())) throw err;
    return handshake(target, options);
  }
}

async function handshake(
  target: TargetOf<'redis'>,
  options: RedisUpstreamOptions,
): Promise<Socket | TLSSocket> {
  const steps = handshakeSteps(target);
  const deadline = Date.now() + options.timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  const plain = await dialTcp(target.address, { timeoutMs: left(), signal: options.signal });
  let socket: Socket | TLSSocket = plain;
  try {
    if (target.tls) socket = await startTls(plain, target, left(), options.signal);
    if (steps.length > 0) {
      const password = target.credentials?.password?.reveal();
      // Pipelined: Redis answers in order, and after a refused AUTH the SELECT only gets -NOAUTH.
      socket.write(Buffer.concat(steps.map((s) => s.wire)));
      const replies = await readReplies(socket, steps.length, left(), options.signal, target.address);
      replies.forEach((reply, i) => {
        if (reply.startsWith('-')) throw refused(target, (steps[i] as Step).name, reply, password);
      });
    }
    return socket;
  } catch (err) {
    socket.destroy();
    plain.destroy();
    throw err;
  }
}

function startTls(
  plain: Socket,
  target: TargetOf<'redis'>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<TLSSocket> {
  const tlsObj = typeof target.tls === 'object' ? target.tls : undefined;
  const name = tlsObj?.servername ?? splitHostPort(target.address).host;
  // Only set what applies: an explicit `undefined` would override tls.connect's defaults.
  const tlsOptions: ConnectionOptions = { socket: plain, host: name, rejectUnauthorized: true };
  if (!isIP(name)) tlsOptions.servername = name;
  if (tlsObj?.ca) tlsOptions.ca = [tlsObj.ca.reveal()];
  const socket = tlsConnect(tlsOptions);
  return new Promise<TLSSocket>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    const onAbort = () => fail(new Error('aborted'), 'CIPORT_E_UPSTREAM_UNREACHABLE');
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    function cleanup() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.removeListener('secureConnect', ok);
      socket.removeListener('error', fail);
    }
    function fail(err: Error, code: 'CIPORT_E_TLS' | 'CIPORT_E_UPSTREAM_UNREACHABLE' = 'CIPORT_E_TLS') {
      cleanup();
      socket.destroy();
      reject(
        new CiportError(code, `TLS to upstream ${target.address} failed: ${err.message}`, {
          cause: err,
          details: { reason: (err as NodeJS.ErrnoException).code ?? err.message },
        }),
      );
    }
    function ok() {
      cleanup();
      socket.pause();
      resolve(socket);
    }
    socket.once('secureConnect', ok);
    socket.once('error', fail);
  });
}

/**
 * Read `count` reply lines (each a RESP simple string `+…` or error `-…`, at most
 * MAX_REDIS_REPLY bytes before its CRLF) within `timeoutMs`. Bytes past the last CRLF go back to
 * the socket with unshift(); the socket is left paused.
 */
function readReplies(
  socket: Socket | TLSSocket,
  count: number,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  address: string,
): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const replies: string[] = [];
    let buffered: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(`no reply within ${timeoutMs} ms`, 'timeout'), timeoutMs);
    timer.unref();
    const onAbort = () => fail('aborted', 'aborted');
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });

    function cleanup() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('close', onEnd);
      socket.removeListener('error', onError);
      socket.pause();
    }
    function fail(what: string, reason: string) {
      cleanup();
      reject(
        new CiportError(
          'CIPORT_E_UPSTREAM_UNREACHABLE',
          `upstream ${address} did not complete the Redis handshake: ${what}`,
          { details: { reason } },
        ),
      );
    }
    function onEnd() {
      fail('the connection closed', 'closed');
    }
    function onError(err: NodeJS.ErrnoException) {
      fail(`connection error (${err.code ?? 'error'})`, err.code ?? 'error');
    }
    function onData(chunk: Buffer) {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (replies.length < count) {
        // Only the first MAX_REDIS_REPLY + 2 bytes may hold the end of the line.
        const window = buffered.subarray(0, MAX_REDIS_REPLY + 2);
        const eol = window.indexOf('\r\n');
        if (eol < 0) {
          if (buffered.length > MAX_REDIS_REPLY + 1) {
            fail(`a reply is longer than ${MAX_REDIS_REPLY} bytes`, 'oversized-reply');
          }
          return;
        }
        const type = buffered[0];
        if (type !== 0x2b && type !== 0x2d) {
          // '+' or '-' only: AUTH and SELECT answer nothing else; bulk, arrays, RESP3 are not Redis.
          fail('the reply is not a RESP simple string or error', 'unexpected-reply');
          return;
        }
        replies.push(buffered.toString('utf8', 0, eol));
        buffered = buffered.subarray(eol + 2);
      }
      cleanup();
      if (buffered.length > 0) socket.unshift(buffered);
      resolve(replies);
    }
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.once('error', onError);
    socket.resume();
  });
}

/** Redis refused a step: the first line, printable and capped, with the password masked. */
function refused(
  target: TargetOf<'redis'>,
  step: 'AUTH' | 'SELECT',
  reply: string,
  password: string | undefined,
): CiportError {
  let text = reply.slice(1);
  const first = /^[A-Z]{1,32}(?![A-Za-z])/.exec(text)?.[0];
  const word = first && !(password && first.includes(password)) ? first : 'ERR';
  if (password) text = text.split(password).join('***');
  text = text.replace(/[^\x20-\x7e]/g, '?');
  if (text.length > MAX_REPLY_IN_MESSAGE) text = `${text.slice(0, MAX_REPLY_IN_MESSAGE)}…`;
  const user = target.credentials?.user;
  const who =
    step === 'AUTH' ? `AUTH${user ? ` as ${JSON.stringify(user)}` : ''}` : `SELECT ${target.database}`;
  return new CiportError('CIPORT_E_UPSTREAM_AUTH', `upstream ${target.address} refused ${who}: ${text}`, {
    details: { step: step.toLowerCase(), reply: word },
  });
}
