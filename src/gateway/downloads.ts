// Files the gateway serves to jobs without authentication (docs/gateway.md, "Serving the client
// and the CA"): the self-contained runner client, its SHA-256, and the CA certificate its TLS
// chains to, so that an air-gapped runner needs no package registry. None of it is secret; what
// a job must check before it trusts a download is docs/client.md, "Installing the client on a
// runner".
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { CiportError } from '../errors/index.js';
import type { Logger } from '../log/logger.js';
import { liftRequestDeadline, type Req, type Res } from './http.js';

/** The name a downloaded client is saved under (Content-Disposition, the .sha256 line). */
export const CLIENT_FILE_NAME = 'ciport';
/** A download whose reader has taken nothing for this long is cut: it holds a file and a slot. */
export const DOWNLOAD_STALL_MS = 60_000;
/** Retry-After of a download refused because `client.max_downloads` are in progress. */
const BUSY_RETRY_S = 5;
/** Read size when hashing the client (about 100 reads for a 96 MB executable). */
const HASH_CHUNK = 1 << 20;

export interface DownloadsOptions {
  /** `client.linux_x64`: a path, false (serve none), or undefined (the package's own build). */
  clientFile: string | false | undefined;
  /** `client.max_downloads`. */
  maxDownloads: number;
  /** The bytes of `/v1/ca.crt` (src/transport/tls.ts); undefined: none to publish. */
  publishedCa: Buffer | undefined;
  log: Logger;
  /** `client.stall_timeout`: a download stalled this long is cut. */
  stallMs?: number;
}

/** `dist/client/ciport` of the ciport package this code runs from, when that package is found. */
export function packagedClientPath(from: string = fileURLToPath(import.meta.url)): string | undefined {
  // src/gateway/ under vitest, dist/src/gateway/ when built: the package root is 2 or 3 up.
  let dir = dirname(from);
  for (let up = 0; up < 5; up++) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'ciport') {
          return join(dir, 'dist', 'client', CLIENT_FILE_NAME);
        }
      } catch {
        // not ours; keep looking
      }
    }
    dir = dirname(dir);
  }
  return undefined;
}

/** The unauthenticated download endpoints: `/v1/client/linux-x64[.sha256]` and `/v1/ca.crt`. */
export class GatewayDownloads {
  /** Absolute path of the client file served, or undefined when none is configured or found. */
  readonly clientPath: string | undefined;
  readonly #client: ServedFile | undefined;
  readonly #disabled: boolean;
  readonly #maxDownloads: number;
  readonly #stallMs: number;
  readonly #log: Logger;
  readonly #ca: { bytes: Buffer; sha256: string } | undefined;
  #active = 0;
  /** Downloads in progress per client connection (HTTP/2 session or HTTP/1.1 socket). */
  readonly #perConnection = new Map<object, number>();
  #warned: string | undefined;

  constructor(options: DownloadsOptions) {
    this.#disabled = options.clientFile === false;
    const path =
      options.clientFile === false
        ? undefined
        : options.clientFile !== undefined
          ? resolve(options.clientFile)
          : packagedClientPath();
    this.clientPath = path;
    this.#client = path ? new ServedFile(path) : undefined;
    this.#maxDownloads = options.maxDownloads;
    this.#stallMs = options.stallMs ?? DOWNLOAD_STALL_MS;
    this.#log = options.log;
    this.#ca = options.publishedCa
      ? { bytes: options.publishedCa, sha256: sha256Hex(options.publishedCa) }
      : undefined;
  }

  /** Downloads being streamed now. */
  get active(): number {
    return this.#active;
  }

  /** SHA-256 (hex) of what `/v1/ca.crt` serves, or undefined when it serves nothing. */
  get caSha256(): string | undefined {
    return this.#ca?.sha256;
  }

