// The console's test world: a real OpenID provider on loopback (test/fixtures/sso-idp.ts, users
// ana=platform→admin, dave=dba→approver, carla=compliance→auditor, nobody=sales→no role), a real
// gateway in process with `sso:` pointing at it (TLS with its generated CA), and a cookie-keeping
// HTTPS client that signs in the way a browser does (the provider's own login form) without one.
import { request } from 'node:https';
import { join } from 'node:path';
import type { RunningGateway, StartGatewayOptions } from '../../src/gateway/server.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { type SsoIdp, signInWithoutBrowser, startSsoIdp } from '../fixtures/sso-idp.js';

export const CONSOLE_CLIENT = 'ciport-console';
export const CONSOLE_SECRET = `console-secret-${Math.random().toString(36).slice(2)}`;
export const ROLES = { admin: ['platform'], approver: ['dba'], auditor: ['compliance'] };

export interface ConsoleWorld {
  gateway: RunningGateway;
  idp: SsoIdp;
  issuer: FixtureIssuer;
  url: string;
  logLines: string[];
  close(): Promise<void>;
}

export async function startConsoleWorld(options: {
  dir: string;
  targets?: object[];
  rules?: object[];
  extra?: Record<string, unknown>;
  env?: Record<string, string>;
  gateway?: StartGatewayOptions;
  /** Start the gateway without `sso:`. */
  noSso?: boolean;
  /** Share these with another world (they are not closed with this one). */
  idp?: SsoIdp;
  issuer?: FixtureIssuer;
  port?: number;
  /** `public_url` (default: the bound URL). */
  publicUrl?: string;
}): Promise<ConsoleWorld> {
  const port = options.port ?? (await freePort());
  const url = `https://127.0.0.1:${port}`;
  const owned = !options.idp;
  const idp =
    options.idp ??
    (await startSsoIdp({
      clients: [
        {
          client_id: CONSOLE_CLIENT,
          client_secret: CONSOLE_SECRET,
          redirect_uris: [`${options.publicUrl ?? url}/ui/callback`],
        },
      ],
    }));
  const issuer = options.issuer ?? (await FixtureIssuer.start({ kind: 'gitlab' }));
  const doc = {
    listen: `127.0.0.1:${port}`,
    ...(options.publicUrl ? { public_url: options.publicUrl } : {}),
    ...e2eGatewayDoc(join(options.dir, 'data'), issuer.url),
    ...(options.noSso
      ? {}
      : {
          sso: {
            issuer: idp.issuer,
            client_id: CONSOLE_CLIENT,
            client_secret: { env: 'CONSOLE_SECRET' },
            scopes: ['openid', 'email', 'profile', 'groups'],
            roles: ROLES,
            session_ttl: '1h',
          },
        }),
    targets: options.targets ?? [{ name: 'redis', protocol: 'tcp', address: '127.0.0.1:6379' }],
    rules: options.rules ?? [
      {
        name: 'ledger-main',
        issuer: 'gitlab',
        when: { project_id: '61577203', ref_protected: true },
        allow: ['redis'],
        max_ttl: '30m',
      },
    ],
    ...options.extra,
  };
  const logLines: string[] = [];
  const gateway = await startTestGateway(gatewayConfig(doc, { CONSOLE_SECRET, ...options.env }), {
    logLines,
    sweepIntervalMs: 250,
    ...options.gateway,
  });
  return {
    gateway,
    idp,
    issuer,
    url,
    logLines,
    async close() {
      await gateway.close();
      if (owned) await idp.close();
      if (!options.issuer) await issuer.close();
    },
  };
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  location: string | undefined;
}

/** An HTTPS/1.1 client of the gateway that keeps its cookies as a browser would (one origin). */
export class ConsoleClient {
  readonly cookies = new Map<string, string>();
  constructor(
    readonly world: ConsoleWorld,
    readonly defaults: Record<string, string> = {},
  ) {}

  #take(setCookie: string[] | undefined): void {
    for (const line of setCookie ?? []) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair?.indexOf('=') ?? -1;
      if (!pair || eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const gone = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a));
      if (gone) this.cookies.delete(name);
      else this.cookies.set(name, pair.slice(eq + 1));
    }
  }

  cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  request(
    method: string,
    path: string,
    options: {
      form?: Record<string, string> | URLSearchParams | string;
      headers?: Record<string, string>;
    } = {},
  ): Promise<Reply> {
    const body =
      options.form === undefined
        ? undefined
        : typeof options.form === 'string'
          ? options.form
          : new URLSearchParams(options.form as Record<string, string>).toString();
    const url = new URL(path, this.world.url);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          ca: this.world.gateway.caPem,
          headers: {
            ...(this.cookies.size ? { cookie: this.cookieHeader() } : {}),
            ...(body !== undefined
              ? {
                  'content-type': 'application/x-www-form-urlencoded',
                  'content-length': String(Buffer.byteLength(body)),
                  origin: this.world.url,
                }
              : {}),
            ...this.defaults,
            ...options.headers,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            this.#take(res.headers['set-cookie']);
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks).toString('utf8'),
              location: res.headers.location,
            });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  get(path: string, headers?: Record<string, string>): Promise<Reply> {
    return this.request('GET', path, headers ? { headers } : {});
  }

  /** POST a form with this sign-in's CSRF token (from `page`, or fetched from `from`). */
  async post(
    path: string,
    fields: Record<string, string> = {},
    headers?: Record<string, string>,
  ): Promise<Reply> {
    const token = await this.csrf();
    return this.request('POST', path, { form: { csrf: token, ...fields }, ...(headers ? { headers } : {}) });
  }

  /** The CSRF token the console embeds in this sign-in's forms. */
  async csrf(): Promise<string> {
    const page = await this.get('/ui/policy');
    const m = /name="csrf" value="([^"]+)"/.exec(page.body);
    if (!m?.[1]) throw new Error(`no CSRF token on /ui/policy (${page.status})`);
    return m[1];
  }

  /** Start a sign-in: the provider's authorization URL (the login cookie is kept). */
  async startSignIn(returnTo?: string): Promise<string> {
    const r = await this.get(
      returnTo === undefined ? '/ui/login' : `/ui/login?return=${encodeURIComponent(returnTo)}`,
    );
    if (r.status !== 302 || !r.location) throw new Error(`/ui/login answered ${r.status}: ${r.body}`);
    return r.location;
  }

  /** Sign `login` in through the provider's form; the callback's reply. */
  async signIn(login: string, returnTo?: string): Promise<Reply> {
    const authorization = await this.startSignIn(returnTo);
    const callback = await signInWithoutBrowser(this.world.idp, authorization, login);
    return this.get(callback);
  }
}

/** Events of `type` in the gateway's audit log. */
export async function auditOf(world: ConsoleWorld, type: string) {
  return (await world.gateway.store.auditEvents({ limit: 10_000 })).filter((e) => e.type === type);
}
