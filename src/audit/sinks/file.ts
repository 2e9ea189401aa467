// The file sink: JSON lines (one event a line, `ciport audit export --format jsonl`'s form)
// appended to a file, fsync'd per batch before the batch counts as delivered. The file is opened
// for each batch, so a log rotation (rename, then a new file) needs no signal.
import { open } from 'node:fs/promises';
import type { FileSinkConfig } from '../../config/audit-sinks.js';
import { AuditSinkError } from '../../errors/index.js';
import type { SinkEvent, SinkTransport } from './transport.js';

export class FileTransport implements SinkTransport {
  readonly #config: FileSinkConfig;

  constructor(config: FileSinkConfig) {
    this.#config = config;
  }

  /** File system calls cannot be aborted: the deliverer's deadline stops waiting for a hung disk. */
  async deliver(events: readonly SinkEvent[]): Promise<void> {
    const text = events.map((e) => `${e.json}\n`).join('');
    try {
      const fh = await open(this.#config.path, 'a', 0o600);
      try {
        await fh.writeFile(text, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'write failed';
      throw new AuditSinkError(
        'CIPORT_E_AUDIT_SINK_WRITE',
        `file ${this.#config.name}: ${this.#config.path}: ${code}`,
        { cause: err },
      );
    }
  }
}