  /** `GET|HEAD /v1/client/linux-x64`: the executable, streamed from disk. */
  async client(req: Req, res: Res): Promise<void> {
    const file = await this.#openClient();
    let handedOver = false;
    try {
      const headers = {
        'content-type': 'application/octet-stream',
        'content-disposition': `attachment; filename=${CLIENT_FILE_NAME}`,
        'last-modified': file.mtime.toUTCString(),
      };
      const bodyless = req.method === 'HEAD' || etagMatches(req.headers['if-none-match'], file.sha256);
      if (!bodyless && this.#active >= this.#maxDownloads) {
        throw new CiportError(
          'CIPORT_E_RATE_LIMITED',
          `${this.#active} client downloads are in progress (client.max_downloads); retry in ${BUSY_RETRY_S} s`,
          { details: { retry_after_s: BUSY_RETRY_S } },
        );
      }
      // A job downloads its client once: one connection holding several slots is someone
      // trying to hold them all (HTTP/2 streams, or pipelining on one socket).
      const connection = connectionOf(req);
      const perConnection = this.#perConnection.get(connection) ?? 0;
      if (!bodyless && perConnection >= MAX_DOWNLOADS_PER_CONNECTION) {
        throw new CiportError(
          'CIPORT_E_RATE_LIMITED',
          `at most ${MAX_DOWNLOADS_PER_CONNECTION} client downloads at once on one connection; retry in ${BUSY_RETRY_S} s`,
          { details: { retry_after_s: BUSY_RETRY_S } },
        );
      }
      if (answeredWithoutBody(req, res, file.sha256, file.size, headers)) return;
      // The request is complete (a GET has no body); the stall guard bounds the response instead.
      liftRequestDeadline(res);
      this.#active++;
      this.#perConnection.set(connection, (this.#perConnection.get(connection) ?? 0) + 1);
      handedOver = true;
      res.statusCode = 200;
      try {
        // end: never more than the Content-Length announced, should the file grow meanwhile.
        await pipeline(
          file.handle.createReadStream({ start: 0, end: file.size - 1 }),
          new MatchingSha256(file.sha256),
          new StallGuard(this.#stallMs),
          res as NodeJS.WritableStream,
        );
      } catch (err) {
        // A runner that went away or stalled: its business, not a gateway failure.
        this.#log.debug({ err: (err as Error).message }, 'client download cut');
        if (err instanceof ChangedWhileServed) this.#client?.forget();
      } finally {
        this.#active--;
        const left = (this.#perConnection.get(connection) ?? 1) - 1;
        if (left > 0) this.#perConnection.set(connection, left);
        else this.#perConnection.delete(connection);
      }
    } finally {
      // The read stream closes the handle when it ends or is destroyed; otherwise close it here.
      if (!handedOver) await file.handle.close().catch(() => {});
    }
  }

  /** `GET|HEAD /v1/client/linux-x64.sha256`: `<hex>  ciport\n` (sha256sum's format). */
  async clientSha256(req: Req, res: Res): Promise<void> {
    const file = await this.#openClient();
    await file.handle.close().catch(() => {});
    sendSmall(req, res, Buffer.from(`${file.sha256}  ${CLIENT_FILE_NAME}\n`), file.sha256, {
      'content-type': 'text/plain; charset=utf-8',
    });
  }

  /** `GET|HEAD /v1/ca.crt`: the CA the gateway's TLS chains to, as PEM. */
  async ca(req: Req, res: Res): Promise<void> {
    if (!this.#ca) {
      throw new CiportError(
        'CIPORT_E_CA_UNAVAILABLE',
        "this gateway's certificate is configured (tls:) without tls.ca: no CA to publish; " +
          'verify the gateway with the system trust store, or ask its operator to set tls.ca',
      );
    }
    sendSmall(req, res, this.#ca.bytes, this.#ca.sha256, { 'content-type': 'application/x-pem-file' });
  }

  async #openClient(): Promise<OpenedFile> {
    if (this.#disabled) {
      throw new CiportError(
        'CIPORT_E_CLIENT_UNAVAILABLE',
        'this gateway does not serve the runner client (client.linux_x64: false)',
      );
    }
    const opened = this.#client ? await this.#client.open() : { missing: 'no ciport package found' };
    if ('missing' in opened) {
      // Once per reason: anyone can ask, and must not be able to fill the log.
      const level = this.#warned === opened.missing ? 'debug' : 'warn';
      this.#warned = opened.missing;
      this.#log[level]({ path: this.clientPath, reason: opened.missing }, 'no runner client to serve');
      throw new CiportError(
        'CIPORT_E_CLIENT_UNAVAILABLE',
        'this gateway has no runner client to serve: build it on the gateway host with ' +
          '`npm run build:client` (it writes dist/client/ciport), or set client.linux_x64 to the file',
      );
    }
    return opened;
  }
}

interface OpenedFile {
  handle: FileHandle;
  size: number;
  mtime: Date;
  sha256: string;
}

/**
 * A file on disk with its SHA-256 computed once per change of the file (device, inode, size,
 * times): a replaced or rebuilt file is hashed again on its next request, never per request.
 * The hash is of the very file the request then streams from (the same open handle).
 */
class ServedFile {
  readonly path: string;
  #hash: { key: string; sha256: Promise<string> } | undefined;

  constructor(path: string) {
    this.path = path;
  }

  /** Hash again on the next request (the file changed in place while it was served). */
  forget(): void {
    this.#hash = undefined;
  }

  async open(): Promise<OpenedFile | { missing: string }> {
    let handle: FileHandle;
    try {
      handle = await open(this.path, 'r');
    } catch (err) {
      return { missing: (err as NodeJS.ErrnoException).code ?? 'unreadable' };
    }
    try {
      const st = await handle.stat();
      if (!st.isFile() || st.size === 0) {
        await handle.close();
        return { missing: st.isFile() ? 'empty file' : 'not a regular file' };
      }
      const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      let entry = this.#hash;
      if (entry?.key !== key) {
        const fresh = { key, sha256: sha256OfHandle(handle, st.size) };
        this.#hash = fresh;
        entry = fresh;
        // A failed hash (I/O error) is not kept: the next request tries again.
        fresh.sha256.catch(() => {
          if (this.#hash === fresh) this.#hash = undefined;
        });
      }
      return { handle, size: st.size, mtime: st.mtime, sha256: await entry.sha256 };
    } catch (err) {
      await handle.close().catch(() => {});
      throw err;
    }
  }
}

async function sha256OfHandle(handle: FileHandle, size: number): Promise<string> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(Math.min(HASH_CHUNK, size));
  for (let position = 0; position < size; ) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, size - position), position);
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
  return hash.digest('hex');
}

