// The message of an error an AWS SDK call threw, fit for an error message or a log line. A
// provider answer the SDK could not parse throws V8's SyntaxError, which quotes the start of the
// text ("Unexpected token 's', "sup3r-s3cr"... is not valid JSON"): that text is a Secrets
// Manager value or the credentials a metadata endpoint sent. Such messages are not kept.

/** `Name: message`, whitespace folded, at most 300 characters; a parse error without its text. */
export function sdkErrorText(err: unknown): string {
  const e = err as { name?: unknown; message?: unknown } | undefined;
  const name = typeof e?.name === 'string' ? e.name : 'Error';
  const message =
    name === 'SyntaxError' || err instanceof SyntaxError
      ? 'the answer could not be parsed'
      : String(e?.message ?? err);
  return `${name}: ${message}`.replace(/\s+/g, ' ').slice(0, 300);
}
