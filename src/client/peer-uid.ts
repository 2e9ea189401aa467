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
import { open } from 'node:fs/promises';
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
  const [head = '', tail] = address.toLowerCase().split('::');
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

/**
 * The whole file. The kernel hands out /proc/net/tcp about 4 KiB per read(2), so a busy runner's
 * table (thousands of time-wait rows) takes a hundred calls: read into one large buffer
 * (readFile's growth strategy made it ten times slower, measured), asynchronously, so the
 * event loop keeps accepting meanwhile and those connections share the next read.
 */
async function readProcFile(file: string): Promise<string> {
  const fh = await open(file, 'r');
  try {
    let buf = Buffer.allocUnsafe(1 << 20);
    let n = 0;
    for (;;) {
      if (n === buf.length) {
        const bigger = Buffer.allocUnsafe(buf.length * 2);
        buf.copy(bigger, 0, 0, n);
        buf = bigger;
      }
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return buf.toString('latin1', 0, n);
  } finally {
    await fh.close();
  }
}

/**
 * Reads of one socket table file, shared: a lookup joins the next read that starts after it was
 * asked for (a read already under way may predate its connection). Node accepts one connection
 * per turn of the event loop, so while a read runs the next batch gathers: 500 parallel
 * connections cost two reads, not 500. Each lookup parses the text for its own port only.
 */
export class SocketTable {
  readonly #file: string;
  readonly #optional: boolean;
  #running: Promise<string> | undefined;
  #queued: Promise<string> | undefined;

  /** `optional`: a missing file is an empty table (tcp6 when IPv6 is disabled). */
  constructor(file: string, optional = false) {
    this.#file = file;
    this.#optional = optional;
  }

  snapshot(): Promise<string> {
    if (!this.#running) {
      const run = readProcFile(this.#file).catch((err: NodeJS.ErrnoException) => {
        if (this.#optional && err.code === 'ENOENT') return '';
        throw err;
      });
      this.#running = run;
      const clear = () => {
        if (this.#running === run) this.#running = undefined;
      };
      run.then(clear, clear);
      return run;
    }
    this.#queued ??= this.#running.then(
      () => this.#next(),
      () => this.#next(),
    );
    return this.#queued;
  }

  #next(): Promise<string> {
    this.#queued = undefined;
    return this.snapshot();
  }
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
  // The rows of the last text read, per port: a batch of connections shares one parse.
  let last: { text: string; rows: Map<number, SocketEntry[]> } | undefined;
  const parsed = (text: string, port: number): SocketEntry[] => {
    if (last?.text !== text) last = { text, rows: new Map() };
    let rows = last.rows.get(port);
    if (!rows) {
      rows = parseProcNetTcp(text, undefined, port);
      last.rows.set(port, rows);
    }
    return rows;
  };
  return async (socket) => {
    const { remoteAddress, remotePort, localAddress, localPort } = socket;
    if (!remoteAddress || !remotePort || !localAddress || !localPort) {
      return { ok: false, reason: 'the connection has no address (already closed)' };
    }
    const peer = { address: remoteAddress, port: remotePort };
    const listener = { address: localAddress, port: localPort };
    let found: number | undefined;
    for (const table of tables) {
      let text: string;
      try {
        text = await table.snapshot();
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        return { ok: false, reason: `cannot read the socket table (${code})` };
      }
      found = peerUid(parsed(text, localPort), peer, listener);
      if (found !== undefined) break;
    }
    if (found === undefined) return { ok: false, reason: 'the connecting socket is not in the socket table' };
    // root passes too: it can read the job's memory and environment anyway, and `sudo curl …` or
    // a rootful `docker run --network host` then keep working.
    if (found !== uid && found !== 0)
      return { ok: false, uid: found, reason: `uid ${found} is not this job's uid ${uid}` };
    return { ok: true, uid: found };
  };
}
