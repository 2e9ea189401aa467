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
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { endianness } from 'node:os';
import type { Readable, Writable } from 'node:stream';

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

interface Waiter {
  peer: Endpoint;
  listener: Endpoint;
  /** `:PORT ` of the listener in the table's hex: every row of a connection to it has it. */
  needle: string;
  resolve(entry: SocketEntry | undefined): void;
  reject(err: Error): void;
  done: boolean;
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
 * a batch of connections per turn) share one scan; one asked for while a scan runs waits for the
 * next, which starts after it was asked for (the running one may have passed its row already).
 * Reads are synchronous in slices of READS_PER_TURN (a promise and a thread-pool hop per 4 KiB
 * cost a third more CPU, measured), yielding to the event loop between slices.
 */
export class SocketTable {
  readonly #file: string;
  readonly #optional: boolean;
  #running = false;
  #queued: Waiter[] = [];
  #scheduled = false;
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
        needle: `:${listener.port.toString(16).toUpperCase().padStart(4, '0')} `,
        resolve,
        reject,
        done: false,
      });
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
    const finish = (err?: Error) => {
      for (const w of waiters) {
        if (w.done) continue;
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
    let pending = waiters.length;
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
          if (lastNl >= 0) pending -= match(text.slice(0, lastNl + 1), waiters);
          if (pending === 0) {
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

/** Resolve the waiters whose row is among `lines` (whole rows); how many were resolved. */
function match(lines: string, waiters: Waiter[]): number {
  let resolved = 0;
  const seen = new Set<string>();
  for (const w of waiters) {
    if (w.done || seen.has(w.needle)) continue;
    seen.add(w.needle);
    let at = lines.indexOf(w.needle);
    while (at >= 0) {
      const from = lines.lastIndexOf('\n', at) + 1;
      const to = lines.indexOf('\n', at);
      const row = lines.slice(from, to < 0 ? undefined : to + 1);
      for (const e of parseProcNetTcp(row)) {
        for (const x of waiters) {
          if (x.done || x.needle !== w.needle) continue;
          if (e.local.port !== x.peer.port || e.remote.port !== x.listener.port) continue;
          if (e.local.address !== x.peer.address || e.remote.address !== x.listener.address) continue;
          x.done = true;
          resolved += 1;
          x.resolve(e);
        }
      }
      if (to < 0) break;
      at = lines.indexOf(w.needle, to);
    }
  }
  return resolved;
}

// NETLINK_SOCK_DIAG answers "which socket has this 4-tuple" directly (an inet_diag_req_v2 with
// the exact tuple and no dump flag: the kernel's own hash lookup, microseconds whatever the
// number of sockets), with the socket's uid and inode. Node has no netlink sockets, so a small
// Python helper (started once, on the first lookup, when `python3` is on PATH) asks for us over
// a pipe: one line per lookup, `id family src sport dst dport` → `id uid inode` | `id none` |
// `id err …`. The answer must name the tuple asked for and not a listening socket. Anything but
// a live row (helper missing or dead, error, no answer in time, not found, time-wait) falls back
// to the table scan above, so the helper can only make a lookup faster, never decide a refusal
// the table would not.
const SOCK_DIAG_PY = `
import socket, struct, sys, errno
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)
seq = 0
for line in sys.stdin:
    f = line.split()
    rid = f[0] if f else '?'
    try:
        fam, src, sport, dst, dport = int(f[1]), f[2], int(f[3]), f[4], int(f[5])
        af = socket.AF_INET if fam == 4 else socket.AF_INET6
        sa = socket.inet_pton(af, src)
        da = socket.inet_pton(af, dst)
        sockid = struct.pack('!HH', sport, dport) + sa.ljust(16, b'\\0') + da.ljust(16, b'\\0') + struct.pack('=III', 0, 0xffffffff, 0xffffffff)
        req = struct.pack('=BBBBI', af, socket.IPPROTO_TCP, 0, 0, 0xffffffff) + sockid
        seq += 1
        s.send(struct.pack('=IHHII', 16 + len(req), 20, 1, seq, 0) + req)
        while True:
            data = s.recv(65536)
            typ, rseq = struct.unpack_from('=H', data, 4)[0], struct.unpack_from('=I', data, 8)[0]
            if rseq == seq:
                break
        if typ == 2:
            err = -struct.unpack_from('=i', data, 16)[0]
            out = 'none' if err == errno.ENOENT else 'err %d' % err
        elif typ == 20:
            state = data[17]
            got = data[20:68]
            same = struct.unpack_from('!HH', got, 0) == (sport, dport) and got[4:4 + len(sa)] == sa and got[20:20 + len(da)] == da
            uid, inode = struct.unpack_from('=II', data, 80)
            out = '%d %d' % (uid, inode) if same and state != 10 else 'none'
        else:
            out = 'err type %d' % typ
    except Exception as e:
        out = 'err ' + type(e).__name__
    sys.stdout.write(rid + ' ' + out + '\\n')
    sys.stdout.flush()
`;

/** Exact lookups through NETLINK_SOCK_DIAG (see above); undefined answers mean "scan instead". */
export class SockDiag {
  #child: ChildProcessByStdio<Writable, Readable, null> | undefined;
  #dead = false;
  /** The helper answered its first (probe) line: until then lookups scan instead of waiting. */
  #ready = false;
  readonly #onReady: ((ready: boolean) => void)[] = [];
  #nextId = 1;
  #buffered = '';
  readonly #pending = new Map<number, (entry: { uid: number; inode: number } | undefined) => void>();
  readonly #command: string;
  readonly #timeoutMs: number;
  /** Lookups the helper answered with a live row (tests). */
  answered = 0;

  constructor(options: { command?: string; timeoutMs?: number } = {}) {
    this.#command = options.command ?? 'python3';
    this.#timeoutMs = options.timeoutMs ?? 1000;
  }

  /**
   * Start the helper now (the port does when it opens its listeners), so that it is ready by
   * the first connection; a lookup never waits for it to start (python3 can take a second).
   */
  start(): void {
    this.#start();
  }

  /** Resolves once the helper answers (true) or is known not to run (false). */
  whenReady(): Promise<boolean> {
    if (!this.#start()) return Promise.resolve(false);
    if (this.#ready) return Promise.resolve(true);
    return new Promise((resolve) => this.#onReady.push(resolve));
  }

  #start(): ChildProcessByStdio<Writable, Readable, null> | undefined {
    if (this.#dead) return undefined;
    if (this.#child) return this.#child;
    let child: ChildProcessByStdio<Writable, Readable, null>;
    try {
      // -I: isolated (no PYTHON* variables, no user site-packages).
      child = spawn(this.#command, ['-I', '-c', SOCK_DIAG_PY], { stdio: ['pipe', 'pipe', 'ignore'] });
    } catch {
      this.#dead = true;
      return undefined;
    }
    const die = () => {
      this.#dead = true;
      this.#child = undefined;
      for (const resolve of this.#pending.values()) resolve(undefined);
      this.#pending.clear();
    };
    child.on('error', die);
    child.on('exit', die);
    child.stdin.on('error', die);
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (text: string) => this.#read(text));
    // The helper never keeps the port's process alive.
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
    this.#child = child;
    // Any answer to the probe (port 0 is never a socket's: `none`) means it runs.
    this.#pending.set(0, () => {
      this.#ready = !this.#dead;
      for (const r of this.#onReady.splice(0)) r(this.#ready);
    });
    child.stdin.write('0 4 127.0.0.1 0 127.0.0.1 0\n');
    return child;
  }

  #read(text: string): void {
    this.#buffered += text;
    let nl = this.#buffered.indexOf('\n');
    while (nl >= 0) {
      const [id, a, b] = this.#buffered.slice(0, nl).split(' ');
      this.#buffered = this.#buffered.slice(nl + 1);
      nl = this.#buffered.indexOf('\n');
      const resolve = this.#pending.get(Number(id));
      if (!resolve) continue;
      this.#ready = true;
      this.#pending.delete(Number(id));
      const live = a !== undefined && b !== undefined && /^\d+$/.test(a) && /^\d+$/.test(b);
      resolve(live ? { uid: Number(a), inode: Number(b) } : undefined);
    }
  }

  /** The uid and inode of the socket whose local end is `peer` and remote end `listener`. */
  lookup(peer: Endpoint, listener: Endpoint): Promise<{ uid: number; inode: number } | undefined> {
    const p = normalizeAddress(peer.address);
    const l = normalizeAddress(listener.address);
    const family = isIPv4(p) && isIPv4(l) ? 4 : isIPv6(p) && isIPv6(l) ? 6 : 0;
    if (family === 0) return Promise.resolve(undefined);
    const child = this.#start();
    if (!child || !this.#ready) return Promise.resolve(undefined);
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve(undefined);
      }, this.#timeoutMs);
      timer.unref();
      this.#pending.set(id, (entry) => {
        clearTimeout(timer);
        if (entry) this.answered += 1;
        resolve(entry);
      });
      child.stdin.write(`${id} ${family} ${p} ${peer.port} ${l} ${listener.port}\n`);
    });
  }

  /** Stop the helper (tests; the port's process does not wait for it). */
  close(): void {
    this.#child?.kill();
    this.#dead = true;
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
  options: {
    uid?: number;
    tables?: SocketTable[];
    platform?: NodeJS.Platform;
    /** The exact lookup tried first (default: one SockDiag; false: scan only). */
    diag?: SockDiag | false;
  } = {},
): PeerCheck | undefined {
  if ((options.platform ?? process.platform) !== 'linux') return undefined;
  const uid = options.uid ?? process.geteuid?.() ?? -1;
  // tcp first: a peer on an AF_INET6 socket (tcp6) is the exception, so tcp6 is read only then.
  const tables = options.tables ?? [
    new SocketTable('/proc/net/tcp'),
    new SocketTable('/proc/net/tcp6', true),
  ];
  const diag = options.diag === undefined ? new SockDiag() : options.diag;
  if (diag) diag.start();
  return async (socket) => {
    const { remoteAddress, remotePort, localAddress, localPort } = socket;
    if (!remoteAddress || !remotePort || !localAddress || !localPort) {
      return { ok: false, reason: 'the connection has no address (already closed)' };
    }
    const peer = { address: remoteAddress, port: remotePort };
    const listener = { address: localAddress, port: localPort };
    let found: number | undefined;
    const exact = diag ? await diag.lookup(peer, listener) : undefined;
    if (exact && exact.inode !== 0) found = exact.uid;
    for (const table of found === undefined ? tables : []) {
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
