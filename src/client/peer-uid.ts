// Who is on the other end of a local connection? On Linux the kernel lists every TCP socket of
// the network namespace in /proc/net/tcp and /proc/net/tcp6 with the uid that created it. The
// connecting process's socket is the entry whose local end is our peer's address and port and
// whose remote end is our listener's: its `uid` column is the peer's user.
//
// Row format (fields separated by spaces): `sl local rem st queues timers retrnsmt uid timeout
// inode …`; addresses are hex words in host byte order (`0100007F:1F90` is 127.0.0.1:8080 on
// little-endian), IPv6 as four such words; an IPv4 peer using an AF_INET6 socket shows up in
// tcp6 as ::ffff:a.b.c.d. A socket its process has already closed lingers as a time-wait entry
// with uid 0 and inode 0: that says nothing about the peer, so it counts as "not found".
import { closeSync, openSync, readSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { endianness } from 'node:os';

export interface SocketEntry {
  local: { address: string; port: number };
  remote: { address: string; port: number };
  uid: number;
  inode: number;
}

export interface Endpoint {
  address: string;
  port: number;
}

/** A hex address of /proc/net/tcp{,6} as text (`127.0.0.1`, `::1`; v4-mapped as IPv4). */
export function procAddress(hex: string, littleEndian = endianness() === 'LE'): string | undefined {
  if (hex.length !== 8 && hex.length !== 32) return undefined;
  if (!/^[0-9A-Fa-f]+$/.test(hex)) return undefined;
  const bytes = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) {
    const word = Buffer.from(hex.slice(w * 8, w * 8 + 8), 'hex');
    if (littleEndian) word.reverse();
    word.copy(bytes, w * 4);
  }
  if (bytes.length === 4) return bytes.join('.');
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return bytes.subarray(12).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return normalizeAddress(groups.join(':'));
}

/** One canonical text per address: IPv4 dotted (also for ::ffff:a.b.c.d), IPv6 fully expanded. */
export function normalizeAddress(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1] as string;
  if (isIPv4(address) || !isIPv6(address)) return address;
  // A dotted IPv4 tail (`::1.2.3.4`, `0:…:0.0.0.0`) is the last two groups.
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
  const hexOnly = dotted
    ? `${address.slice(0, dotted.index)}${((Number(dotted[1]) << 8) | Number(dotted[2])).toString(16)}:${((Number(dotted[3]) << 8) | Number(dotted[4])).toString(16)}`
    : address;
  const [head = '', tail] = hexOnly.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const middle = tail === undefined ? [] : Array(8 - left.length - right.length).fill('0');
  const full = [...left, ...middle, ...right].map((g) => Number.parseInt(g, 16));
  if (full.length === 8 && full.slice(0, 5).every((g) => g === 0) && full[5] === 0xffff) {
    const v4 = (full[6] as number) * 65536 + (full[7] as number);
    return [v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255].join('.');
  }
  return full.map((g) => g.toString(16)).join(':');
}

/**
 * How /proc/net/tcp{,6} writes an address (the inverse of procAddress): `width` 8 for the IPv4
 * table, 32 for the IPv6 one, where an IPv4 address on an AF_INET6 socket is ::ffff:a.b.c.d.
 * Each 32-bit word in host byte order, upper-case hex (the kernel's `%08X`). Undefined when the
 * address cannot appear in that table (IPv6 in the IPv4 table) or is not an address.
 */
