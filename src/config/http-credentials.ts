// What HTTP credential injection may be configured with; shared by the schema and the HTTP exit.

export const HTTP_INJECTION_KINDS = ['bearer', 'basic', 'header'] as const;

/**
 * Header names an operator may not inject into: they frame the message or the connection, and
 * the exit owns them (Host, Content-Length, hop-by-hop headers, Expect).
 */
export const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'upgrade',
  'te',
  'trailer',
  'expect',
]);

/** RFC 9110 token: the characters a header field name may use. */
export const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
