// Loopback stand-ins for what security teams run: an HTTP webhook receiver that checks the
// X-Ciport-Signature HMAC like a SIEM's collector would, and a syslog listener (TCP or TLS) that
// parses RFC 6587 octet-counted RFC 5424 frames. Each can go down (refuse connections), fail
// (HTTP 500), hang, trickle its answer, or answer far too much, and come back on the same port.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { type ChainRow, parseJsonlLine } from '../../src/audit/index.js';

/** A loopback listener that can go down (connections refused, open ones cut) and come back on its port. */
class Restartable {
  readonly sockets = new Set<Socket>();
  #server: NetServer | undefined;
  port = 0;

  protected listen(server: NetServer): Promise<void> {
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
      this.accepted(s);
    });
    return new Promise<void>((resolve) =>
      server.listen(this.port, '127.0.0.1', () => {
        this.port = (server.address() as { port: number }).port;
        this.#server = server;
        resolve();
      }),
    );
  }

  /** Called with each raw TCP connection (before any TLS). */
  protected accepted(_socket: Socket): void {}

  /** Stop listening and cut every connection: the gateway gets ECONNREFUSED until start(). */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

export type WebhookMode = 'ok' | 'fail' | 'hang' | 'slow' | 'huge' | 'endless';

export class WebhookReceiver extends Restartable {
  mode: WebhookMode = 'ok';
  /** Events accepted (2xx), in the order they arrived. */
  readonly received: ChainRow[] = [];
  /** Requests whose signature did not verify, and all requests seen. */
  badSignatures = 0;
  requests = 0;
  readonly #secret: string;

  constructor(secret: string) {
    super();
    this.#secret = secret;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/audit`;
  }

  get seqs(): number[] {
    return this.received.map((r) => r.seq);
  }

  async start(): Promise<this> {
    await this.listen(createHttpServer((req, res) => void this.#handle(req, res)));
    return this;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++;
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    if (this.mode === 'hang') return; // never answer
    if (this.mode === 'slow') {
      // Headers a byte at a time, slower than any sane timeout.
      res.socket?.write('H');
      const t = setInterval(() => res.socket?.write('T'), 200);
      res.socket?.once('close', () => clearInterval(t));
      return;
    }
    if (this.mode === 'huge') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(Buffer.alloc(1024 * 1024, 'x'));
      return;
    }
    if (this.mode === 'endless') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const chunk = Buffer.alloc(16 * 1024, 'y');
      const pump = () => {
        while (res.write(chunk)) {}
      };
      res.on('drain', pump);
      pump();
      return;
    }
    if (!this.#verified(req.headers['x-ciport-signature'], body)) {
      this.badSignatures++;
      res.writeHead(401).end('bad signature');
      return;
    }
    if (this.mode === 'fail') {
      res.writeHead(500).end('down for maintenance');
      return;
    }
    const events = JSON.parse(body.toString('utf8')) as unknown[];
    for (const e of events) this.received.push(parseJsonlLine(JSON.stringify(e)));
    res.writeHead(204).end();
  }

  #verified(header: string | string[] | undefined, body: Buffer): boolean {
    if (typeof header !== 'string') return false;
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
    if (!m) return false;
    const t = Number(m[1]);
    if (Math.abs(Date.now() / 1000 - t) > 300) return false; // replay window
    const expected = createHmac('sha256', this.#secret).update(`${t}.`).update(body).digest();
    return timingSafeEqual(expected, Buffer.from(m[2] as string, 'hex'));
  }
}

/** One parsed RFC 5424 message. */
export interface SyslogFrame {
  pri: number;
  version: string;
  timestamp: string;
  host: string;
  app: string;
  procid: string;
  msgid: string;
  sd: Record<string, string>;
  row: ChainRow;
}

const RFC5424 =
  /^<(\d{1,3})>(\d) (\S+) (\S+) (\S+) (\S+) (\S+) \[ciport@32473((?: [a-z_]+="[^"]*")*)\] \uFEFF(.*)$/s;

export function parseSyslog(message: string): SyslogFrame {
  const m = RFC5424.exec(message);
  if (!m) throw new Error(`not an RFC 5424 ciport message: ${message.slice(0, 120)}`);
  const sd: Record<string, string> = {};
  for (const p of (m[8] as string).matchAll(/ ([a-z_]+)="([^"]*)"/g)) sd[p[1] as string] = p[2] as string;
  return {
    pri: Number(m[1]),
    version: m[2] as string,
    timestamp: m[3] as string,
    host: m[4] as string,
    app: m[5] as string,
    procid: m[6] as string,
    msgid: m[7] as string,
    sd,
    row: parseJsonlLine(m[9] as string),
  };
}

export type SyslogMode = 'ok' | 'reset' | 'hang' | 'chatty';

/** A syslog collector on loopback: octet-counted frames over TCP, or TLS with `tls`. */
export class SyslogReceiver extends Restartable {
  mode: SyslogMode = 'ok';
  readonly frames: SyslogFrame[] = [];
  connections = 0;
  readonly #tls: { cert: string; key: string } | undefined;

  constructor(tls?: { cert: string; key: string }) {
    super();
    this.#tls = tls;
  }

  get seqs(): number[] {
    return this.frames.map((f) => f.row.seq);
  }

  async start(): Promise<this> {
    const onSocket = (socket: Socket) => this.#serve(socket);
    // Half-open allowed: the collector decides when it closes (the sender's acknowledgement).
    const server = this.#tls
      ? createTlsServer({ ...this.#tls, allowHalfOpen: true }, onSocket)
      : createNetServer({ allowHalfOpen: true }, onSocket);
    server.on('tlsClientError', () => {});
    await this.listen(server);
    return this;
  }

  protected override accepted(raw: Socket): void {
    this.connections++;
    // On the TCP socket, before TLS: a TLS socket cannot send an RST itself.
    if (this.mode === 'reset') raw.resetAndDestroy();
  }

  #serve(socket: Socket): void {
    // TLS sockets are not the 'connection' ones: tracked too, so stop() cuts them.
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
    if (this.mode === 'reset') return; // reset in accepted()
    if (this.mode === 'chatty') {
      const chunk = Buffer.alloc(16 * 1024, 'z');
      const pump = () => {
        while (!socket.destroyed && socket.write(chunk)) {}
      };
      socket.on('drain', pump);
      pump();
    }
    // Frames are kept per connection and only accepted when the sender closes cleanly: a
    // collector that dies mid-batch keeps nothing of it (the sender retries the batch).
    const pending: SyslogFrame[] = [];
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const sp = buf.indexOf(0x20);
        if (sp < 0) break;
        const len = Number(buf.subarray(0, sp).toString('ascii'));
        if (!Number.isInteger(len) || len <= 0) {
          socket.destroy();
          return;
        }
        if (buf.length < sp + 1 + len) break;
        pending.push(parseSyslog(buf.subarray(sp + 1, sp + 1 + len).toString('utf8')));
        buf = buf.subarray(sp + 1 + len);
      }
    });
    socket.on('end', () => {
      if (this.mode === 'hang' || this.mode === 'chatty') return; // keeps nothing, never closes
      this.frames.push(...pending);
      socket.end();
    });
  }
}
