// The syslog sink: RFC 5424 messages, octet-counted (RFC 6587 §3.4.1: "<length> <message>") over
// TCP, or TLS (RFC 5425) with the certificate verified. One connection per batch: the gateway
// writes the batch's frames, closes its side (FIN, TLS close_notify) and counts the batch
// delivered only when the receiver closes in turn without a reset — a receiver that quits with
// data unread resets the connection, so a batch it did not read is retried. Plain syslog has no
// application-level acknowledgement; this is the closest a standard receiver gives
// (docs/audit-sinks.md, "Syslog").
//
//   <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [ciport@32473 seq="…" hash="…" prev_hash="…"] BOM{event JSON}
import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import type { SyslogSinkConfig } from '../../config/audit-sinks.js';
import { AuditSinkError } from '../../errors/index.js';
import { dropAnswer, networkError, type SinkEvent, type SinkTransport } from './transport.js';

/** Severity 6 (informational) for every event: the event type (MSGID) says what happened. */
const SEVERITY_INFO = 6;
/** RFC 5612's documentation enterprise number: ciport has no IANA number of its own. */
export const SD_ID = 'ciport@32473';
const BOM = '\uFEFF';

/** RFC 5424 HOSTNAME/APP-NAME/MSGID fields: printable ASCII without space, bounded, or "-". */
function field(text: string, max: number): string {
  const clean = text.replace(/[^\x21-\x7e]/g, '').slice(0, max);
  return clean.length > 0 ? clean : '-';
}

/** One RFC 5424 message (without framing). */
export function syslogMessage(
  event: SinkEvent,
  options: { facility: number; appName: string; host: string; pid: number },
): string {
  const pri = options.facility * 8 + SEVERITY_INFO;
  const sd = `[${SD_ID} seq="${event.seq}" hash="${event.hash}" prev_hash="${event.prevHash}"]`;
  return `<${pri}>1 ${new Date(event.time).toISOString()} ${field(options.host, 255)} ${field(options.appName, 48)} ${options.pid} ${field(event.type, 32)} ${sd} ${BOM}${event.json}`;
}

/** RFC 6587 octet counting: the message's length in bytes, a space, the message. */
export function octetCounted(message: string): Buffer {
  const body = Buffer.from(message, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length} `), body]);
}

export class SyslogTransport implements SinkTransport {
  readonly #config: SyslogSinkConfig;
  readonly #host: string;
  readonly #port: number;
  readonly #ca: string | undefined;
  readonly #localHost = hostname();

  constructor(config: SyslogSinkConfig) {
    this.#config = config;
    const i = config.address.lastIndexOf(':');
    this.#host = config.address.slice(0, i).replace(/^\[|\]$/g, '');
    this.#port = Number(config.address.slice(i + 1));
    this.#ca = config.tls?.ca ? readFileSync(config.tls.ca.file, 'utf8') : undefined;
  }

  deliver(events: readonly SinkEvent[], signal: AbortSignal): Promise<void> {
    const options = {
      facility: this.#config.facility,
      appName: this.#config.app_name,
      host: this.#localHost,
      pid: process.pid,
    };
    const frames = Buffer.concat(events.map((e) => octetCounted(syslogMessage(e, options))));
    return this.#send(frames, signal);
  }

  #send(frames: Buffer, signal: AbortSignal): Promise<void> {
    const what = `syslog ${this.#config.name}`;
    return new Promise<void>((resolve, reject) => {
      const tls = this.#config.tls;
      const socket: Socket = tls
        ? tlsConnect({
            host: this.#host,
            port: this.#port,
            servername: tls.servername ?? (/^[\d.:]+$/.test(this.#host) ? undefined : this.#host),
            rejectUnauthorized: true,
            ...(this.#ca ? { ca: this.#ca } : {}),
          })
        : netConnect({ host: this.#host, port: this.#port });
      let finished = false;
      let failed = false;
      const fail = (err: AuditSinkError) => {
        failed = true;
        socket.destroy();
        reject(err);
      };
      const onAbort = () =>
        fail(signal.reason instanceof AuditSinkError ? signal.reason : networkError(what, signal.reason));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once(tls ? 'secureConnect' : 'connect', () => {
        socket.end(frames);
      });
      socket.once('finish', () => {
        finished = true;
      });
      // Syslog receivers do not answer; whatever they send is read and dropped, within a bound.
      dropAnswer(socket, what, fail);
      socket.once('end', () => {
        if (!finished)
          fail(
            new AuditSinkError(
              'CIPORT_E_AUDIT_SINK_PROTOCOL',
              `${what}: receiver closed before the batch was sent`,
            ),
          );
      });
      socket.once('error', (err) => fail(networkError(what, err)));
      socket.once('close', () => {
        signal.removeEventListener('abort', onAbort);
        if (failed) return;
        if (finished) resolve();
        else
          reject(
            new AuditSinkError(
              'CIPORT_E_AUDIT_SINK_PROTOCOL',
              `${what}: connection closed before the batch was sent`,
            ),
          );
      });
    });
  }
}
