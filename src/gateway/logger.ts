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
    options.destination ?? batchedStderr(),
  );
}

/** Log lines wait at most this long before they are written… */
export const LOG_FLUSH_MS = 50;
/** …or until this many bytes wait. */
const LOG_BATCH_BYTES = 8192;

/**
 * stderr, written in batches: one write(2) per LOG_FLUSH_MS or per 8 KiB instead of one per
 * line (a busy gateway logs two lines per session open + end; a write each was ~5 % of its
 * loop). Every line is still written, in order: the timer flushes what waits, and pino flushes
 * synchronously when the process exits (also after an uncaught exception). A process killed
 * with SIGKILL loses at most the last LOG_FLUSH_MS of lines.
 */
function batchedStderr(): DestinationStream {
  const dest = pino.destination({ fd: 2, sync: false, minLength: LOG_BATCH_BYTES });
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    try {
      dest.flush();
    } catch {
      // destroyed (the process is ending): pino's exit handler already wrote what waited
    }
  };
  const write = dest.write.bind(dest);
  dest.write = (chunk: string): boolean => {
    if (!timer) {
      timer = setTimeout(flush, LOG_FLUSH_MS);
      timer.unref();
    }
    return write(chunk);
  };
  return dest;
}

/** A logger that discards everything (tests, embedded use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
