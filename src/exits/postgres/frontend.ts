// Client side (`ciport exec`): the local listener speaks PostgreSQL to the application up to the
// end of its authentication. It refuses TLS/GSS encryption (loopback), reads the startup packet
// or a CancelRequest, and checks the session's one-time password with SCRAM-SHA-256. It sends
// AuthenticationSASLFinal but not AuthenticationOk: that, ParameterStatus, BackendKeyData and
// ReadyForQuery come from the real server through the exit.
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { asCiportError } from '../../errors/index.js';
import { PgError, sendErrorAndClose } from './errors.js';
import {
  authenticationSASL,
  authenticationSASLContinue,
  authenticationSASLFinal,
  CANCEL_REQUEST_CODE,
  GSSENC_REQUEST_CODE,
  MAX_STARTUP_PACKET,
  MessageReader,
  negotiateProtocolVersion,
  parseStartupParams,
  SSL_REQUEST_CODE,
} from './messages.js';
import {
  DEFAULT_ITERATIONS,
  makeScramVerifier,
  SCRAM,
  ScramError,
  ScramServer,
  type ScramVerifier,
} from './scram.js';
import type { PgStartup } from './startup-wire.js';

export type { PgStartup } from './startup-wire.js';

export interface AcceptPgClientOptions {
  /** The session's one-time password the application must present. */
  password: string;
  /** When set, the startup packet's user must be this name. */
  user?: string | undefined;
  /** Deadline of every read from the application, ms (default 10 000). */
  timeoutMs?: number | undefined;
  /** PBKDF2 iterations of the local verifier (default 4096, PostgreSQL's default). */
  iterations?: number | undefined;
}

/** SASL messages are tiny; anything larger is not a SCRAM exchange. */
const MAX_AUTH_MESSAGE = 4096;

// One verifier per one-time password (random salt), so that each connection of a session does
// not pay PBKDF2 again. Keyed by a hash, bounded.
const verifiers = new Map<string, Promise<ScramVerifier>>();
function verifierFor(password: string, iterations: number): Promise<ScramVerifier> {
  const key = createHash('sha256').update(`${iterations}\0`).update(password).digest('base64');
  let v = verifiers.get(key);
  if (!v) {
    v = makeScramVerifier(password, { iterations });
    verifiers.set(key, v);
    if (verifiers.size > 64) verifiers.delete(verifiers.keys().next().value as string);
  }
  return v;
}

const protocolError = (message: string, sqlState = '08P01') =>
  new PgError('CIPORT_E_PG_PROTOCOL', sqlState, message);

/** A boolean-ish startup parameter that turns on a replication connection. */
function isReplication(value: string | undefined): boolean {
  return value !== undefined && !['false', 'off', 'no', '0'].includes(value.toLowerCase());
}

/**
 * Run the server side of the PostgreSQL startup with an application. Resolves with the startup
 * parameters once the application proved the one-time password (SASLFinal sent), or with the
 * key of a CancelRequest (the caller forwards it and closes the socket). On any failure the
 * application gets an ErrorResponse, the socket is closed, and the promise rejects with the
 * PgError. Leftover bytes stay in the (paused) socket for the relay.
 */