export function procHex(
  address: string,
  width: 8 | 32,
  littleEndian = endianness() === 'LE',
): string | undefined {
  const a = normalizeAddress(address);
  let bytes: number[];
  if (isIPv4(a)) {
    const v4 = a.split('.').map(Number);
    bytes = width === 8 ? v4 : [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4];
  } else if (isIPv6(a) && width === 32) {
    bytes = a.split(':').flatMap((g) => {
      const n = Number.parseInt(g, 16);
      return [n >> 8, n & 0xff];
    });
  } else return undefined;
  let out = '';
  for (let w = 0; w < bytes.length; w += 4) {
    const word = bytes.slice(w, w + 4);
    if (littleEndian) word.reverse();
    for (const b of word) out += b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

const portHex = (port: number): string => port.toString(16).toUpperCase().padStart(4, '0');

/**
 * The text of the local and remote columns of the row of the socket from `peer` to `listener`,
 * in either table: ` PEER:PORT LISTENER:PORT ` (a row's only place with two addresses side by
 * side, so a match is that row and nothing else).
 */
export function rowNeedles(
  peer: Endpoint,
  listener: Endpoint,
  littleEndian = endianness() === 'LE',
): string[] {
  const out: string[] = [];
  for (const width of [8, 32] as const) {
    const p = procHex(peer.address, width, littleEndian);
    const l = procHex(listener.address, width, littleEndian);
    if (p && l) out.push(` ${p}:${portHex(peer.port)} ${l}:${portHex(listener.port)} `);
  }
  return out;
}

function endpoint(field: string | undefined, littleEndian: boolean): Endpoint | undefined {
  const [hex, portHex] = (field ?? '').split(':');
  if (!hex || !portHex || !/^[0-9A-Fa-f]{4}$/.test(portHex)) return undefined;
  const address = procAddress(hex, littleEndian);
  return address === undefined ? undefined : { address, port: Number.parseInt(portHex, 16) };
}

/**
 * Every well-formed row of a /proc/net/tcp or tcp6 file; the header and bad rows are skipped.
 * With `port`, only rows with that port at either end (a cheap text test first: a busy runner
 * lists thousands of sockets, and parsing them all costs more than reading them).
 */
export function parseProcNetTcp(
  text: string,
  littleEndian = endianness() === 'LE',
  port?: number | undefined,
): SocketEntry[] {
  const entries: SocketEntry[] = [];
  const needle = port === undefined ? undefined : `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  for (const row of text.split('\n')) {
    if (needle && !row.includes(needle)) continue;
    const f = row.trim().split(/\s+/);
    if (f.length < 10 || !/^\d+:$/.test(f[0] as string)) continue;
    const local = endpoint(f[1], littleEndian);
    const remote = endpoint(f[2], littleEndian);
    const uid = f[7] as string;
    const inode = f[9] as string;
    if (!local || !remote || !/^\d+$/.test(uid) || !/^\d+$/.test(inode)) continue;
    entries.push({ local, remote, uid: Number(uid), inode: Number(inode) });
  }
  return entries;
}

/**
 * The uid of the socket whose local end is `peer` and remote end is `listener`, or undefined
 * when there is no live such socket (gone, time-wait) or the rows disagree.
 */
export function peerUid(entries: SocketEntry[], peer: Endpoint, listener: Endpoint): number | undefined {
  const p = normalizeAddress(peer.address);
  const l = normalizeAddress(listener.address);
  const uids = new Set<number>();
  for (const e of entries) {
    if (e.local.port !== peer.port || e.remote.port !== listener.port) continue;
    if (e.local.address !== p || e.remote.address !== l) continue;
    if (e.inode === 0) return undefined;
    uids.add(e.uid);
  }
  return uids.size === 1 ? [...uids][0] : undefined;
}

interface Waiter {
  peer: Endpoint;
  listener: Endpoint;
  /** The peer's row as the table writes it (rowNeedles): found by one native search, no parsing. */
  needles: string[];
  resolve(entry: SocketEntry | undefined): void;
  reject(err: Error): void;
  done: boolean;
  /** Joined a scan already running: its row may be behind the scan, so not found means "scan again". */
  late?: boolean;
}

/** read(2) calls per event-loop turn of a scan: ~4 KiB each, so ~128 KiB (a few ms) at a time. */
const READS_PER_TURN = 32;

/**
 * Lookups in one socket table file, sharing scans. Reading the table is the cost: the kernel
 * formats every socket of the namespace (time-wait ones included, ~2 µs each; a runner that has
 * opened thousands of connections lists thousands) and hands it out about 4 KiB per read(2).
 * So a scan stops as soon as every lookup it carries has found its row: the kernel keeps at
 * most one live socket per 4-tuple, so the first row with the peer's 4-tuple is the one (on
 * average half the table is read). Lookups asked for in the same event-loop turn (Node accepts
 * a batch of connections per turn) share one scan; one asked for while a scan runs joins it for
 * the rest of the table and, if its row was not in that rest (the scan may have passed it),
 * waits for the next scan, which starts after it was asked for.
 * Reads are synchronous in slices of READS_PER_TURN (a promise and a thread-pool hop per 4 KiB
 * cost a third more CPU, measured), yielding to the event loop between slices.
 */
export class SocketTable {
  readonly #file: string;
  readonly #optional: boolean;
  #running = false;
  #queued: Waiter[] = [];
  #scheduled = false;
  /** The running scan's waiters and how many are still unresolved (late joiners are added). */
  #current: { waiters: Waiter[]; pending: number } | undefined;
  /** Scans started so far (tests: lookups share scans). */
  scans = 0;

  /** `optional`: a missing file is an empty table (tcp6 when IPv6 is disabled). */
  constructor(file: string, optional = false) {
    this.#file = file;
    this.#optional = optional;
  }

  /** The first row whose local end is `peer` and remote end is `listener` (undefined: none). */
  lookup(peer: Endpoint, listener: Endpoint): Promise<SocketEntry | undefined> {
    return new Promise((resolve, reject) => {
      this.#queued.push({
        peer: { address: normalizeAddress(peer.address), port: peer.port },
        listener: { address: normalizeAddress(listener.address), port: listener.port },
        needles: rowNeedles(peer, listener),
        resolve,
        reject,
        done: false,
      });
      if (this.#current) {
        // Join the running scan for the rest of the table (see the class comment).
        const w = this.#queued.pop() as Waiter;
        w.late = true;
        this.#current.waiters.push(w);
        this.#current.pending += 1;
        return;
      }
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#running || this.#scheduled || this.#queued.length === 0) return;
    this.#scheduled = true;
    // After the current turn: the connections accepted in it join this scan.
    setImmediate(() => {
      this.#scheduled = false;
      if (this.#running || this.#queued.length === 0) return;
      const waiters = this.#queued;
      this.#queued = [];
      this.#running = true;
      this.scans += 1;
      this.#scan(waiters);
    });
  }

  #scan(waiters: Waiter[]): void {
    const current = { waiters, pending: waiters.length };
    this.#current = current;
    const finish = (err?: Error) => {
      this.#current = undefined;
      for (const w of current.waiters) {
        if (w.done) continue;
        if (w.late && !err) {
          w.late = false;
          this.#queued.push(w);
          continue;
        }
        w.done = true;
        if (err) w.reject(err);
        else w.resolve(undefined);
      }
      this.#running = false;
      this.#schedule();
    };
    let fd: number;
    try {
      fd = openSync(this.#file, 'r');
    } catch (err) {
      if (this.#optional && (err as NodeJS.ErrnoException).code === 'ENOENT') finish();
      else finish(err as Error);
      return;
    }
    const buf = Buffer.allocUnsafe(64 * 1024);
    let carry = '';
    const close = (err?: Error) => {
      try {
        closeSync(fd);
      } catch {
        // nothing to do
      }
      finish(err);
    };
    const slice = () => {
      try {
        for (let i = 0; i < READS_PER_TURN; i++) {
          const n = readSync(fd, buf, 0, buf.length, null);
          if (n === 0) {
            close();
            return;
          }
          const text = carry + buf.toString('latin1', 0, n);
          const lastNl = text.lastIndexOf('\n');
          carry = lastNl < 0 ? text : text.slice(lastNl + 1);
          if (lastNl >= 0) current.pending -= match(text.slice(0, lastNl + 1), current.waiters);
          if (current.pending === 0) {
            close();
            return;
          }
        }
      } catch (err) {
        close(err as Error);
        return;
      }
      setImmediate(slice);
    };
    slice();
  }
}

/** Beyond this many lookups in one slice, rows are found by their listener column (matchMany). */
const NEEDLE_LOOKUPS = 4;

/**
 * Resolve the waiters whose row is among `lines` (whole rows); how many were resolved. A few
 * lookups search for their own row as text (its 4-tuple in the table's hex), so only that row is
 * parsed, however many other rows name the listener (thousands of time-wait rows on a busy
 * runner). Many lookups at once (a burst of connections) would make that one search of the
 * whole slice each: they are found by one pass over the rows that name their listener instead.
 */
function match(lines: string, waiters: Waiter[]): number {
  const pending = waiters.filter((w) => !w.done);
  if (pending.length > NEEDLE_LOOKUPS) return matchMany(lines, pending);
  let resolved = 0;
  for (const w of pending) {
    let at = -1;
    for (const needle of w.needles) {
      const i = lines.indexOf(needle);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0 && resolveFromRow(lines, at, w)) resolved += 1;
  }
  return resolved;
}

/**
 * Many lookups: for each listener column text among them (` LISTENERHEX:PORT `, the second half
 * of a needle), walk its occurrences once and look the column before it (the peer's) up in a map
 * of the lookups: one map lookup per row that names the listener, whatever the number of lookups.
 */
function matchMany(lines: string, pending: Waiter[]): number {
  // listener column → (peer column → waiter)
  const byListener = new Map<string, Map<string, Waiter>>();
  for (const w of pending) {
    for (const needle of w.needles) {
      const split = needle.indexOf(' ', 1);
      const peerColumn = needle.slice(1, split);
      const listenerColumn = needle.slice(split);
      const peers = byListener.get(listenerColumn) ?? new Map<string, Waiter>();
      byListener.set(listenerColumn, peers);
      if (!peers.has(peerColumn)) peers.set(peerColumn, w);
    }
  }
  let resolved = 0;
  for (const [listenerColumn, peers] of byListener) {
    for (let at = lines.indexOf(listenerColumn); at >= 0; at = lines.indexOf(listenerColumn, at + 1)) {
      const w = peers.get(lines.slice(lines.lastIndexOf(' ', at - 1) + 1, at));
      if (!w || w.done) continue;
      if (resolveFromRow(lines, at, w)) resolved += 1;
    }
  }
  return resolved;
}

/** Parse the row around `at` and resolve `w` with it when it is that lookup's row. */
function resolveFromRow(lines: string, at: number, w: Waiter): boolean {
  const from = lines.lastIndexOf('\n', at) + 1;
  const to = lines.indexOf('\n', at);
  for (const e of parseProcNetTcp(lines.slice(from, to < 0 ? undefined : to + 1))) {
    if (e.local.port !== w.peer.port || e.remote.port !== w.listener.port) continue;
    if (e.local.address !== w.peer.address || e.remote.address !== w.listener.address) continue;
    w.done = true;
    w.resolve(e);
    return true;
  }
  return false;
}

export type PeerVerdict = { ok: true; uid: number } | { ok: false; uid?: number | undefined; reason: string };

/** Decides whether an accepted local socket may use the port. */
export type PeerCheck = (socket: {
  remoteAddress?: string | undefined;
  remotePort?: number | undefined;
  localAddress?: string | undefined;
  localPort?: number | undefined;
}) => Promise<PeerVerdict>;

/**
 * Linux: only sockets created by `uid` (default: this process's effective uid) or root pass; a peer that
 * cannot be identified (tables unreadable, its socket already gone) is refused. Elsewhere
 * undefined: no check (docs/client.md, "Who can use the port").
 */
export function sameUserCheck(
  options: { uid?: number; tables?: SocketTable[]; platform?: NodeJS.Platform } = {},
): PeerCheck | undefined {
  if ((options.platform ?? process.platform) !== 'linux') return undefined;
  const uid = options.uid ?? process.geteuid?.() ?? -1;
  // tcp first: a peer on an AF_INET6 socket (tcp6) is the exception, so tcp6 is read only then.
  const tables = options.tables ?? [
    new SocketTable('/proc/net/tcp'),
    new SocketTable('/proc/net/tcp6', true),
  ];
  return async (socket) => {
    const { remoteAddress, remotePort, localAddress, localPort } = socket;
    if (!remoteAddress || !remotePort || !localAddress || !localPort) {
      return { ok: false, reason: 'the connection has no address (already closed)' };
    }
    const peer = { address: remoteAddress, port: remotePort };
    const listener = { address: localAddress, port: localPort };
    let found: number | undefined;
    for (const table of tables) {
      let entry: SocketEntry | undefined;
      try {
        entry = await table.lookup(peer, listener);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        return { ok: false, reason: `cannot read the socket table (${code})` };
      }
      // A time-wait row (inode 0) says nothing about who the peer was: not found.
      if (entry && entry.inode !== 0) {
        found = entry.uid;
        break;
      }
    }
    if (found === undefined) return { ok: false, reason: 'the connecting socket is not in the socket table' };
    // root passes too: it can read the job's memory and environment anyway, and `sudo curl …` or
    // a rootful `docker run --network host` then keep working.
    if (found !== uid && found !== 0)
      return { ok: false, uid: found, reason: `uid ${found} is not this job's uid ${uid}` };
    return { ok: true, uid: found };
  };
}
