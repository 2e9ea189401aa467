// The one-shot loopback listener `ciport login` points the provider's redirect at (RFC 8252
// §7.3): http://127.0.0.1:PORT/callback on a random port. It waits for one request that carries
// the state this login made, and refuses everything else without giving up: another path or
// method, another Host (a web page resolving its own name to 127.0.0.1), a body, a repeated
// parameter, a long URL, a wrong state (a forged callback for another login). The browser's
// request is held until the gateway has answered, so its tab can say how the sign-in ended; the
// page loads nothing and sends no referrer.
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { CiportError } from '../../errors/index.js';
import { printable } from '../../text/printable.js';

export interface LoopbackCallback {
  code: string;
  state: string;
  /** RFC 9207 issuer of the authorization response, when the provider sends it. */
  iss?: string;
}

export type LoopbackOutcome = { ok: true } | { ok: false; code: string };

export interface LoopbackListener {
  /** `http://127.0.0.1:PORT/callback`. */
  readonly redirectUri: string;
  /** The first callback with the expected state; rejects on a provider error, timeout or abort. */
  wait(timeoutMs: number): Promise<LoopbackCallback>;
  /** Answer the browser's held request with how the sign-in ended. */
  finish(outcome: LoopbackOutcome): void;
  close(): Promise<void>;
}

const MAX_URL = 4096;
/** Parameters a callback may carry once each; others (e.g. Keycloak's session_state) are ignored. */
const ONCE = ['code', 'state', 'iss', 'error', 'error_description', 'error_uri', 'session_state'];

/** Refused requests, reported to `onRefused` (one line each: the terminal shows them). */
export type RefusedNote = (why: string) => void;

function page(res: ServerResponse, status: number, title: string, text: string): void {
  const body = `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1><p>${text}</p></body></html>\n`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; frame-ancestors 'none'; form-action 'none'",
    'referrer-policy': 'no-referrer',
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    connection: 'close',
  });
  res.end(body);
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Listen on 127.0.0.1 (random port) for the callback of the login whose state is `state`. */
export async function listenLoopback(
  state: string,
  onRefused: RefusedNote = () => {},
): Promise<LoopbackListener> {
  const server = createServer({ maxHeaderSize: 8192, requestTimeout: 30_000, headersTimeout: 30_000 });
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new CiportError(
          'CIPORT_E_SSO_FAILED',
          `cannot listen on 127.0.0.1 for the sign-in (${err.code ?? err.message})`,
          {
            details: { loopback_unavailable: true },
          },
        ),
      ),
    );
    server.listen(0, '127.0.0.1', () => {
      server.removeAllListeners('error');
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = `127.0.0.1:${port}`;
  let held: ServerResponse | undefined;
  let settle: { resolve: (cb: LoopbackCallback) => void; reject: (err: Error) => void } | undefined;
  let result: { cb?: LoopbackCallback; err?: Error } | undefined;

  const deliver = (r: { cb?: LoopbackCallback; err?: Error }) => {
    result ??= r;
    if (settle) {
      if (result.cb) settle.resolve(result.cb);
      else settle.reject(result.err as Error);
    }
  };

  const refuse = (res: ServerResponse, status: number, why: string) => {
    onRefused(why);
    page(
      res,
      status,
      'Not accepted',
      'This address only takes the sign-in of the ciport login that opened it.',
    );
  };

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '';
    // A browser asks for an icon on its own; not worth a line on the terminal.
    if (url === '/favicon.ico') return page(res, 404, 'Not found', '');
    if (result)
      return refuse(
        res,
        409,
        `a request after the sign-in already arrived (${req.method} ${printable(url.slice(0, 80))})`,
      );
    if (req.method !== 'GET') return refuse(res, 405, `method ${printable(req.method ?? '?')}`);
    if (req.headers.host !== host) return refuse(res, 400, `Host ${printable(String(req.headers.host))}`);
    if (url.length > MAX_URL) return refuse(res, 414, `a URL of ${url.length} characters`);
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path !== '/callback') return refuse(res, 404, `path ${printable(path.slice(0, 80))}`);
    if (req.headers['transfer-encoding'] || Number(req.headers['content-length'] ?? 0) > 0) {
      return refuse(res, 400, 'a request with a body');
    }
    const params = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
    for (const name of ONCE) {
      if (params.getAll(name).length > 1) return refuse(res, 400, `parameter ${name} given twice`);
    }
    const got = params.get('state');
    if (got === null || !sameText(got, state)) return refuse(res, 400, 'a callback with another state');
    const error = params.get('error');
    if (error !== null) {
      const description = params.get('error_description');
      const why = printable(`${error}${description ? `: ${description}` : ''}`).slice(0, 300);
      page(res, 400, 'Sign-in failed', 'The identity provider did not sign you in. See the terminal.');
      deliver({ err: new CiportError('CIPORT_E_SSO_FAILED', `the identity provider answered ${why}`) });
      return;
    }
    const code = params.get('code');
    if (!code) return refuse(res, 400, 'a callback without a code');
    const iss = params.get('iss');
    held = res;
    // Hold the tab until finish(); a browser that gives up is no concern of the sign-in.
    res.on('error', () => {});
    deliver({ cb: { code, state: got, ...(iss ? { iss } : {}) } });
  });

  return {
    redirectUri: `http://${host}/callback`,
    wait(timeoutMs) {
      return new Promise<LoopbackCallback>((resolve, reject) => {
        const timer = setTimeout(() => {
          deliver({
            err: new CiportError(
              'CIPORT_E_SSO_FAILED',
              `no sign-in arrived within ${Math.round(timeoutMs / 1000)} s; run ciport login again`,
            ),
          });
        }, timeoutMs);
        settle = {
          resolve: (cb) => {
            clearTimeout(timer);
            resolve(cb);
          },
          reject: (err) => {
            clearTimeout(timer);
            reject(err);
          },
        };
        if (result) deliver(result);
      });
    },
    finish(outcome) {
      const res = held;
      held = undefined;
      if (!res || res.writableEnded) return;
      if (outcome.ok) page(res, 200, 'Signed in', 'ciport is signed in. You can close this tab.');
      else
        page(res, 403, 'Sign-in refused', `ciport refused the sign-in (${outcome.code}). See the terminal.`);
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Let a page being written go out, then cut whatever is left (a browser's keep-alive).
        setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, 200).unref();
      });
    },
  };
}