export async function acceptPgClient(socket: Duplex, opts: AcceptPgClientOptions): Promise<PgStartup> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const reader = new MessageReader(socket, (why, detail) =>
    why === 'timeout'
      ? protocolError(`the application did not complete the PostgreSQL startup: ${detail}`, '08006')
      : why === 'too-large'
        ? protocolError(`invalid ${detail}`)
        : protocolError(`the application went away during the startup: ${detail}`, '08006'),
  );
  try {
    let params: Record<string, string> | undefined;
    let negotiations = 0;
    while (!params) {
      const body = await reader.readUntyped(MAX_STARTUP_PACKET, timeoutMs);
      const code = body.readInt32BE(0);
      if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) {
        // A loopback listener: no TLS, no GSS encryption. The client goes on in plaintext.
        if (body.length !== 4 || ++negotiations > 2) throw protocolError('invalid encryption negotiation');
        if (reader.buffered > 0) throw protocolError('data received after an encryption request');
        socket.write('N');
        continue;
      }
      if (code === CANCEL_REQUEST_CODE) {
        if (body.length !== 12) throw protocolError('invalid CancelRequest length');
        reader.release();
        return { kind: 'cancel', processId: body.readInt32BE(4), secretKey: body.readInt32BE(8) };
      }
      const major = code >>> 16;
      const minor = code & 0xffff;
      if (major !== 3) {
        throw protocolError(
          `unsupported frontend protocol ${major}.${minor}: ciport supports protocol 3.0`,
          '0A000', // feature_not_supported, as PostgreSQL answers
        );
      }
      try {
        params = parseStartupParams(body, 4);
      } catch (err) {
        throw protocolError((err as Error).message);
      }
      // Protocol extensions (_pq_.*) and minor versions above 0: answer as a 3.0 server does.
      const unrecognized = Object.keys(params).filter((k) => k.startsWith('_pq_.'));
      for (const k of unrecognized) delete params[k];
      if (minor > 0 || unrecognized.length > 0) socket.write(negotiateProtocolVersion(0, unrecognized));
    }

    const user = params.user;
    if (!user) throw protocolError('no PostgreSQL user name specified in startup packet', '28000');
    if (isReplication(params.replication)) {
      throw protocolError('replication connections are not supported through a ciport port', '0A000');
    }
    if (opts.user !== undefined && user !== opts.user) {
      throw new PgError(
        'CIPORT_E_PG_AUTH',
        '28000',
        `this port accepts user "${opts.user}" only, not "${user}"`,
        { hint: 'use the user name ciport exec exported (PGUSER, DATABASE_URL)' },
      );
    }

    const verifier = await verifierFor(opts.password, opts.iterations ?? DEFAULT_ITERATIONS);
    socket.write(authenticationSASL([SCRAM]));
    const scram = new ScramServer(verifier);
    try {
      const initial = await reader.readMessage(MAX_AUTH_MESSAGE, timeoutMs);
      if (initial.type !== 'p') throw protocolError(`expected SASLInitialResponse, got '${initial.type}'`);
      const mechEnd = initial.body.indexOf(0);
      const mechanism = mechEnd < 0 ? '' : initial.body.toString('utf8', 0, mechEnd);
      if (mechanism !== SCRAM) {
        throw protocolError('client selected an invalid SASL authentication mechanism');
      }
      const len = initial.body.length >= mechEnd + 5 ? initial.body.readInt32BE(mechEnd + 1) : -1;
      if (len < 0 || len !== initial.body.length - mechEnd - 5)
        throw protocolError('malformed SASLInitialResponse');
      socket.write(authenticationSASLContinue(scram.serverFirst(initial.body.toString('utf8', mechEnd + 5))));

      const response = await reader.readMessage(MAX_AUTH_MESSAGE, timeoutMs);
      if (response.type !== 'p') throw protocolError(`expected SASLResponse, got '${response.type}'`);
      const final = scram.serverFinal(response.body.toString('utf8'));
      if (final === undefined) {
        throw new PgError('CIPORT_E_PG_AUTH', '28P01', `password authentication failed for user "${user}"`, {
          hint: 'use the one-time password ciport exec exported (PGPASSWORD, DATABASE_URL)',
        });
      }
      socket.write(authenticationSASLFinal(final));
    } catch (err) {
      if (err instanceof ScramError) throw protocolError(`SCRAM exchange failed: ${err.message}`);
      throw err;
    }
    reader.release();
    return { kind: 'startup', params: { ...params } };
  } catch (err) {
    reader.release();
    const e = err instanceof PgError ? err : asCiportError(err);
    await sendErrorAndClose(socket, e);
    throw e;
  }
}
