// Signed-in operators (docs/sso.md): one row per console sign-in (a cookie) or `ciport login`
// (a bearer token), keyed by the SHA-256 of the secret the browser or CLI holds, never the secret
// itself. In the store rather than in a gateway's memory so gateways sharing a PostgreSQL store
// behind one load balancer all accept it, a restart signs nobody out, and signing out is final
// everywhere at once.
import type { Kysely } from 'kysely';
import { CiportError } from '../errors/index.js';
import { type Database, toInt } from './schema.js';

export type OperatorSessionKind = 'browser' | 'cli';

/** A signed-in operator as stored. Times are epoch milliseconds. */
export interface OperatorSessionRecord {
  /** hex SHA-256 of the operator's secret (cookie or bearer token). */
  secretHash: string;
  kind: OperatorSessionKind;
  issuer: string;
  subject: string;
  email: string | null;
  name: string | null;
  username: string | null;
  roles: string[];
  groups: string[];
  createdAt: number;
  expiresAt: number;
  endedAt: number | null;
}

/** The store part operator sign-in uses (src/web, src/gateway). */
export interface OperatorSessionStore {
  /** Record a sign-in. Also removes rows that expired or ended over a day before `createdAt`. */
  createOperatorSession(record: Omit<OperatorSessionRecord, 'endedAt'>): Promise<void>;
  /** The sign-in whose secret hashes to `secretHash`, if it has not ended or expired at `now`. */
  operatorSession(secretHash: string, now: number): Promise<OperatorSessionRecord | undefined>;
  /** Sign out: true when a live sign-in was ended now. */
  endOperatorSession(secretHash: string, now: number): Promise<boolean>;
}

type Write = <T>(fn: (trx: Kysely<Database>) => Promise<T>) => Promise<T>;

const DAY_MS = 86_400_000;
const HASH_RE = /^[0-9a-f]{64}$/;

function checkHash(secretHash: string): void {
  if (typeof secretHash !== 'string' || !HASH_RE.test(secretHash)) {
    throw new CiportError('CIPORT_E_INTERNAL', 'an operator session is keyed by a hex SHA-256');
  }
}

export async function createOperatorSession(
  write: Write,
  r: Omit<OperatorSessionRecord, 'endedAt'>,
): Promise<void> {
  checkHash(r.secretHash);
  await write(async (trx) => {
    await trx
      .deleteFrom('operator_sessions')
      .where((eb) =>
        eb.or([eb('expires_at', '<', r.createdAt - DAY_MS), eb('ended_at', '<', r.createdAt - DAY_MS)]),
      )
      .execute();
    await trx
      .insertInto('operator_sessions')
      .values({
        secret_hash: r.secretHash,
        kind: r.kind,
        issuer: r.issuer,
        subject: r.subject,
        email: r.email,
        name: r.name,
        username: r.username,
        roles: JSON.stringify(r.roles),
        groups: JSON.stringify(r.groups),
        created_at: r.createdAt,
        expires_at: r.expiresAt,
        ended_at: null,
      })
      .execute();
  });
}

function stringList(json: string): string[] {
  const value: unknown = JSON.parse(json);
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

export async function operatorSession(
  db: Kysely<Database>,
  secretHash: string,
  now: number,
): Promise<OperatorSessionRecord | undefined> {
  if (!HASH_RE.test(secretHash)) return undefined;
  const r = await db
    .selectFrom('operator_sessions')
    .selectAll()
    .where('secret_hash', '=', secretHash)
    .where('ended_at', 'is', null)
    .where('expires_at', '>', now)
    .executeTakeFirst();
  if (!r) return undefined;
  return {
    secretHash: r.secret_hash,
    kind: r.kind === 'cli' ? 'cli' : 'browser',
    issuer: r.issuer,
    subject: r.subject,
    email: r.email,
    name: r.name,
    username: r.username,
    roles: stringList(r.roles),
    groups: stringList(r.groups),
    createdAt: toInt(r.created_at),
    expiresAt: toInt(r.expires_at),
    endedAt: null,
  };
}

export async function endOperatorSession(write: Write, secretHash: string, now: number): Promise<boolean> {
  if (!HASH_RE.test(secretHash)) return false;
  return write(async (trx) => {
    const r = await trx
      .updateTable('operator_sessions')
      .set({ ended_at: now })
      .where('secret_hash', '=', secretHash)
      .where('ended_at', 'is', null)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  });
}