function sha256Hex(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Headers every download carries; the ETag is the content's SHA-256. */
function setDownloadHeaders(res: Res, sha256: string, headers: Record<string, string>): void {
  res.setHeader('etag', `"sha256-${sha256}"`);
  res.setHeader('x-ciport-sha256', sha256);
  // Caches may keep a copy but must revalidate it (ETag): the file changes with the gateway.
  res.setHeader('cache-control', 'public, no-cache');
  res.setHeader('x-content-type-options', 'nosniff');
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
}

/**
 * Answer a HEAD (headers only) or a conditional GET whose copy is current (304). True when the
 * response is complete; false when the caller must send the body.
 */
function answeredWithoutBody(
  req: Req,
  res: Res,
  sha256: string,
  size: number,
  headers: Record<string, string>,
): boolean {
  setDownloadHeaders(res, sha256, headers);
  if (etagMatches(req.headers['if-none-match'], sha256)) {
    res.statusCode = 304;
    res.end();
    return true;
  }
  res.setHeader('content-length', String(size));
  if (req.method === 'HEAD') {
    res.statusCode = 200;
    res.end();
    return true;
  }
  return false;
}

function sendSmall(req: Req, res: Res, body: Buffer, sha256: string, headers: Record<string, string>): void {
  if (answeredWithoutBody(req, res, sha256, body.length, headers)) return;
  res.statusCode = 200;
  res.end(body);
}

function etagMatches(header: string | undefined, sha256: string): boolean {
  if (!header) return false;
  const etag = `"sha256-${sha256}"`;
  return header
    .split(',')
    .map((t) => t.trim().replace(/^W\//, ''))
    .some((t) => t === '*' || t === etag);
}

/** Passes bytes through; destroys the pipeline when none has passed for `ms`. */
class StallGuard extends Transform {
  readonly #ms: number;
  #timer: NodeJS.Timeout;

  constructor(ms: number) {
    super();
    this.#ms = ms;
    this.#timer = this.#arm();
  }

  #arm(): NodeJS.Timeout {
    const timer = setTimeout(() => this.destroy(new Error(`download stalled for ${this.#ms} ms`)), this.#ms);
    timer.unref();
    return timer;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#timer.refresh();
    callback(null, chunk);
  }

  // Armed until the last byte was taken downstream (not merely read from disk): cleared on destroy,
  // which follows the end of the readable side.
  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.#timer);
    callback(err);
  }
}

/** At most this many downloads at once on one client connection. */
export const MAX_DOWNLOADS_PER_CONNECTION = 2;

function connectionOf(req: Req): object {
  const stream = (req as { stream?: { session?: object } }).stream;
  return stream?.session ?? req.socket;
}

class ChangedWhileServed extends Error {}

/**
 * Passes the file's bytes through while hashing them, and holds back the last chunk until the
 * whole body matched the SHA-256 announced in its headers: a file rewritten in place while it is
 * served (same inode) ends the download short instead of completing a body that does not match
 * its X-Ciport-Sha256 and ETag, which a shared cache would keep together.
 */
class MatchingSha256 extends Transform {
  readonly #expected: string;
  readonly #hash = createHash('sha256');
  #held: Buffer | undefined;

  constructor(expected: string) {
    super();
    this.#expected = expected;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk);
    const previous = this.#held;
    this.#held = chunk;
    callback(null, previous);
  }

  override _flush(callback: TransformCallback): void {
    if (this.#hash.digest('hex') !== this.#expected) {
      callback(new ChangedWhileServed('the client file changed while it was served'));
      return;
    }
    callback(null, this.#held);
  }
}
