// Header rewriting for the HTTP exit. Headers travel as Node's flat raw arrays
// ([name, value, name, value, …]) so that their order, their case and repeated fields (Cookie,
// Set-Cookie, Vary) survive the hop unchanged.

/** Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection and never cross a proxy. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Lower-case names listed in the message's Connection fields: hop-by-hop by declaration. */
export function connectionTokens(raw: readonly string[]): Set<string> {
  const tokens = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() !== 'connection') continue;
    for (const token of (raw[i + 1] as string).split(',')) {
      const t = token.trim().toLowerCase();
      if (t !== '') tokens.add(t);
    }
  }
  return tokens;
}

/** Joined values of a field (case-insensitive name), or undefined when absent. */
export function headerValue(raw: readonly string[], name: string): string | undefined {
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() === name) values.push(raw[i + 1] as string);
  }
  return values.length === 0 ? undefined : values.join(', ');
}

/** `raw` without the fields whose lower-case name is in `drop`. */
function without(raw: readonly string[], drop: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (!drop.has(name.toLowerCase())) out.push(name, raw[i + 1] as string);
  }
  return out;
}

export interface RequestRewrite {
  /** Host header for the upstream (`host[:port]`). */
  host: string;
  /** Lower-case names always removed (Authorization, the injected custom header). */
  replaced: ReadonlySet<string>;
  /** The injected header, added last. */
  injected: { name: string; value: string } | undefined;
  /** The Upgrade value to keep (with `Connection: Upgrade`), for an upgrade request. */
  upgrade: string | undefined;
  /** Keep `Expect: 100-continue` (the exit relays the upstream's 100 Continue). */
  keepExpect: boolean;
}

/**
 * The header list the upstream receives: the client's fields minus hop-by-hop ones, minus Host
 * (replaced by the upstream's), minus every client-sent credential in the injected position,
 * plus the injected header. Forwarding headers (Forwarded, X-Forwarded-*) are passed as sent:
 * the exit adds none, the app's address being a runner's loopback.
 */
export function upstreamRequestHeaders(raw: readonly string[], rewrite: RequestRewrite): string[] {
  const drop = new Set([...HOP_BY_HOP, ...connectionTokens(raw), ...rewrite.replaced, 'host']);
  if (!rewrite.keepExpect) drop.add('expect');
  const out = ['Host', rewrite.host, ...without(raw, drop)];
  if (rewrite.upgrade !== undefined) out.push('Connection', 'Upgrade', 'Upgrade', rewrite.upgrade);
  if (rewrite.injected) out.push(rewrite.injected.name, rewrite.injected.value);
  return out;
}

/**
 * The header list the app receives: the upstream's fields minus hop-by-hop ones (the exit's
 * HTTP server frames the body itself: Content-Length kept, chunking redone as needed). For a
 * 101 the Upgrade handshake fields are kept.
 */
export function clientResponseHeaders(raw: readonly string[], options: { upgrade?: boolean } = {}): string[] {
  const drop = new Set([...HOP_BY_HOP, ...connectionTokens(raw)]);
  const out = without(raw, drop);
  if (options.upgrade) {
    const upgrade = headerValue(raw, 'upgrade');
    out.push('Connection', 'Upgrade');
    if (upgrade !== undefined) out.push('Upgrade', upgrade);
  }
  return out;
}

/** Serialise a response head for a raw socket (upgrade paths, where no ServerResponse exists). */
export function responseHead(status: number, reason: string, raw: readonly string[]): string {
  let head = `HTTP/1.1 ${status} ${reason.replace(/[\r\n]/g, '')}\r\n`;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    head += `${(raw[i] as string).replace(/[\r\n:]/g, '')}: ${(raw[i + 1] as string).replace(/[\r\n]/g, '')}\r\n`;
  }
  return `${head}\r\n`;
}
