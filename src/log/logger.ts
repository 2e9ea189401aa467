// JSON logs to stderr. Never a token or a secret: callers log ids and codes, and the
// redaction paths below are the net under that rule.
import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger } from 'pino';

/** What the `service` field of every line says: which of ciport's processes wrote it. */
export type LogService = 'ciport-gateway' | 'ciport-agent';

export function createLogger(
  options: { level?: string; destination?: DestinationStream; service?: LogService } = {},
): Logger {
  return pino(
    {
      level: options.level ?? process.env.CIPORT_LOG_LEVEL ?? 'info',
      base: { service: options.service ?? 'ciport-gateway' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'authorization',
          'headers.authorization',
          '*.authorization',
          'secret',
          '*.secret',
          'token',
          '*.token',
        ],
        censor: '[redacted]',
      },
    },
    options.destination ?? pino.destination({ fd: 2, sync: false }),
  );
}

/** A logger that discards everything (tests, embedded use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
