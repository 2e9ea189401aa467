// What the admin commands (`ciport sessions`, `ciport agents`) share: a gateway client
// authenticated with CIPORT_ADMIN_TOKEN, and aligned text tables.
import { GatewayClient, gatewayUrl, trustedCas } from '../client/gateway.js';
import { UsageError } from '../errors/index.js';
import { type Io, printable } from './output.js';

export interface AdminOptions {
  gateway?: string;
  json?: boolean;
}

/** How the admin client talks to the gateway, where a command needs more than the defaults. */
export interface AdminClientOptions {
  requestTimeoutMs?: number;
  maxResponseBytes?: number;
}

/** Run `fn` with a client for the gateway and the admin token; the client is closed after. */
export async function withAdmin<T>(
  io: Io,
  opts: AdminOptions,
  fn: (client: GatewayClient, token: string) => Promise<T>,
  clientOptions: AdminClientOptions = {},
): Promise<T> {
  const token = io.env.CIPORT_ADMIN_TOKEN;
  if (!token) throw new UsageError('set CIPORT_ADMIN_TOKEN to an admin token of the gateway');
  const client = new GatewayClient({
    url: gatewayUrl({ gateway: opts.gateway, env: io.env }),
    ca: trustedCas(io.env),
    ...clientOptions,
  });
  try {
    return await fn(client, token);
  } finally {
    client.close();
  }
}

/**
 * Header and rows as lines of columns two spaces apart, without trailing blanks. Cells are
 * shown `printable`: a project path or agent name cannot move the cursor or reorder the line.
 */
export function tableLines(head: string[], cells: string[][]): string[] {
  const rows = cells.map((r) => r.map(printable));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] as number))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)];
}
