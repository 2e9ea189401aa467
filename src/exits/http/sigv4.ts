// `credentials: {aws_sigv4: {service, region, role?}}`: the exit signs each request with AWS
// Signature Version 4 (@smithy/signature-v4, what every AWS SDK signs with), using its own AWS
// credentials (src/exits/aws-credentials.ts). The job never holds AWS credentials; its own
// Authorization and signing headers are removed (injection.ts, `replacedHeaders`).
//
// What is signed:
// - Host as the upstream receives it, the method, the path as sent (S3: as is; other services
//   normalise and encode it once more, as AWS does), the query string.
// - Headers: host, content-type, content-md5 and every x-amz-* the job sent (X-Amz-Target,
//   x-amz-meta-*, …), plus the x-amz-date / x-amz-security-token / x-amz-content-sha256 the
//   signer adds. Not the rest: an unsigned header may change on the way without breaking the
//   signature, while a signed one that a hop rewrites would (the exit relays them as sent anyway).
// - The payload: its SHA-256. So the body is buffered (up to MAX_SIGNED_BODY; beyond: 413
//   CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE) and sent with a Content-Length. Except for S3 over TLS:
//   `x-amz-content-sha256: UNSIGNED-PAYLOAD` lets bodies of any size stream. The body is then not
//   covered by the signature, only by TLS between the exit and S3; over plain HTTP anyone on the
//   path could swap it under a valid signature, so there the body is hashed like any other.
import { Hash } from '@smithy/hash-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { type ExitAwsIdentity, exitAwsCredentials } from '../aws-credentials.js';

/** The largest request body the exit buffers to hash it. */
export const MAX_SIGNED_BODY = 8 * 1024 * 1024;

/**
 * Bytes of request bodies held to be hashed, all `aws_sigv4` targets of the process together: 256
 * connections of one session each sending 8 MiB would otherwise hold 2 GiB. A request that would
 * go beyond it is answered 503 CIPORT_E_AWS_SIGV4_BUSY. Its declared Content-Length (else each
 * chunk as it comes) is reserved before the body is read, and given back once it was sent.
 */
export const signedBodies = {
  limit: 64 * 1024 * 1024,
  held: 0,
  /** Reserve `n` bytes; false (nothing reserved) when that would exceed the limit. */
  take(n: number): boolean {
    if (this.held + n > this.limit) return false;
    this.held += n;
    return true;
  },
  give(n: number): void {
    this.held = Math.max(0, this.held - n);
  },
};

/** Header names of a job's own SigV4 signature: removed, the exit's replace them. */
export const JOB_SIGNING_HEADERS: readonly string[] = [
  'authorization',
  'x-amz-date',
  'x-amz-security-token',
  'x-amz-content-sha256',
  'x-amz-credential',
  'x-amz-signature',
  'x-amz-signedheaders',
  'x-amz-algorithm',
  'x-amz-expires',
];

const SIGNED_NAMES = new Set(['host', 'content-type', 'content-md5']);

export interface SigV4Spec {
  service: string;
  region: string;
  role?: string | undefined;
}

export interface SigV4Signer {
  /** True when bodies stream unsigned (S3 over TLS); false: they are buffered and hashed. */
  readonly streamsBody: boolean;
  /**
   * The header fields to add to `headers` (a raw list, Host first, already without the job's
   * signing headers) so that the request verifies. `body`: the buffered body, when not streamed.
   */
  sign(method: string, url: string, headers: readonly string[], body: Buffer | undefined): Promise<string[]>;
}

export function createSigV4Signer(target: string, spec: SigV4Spec, secure: boolean): SigV4Signer {
  const identity: ExitAwsIdentity = { target, region: spec.region, role: spec.role };
  const s3 = spec.service === 's3';
  const signer = new SignatureV4({
    service: spec.service,
    region: spec.region,
    credentials: exitAwsCredentials(identity),
    sha256: Hash.bind(null, 'sha256'),
    // S3 signs the path as sent; every other service normalises it and encodes it again.
    uriEscapePath: !s3,
  });
  const streamsBody = s3 && secure;
  return {
    streamsBody,
    async sign(method, url, raw, body) {
      const headers: Record<string, string> = {};
      for (let i = 0; i + 1 < raw.length; i += 2) {
        const name = (raw[i] as string).toLowerCase();
        if (!SIGNED_NAMES.has(name) && !name.startsWith('x-amz-')) continue;
        // Repeated fields are signed as AWS reads them: values joined with commas.
        headers[name] =
          headers[name] === undefined ? (raw[i + 1] as string) : `${headers[name]},${raw[i + 1]}`;
      }
      if (streamsBody) headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      const { path, query } = splitUrl(url);
      const host = headers.host ?? '';
      const request = new HttpRequest({
        method,
        protocol: secure ? 'https:' : 'http:',
        hostname: host.replace(/:\d+$/, ''),
        path,
        query,
        headers,
        ...(body !== undefined && body.length > 0 && !streamsBody ? { body } : {}),
      });
      const signed = await signer.sign(request);
      const out: string[] = [];
      for (const [name, value] of Object.entries(signed.headers)) {
        if (name === 'authorization' || (name.startsWith('x-amz-') && headers[name] === undefined)) {
          out.push(name === 'authorization' ? 'Authorization' : name, value);
        }
      }
      if (streamsBody) out.push('x-amz-content-sha256', 'UNSIGNED-PAYLOAD');
      return out;
    },
  };
}

/**
 * The path as sent and the query decoded, as SigV4 canonicalises them. `+` stays a plus (AWS
 * does not read it as a space); a key without `=` has the empty value.
 */
export function splitUrl(url: string): { path: string; query: Record<string, string | string[]> } {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const query: Record<string, string | string[]> = {};
  if (q >= 0) {
    for (const pair of url.slice(q + 1).split('&')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      const key = decode(eq < 0 ? pair : pair.slice(0, eq));
      const value = eq < 0 ? '' : decode(pair.slice(eq + 1));
      const prior = query[key];
      query[key] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value];
    }
  }
  return { path: path === '' ? '/' : path, query };
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s; // a stray '%' is signed as sent
  }
}
