// The sign-ins `ciport login` keeps (docs/login.md): one `cpo_` operator token per gateway URL in
// `$XDG_CONFIG_HOME/ciport/credentials.json` (default ~/.config). The token opens the admin API
// as its person until it expires, so the file is treated like an SSH private key:
// - the directory is made 0700 and the file 0600, written to a fresh temporary file (O_EXCL)
//   that is flushed and renamed over the old one, so a crash never leaves half a file;
// - it is refused, for reading and writing alike (CIPORT_E_CREDENTIALS_INSECURE), when the file
//   or directory is a symbolic link, not a regular file/directory, owned by another user, or has
//   any group or other permission bit: a token others could read or replace is not used.
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  type Stats,
  writeSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { CiportError } from '../../errors/index.js';
import { isOperatorSecret } from '../../identity/operator-secret.js';
import { type OperatorView, parseOperatorView } from '../../transport/operator-login.js';

/** One gateway's sign-in as cached. */
export interface CachedSignIn {
  token: string;
  expires_at: string;
  signed_in_at: string;
  operator: OperatorView;
}

interface CredentialsFile {
  version: 1;
  /** Keyed by gatewayKey(). */
  gateways: Record<string, CachedSignIn>;
}

const MAX_FILE_BYTES = 1 << 20;

/** `$XDG_CONFIG_HOME/ciport/credentials.json`, ~/.config when unset or relative (XDG spec). */
export function credentialsPath(env: NodeJS.ProcessEnv): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : join(env.HOME || homedir(), '.config');
  return join(base, 'ciport', 'credentials.json');
}

/** The cache key of a gateway: its origin and base path, without a trailing slash. */
export function gatewayKey(url: URL): string {
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

function insecure(message: string): CiportError {
  return new CiportError('CIPORT_E_CREDENTIALS_INSECURE', message);
}

function uid(): number | undefined {
  return typeof process.getuid === 'function' ? process.getuid() : undefined;
}

/** Refuse `st` (of `path`) unless it is ours and private; `kind` says what it must be. */
function checkPrivate(path: string, st: Stats, kind: 'file' | 'directory'): void {
  if (st.isSymbolicLink()) throw insecure(`${path} is a symbolic link; remove it and run ciport login again`);
  if (kind === 'file' ? !st.isFile() : !st.isDirectory()) throw insecure(`${path} is not a ${kind}`);
  const me = uid();
  if (me !== undefined && st.uid !== me) {
    throw insecure(`${path} belongs to uid ${st.uid}, not to you (uid ${me}); remove it and sign in again`);
  }
  const mode = st.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    const want = kind === 'file' ? '600' : '700';
    throw insecure(
      `${path} has mode ${mode.toString(8).padStart(4, '0')}: group or others may use it; ` +
        `chmod ${want} it (and sign in again if others could read it)`,
    );
  }
}

function parseFile(path: string, text: string): CredentialsFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new CiportError(
      'CIPORT_E_CONFIG_INVALID',
      `${path} is not valid JSON; remove it and sign in again`,
    );
  }
  const gateways: Record<string, CachedSignIn> = {};
  const list = (doc as { gateways?: unknown } | null)?.gateways;
  if (list && typeof list === 'object') {
    for (const [key, value] of Object.entries(list as Record<string, unknown>)) {
      const v = value as Record<string, unknown> | null;
      const operator = parseOperatorView(v?.operator);
      if (
        operator &&
        typeof v?.token === 'string' &&
        isOperatorSecret(v.token) &&
        typeof v.expires_at === 'string' &&
        typeof v.signed_in_at === 'string'
      ) {
        gateways[key] = { token: v.token, expires_at: v.expires_at, signed_in_at: v.signed_in_at, operator };
      }
    }
  }
  return { version: 1, gateways };
}

export class CredentialsCache {
  constructor(readonly path: string) {}

  /** The cached sign-ins (none when there is no file); refuses an unsafe file or directory. */
  read(): CredentialsFile {
    const dir = dirname(this.path);
    const dirStat = lstatSync(dir, { throwIfNoEntry: false });
    if (!dirStat) return { version: 1, gateways: {} };
    checkPrivate(dir, dirStat, 'directory');
    let fd: number;
    try {
      // O_NOFOLLOW: a symbolic link put in the file's place is refused, not followed.
      fd = openSync(this.path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return { version: 1, gateways: {} };
      if (code === 'ELOOP') throw insecure(`${this.path} is a symbolic link; remove it and sign in again`);
      throw insecure(`${this.path}: cannot open (${code ?? 'error'})`);
    }
    try {
      const st = fstatSync(fd);
      checkPrivate(this.path, st, 'file');
      if (st.size > MAX_FILE_BYTES) throw insecure(`${this.path} is larger than ${MAX_FILE_BYTES} bytes`);
      const buf = Buffer.alloc(st.size);
      let read = 0;
      while (read < buf.length) {
        const n = readSync(fd, buf, read, buf.length - read, read);
        if (n === 0) break;
        read += n;
      }
      return parseFile(this.path, buf.subarray(0, read).toString('utf8'));
    } finally {
      closeSync(fd);
    }
  }

  get(key: string): CachedSignIn | undefined {
    return this.read().gateways[key];
  }

  /** Keys of every cached sign-in. */
  keys(): string[] {
    return Object.keys(this.read().gateways);
  }

  put(key: string, entry: CachedSignIn): void {
    const doc = this.read();
    doc.gateways[key] = entry;
    this.#write(doc);
  }

  /** Forget `key`; true when it was cached. The file goes when it holds nothing. */
  remove(key: string): boolean {
    const doc = this.read();
    if (!(key in doc.gateways)) return false;
    delete doc.gateways[key];
    if (Object.keys(doc.gateways).length === 0) rmSync(this.path, { force: true });
    else this.#write(doc);
    return true;
  }

  #write(doc: CredentialsFile): void {
    const dir = dirname(this.path);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    checkPrivate(dir, lstatSync(dir), 'directory');
    const tmp = join(dir, `.credentials.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    const fd = openSync(
      tmp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      try {
        writeSync(fd, `${JSON.stringify(doc, null, 2)}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
  }
}
