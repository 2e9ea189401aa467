// `audit.sinks`: where the gateway forwards every audit event, in chain order, at least once
// (docs/audit-sinks.md). One entry per destination; its `name` keys the delivery cursor in the
// store, so renaming a sink starts it over from the first event.
import { z } from 'zod';
import { keyUrlProblem } from '../identity/url-policy.js';
import { durationSchema, hostPortSchema, nameSchema, secretSchema } from './fields.js';

const common = {
  name: nameSchema.meta({ description: 'Names the delivery cursor in the store (keep it stable).' }),
  timeout: durationSchema
    .prefault('10s')
    .meta({ description: 'Whole delivery of one batch (connect, send, answer) must finish within this.' }),
  batch: z
    .int()
    .min(1)
    .max(1000)
    .default(100)
    .meta({ description: 'Most events per delivery (also cut at 1 MiB of JSON, at least one event).' }),
};

const caFile = z
  .strictObject({ file: z.string().min(1).meta({ description: 'PEM file of the CA certificate(s).' }) })
  .optional()
  .meta({ description: 'Trust this CA (instead of the system trust store) for the receiver.' });

export const webhookSinkSchema = z
  .strictObject({
    kind: z.literal('webhook'),
    ...common,
    url: z.url().meta({
      description: 'Receiver; https, or http on a loopback address only. No credentials in the URL.',
    }),
    secret: secretSchema.meta({
      description: 'HMAC-SHA-256 key of the X-Ciport-Signature header (docs/audit-sinks.md).',
    }),
    ca: caFile,
  })
  .superRefine((sink, ctx) => {
    let url: URL;
    try {
      url = new URL(sink.url);
    } catch {
      return; // z.url() reported it
    }
    const problem = keyUrlProblem(url);
    if (problem) ctx.addIssue({ code: 'custom', path: ['url'], message: problem });
    if (url.username || url.password) {
      ctx.addIssue({
        code: 'custom',
        path: ['url'],
        message: 'credentials in the URL are not supported (they would reach logs); the secret signs',
      });
    }
  })
  .meta({ description: 'An HTTP POST of each batch as a JSON array, signed with HMAC-SHA-256.' });

export const syslogSinkSchema = z
  .strictObject({
    kind: z.literal('syslog'),
    ...common,
    address: hostPortSchema.meta({ description: 'Receiver host:port (TCP; TLS with `tls`).' }),
    tls: z
      .strictObject({
        ca: caFile,
        servername: z.string().min(1).optional().meta({ description: 'Name to verify (default: the host).' }),
      })
      .optional()
      .meta({ description: 'Speak TLS (RFC 5425); the certificate is always verified.' }),
    facility: z.int().min(0).max(23).default(13).meta({
      description: 'Syslog facility number (default 13, log audit).',
    }),
    app_name: z
      .string()
      .regex(/^[\x21-\x7e]{1,48}$/, 'printable ASCII without spaces, at most 48 characters')
      .default('ciport')
      .meta({ description: 'RFC 5424 APP-NAME.' }),
  })
  .meta({ description: 'RFC 5424 messages, octet-counted (RFC 6587), over TCP or TLS.' });

export const fileSinkSchema = z
  .strictObject({
    kind: z.literal('file'),
    ...common,
    path: z.string().min(1).meta({ description: 'JSON-lines file, appended to (created 0600).' }),
  })
  .meta({ description: 'JSON lines appended to a file, fsync per batch.' });

export const auditSinkSchema = z.discriminatedUnion('kind', [
  webhookSinkSchema,
  syslogSinkSchema,
  fileSinkSchema,
]);

export type AuditSinkConfig = z.output<typeof auditSinkSchema>;
export type WebhookSinkConfig = z.output<typeof webhookSinkSchema>;
export type SyslogSinkConfig = z.output<typeof syslogSinkSchema>;
export type FileSinkConfig = z.output<typeof fileSinkSchema>;
