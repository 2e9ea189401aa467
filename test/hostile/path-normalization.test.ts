// The API routes the pathname of `new URL(req.url, base)` (src/gateway/api.ts): WHATWG URL
// parsing resolves `..` (also written `%2e%2e`), turns `\` into `/` and reads a request target
// starting with `//` as a host. So `/v1/x/%2e%2e/admin/…`, `/v1\admin\…` and `//h/v1/admin/…`
// reach the routes they spell after normalization, while a proxy or WAF in front that matches
// the raw path (say, `/v1/admin/` only from the operators' network) sees something else.
// docs/gateway.md: "the routes are fixed names"; a path that is not one of them must be a 404.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { tempDir } from '../gateway/helpers.js';

const { dir, cleanup } = tempDir('ciport-paths-');
let gw: RunningGateway;

beforeAll(async () => {
  const file = join(dir, 'client');
  writeFileSync(file, 'client bytes');
  gw = await startTestGateway(
    gatewayConfig({ listen: '127.0.0.1:0', data_dir: join(dir, 'data'), client: { linux_x64: file } }),
  );
});

afterAll(async () => {
  await gw?.close();
  cleanup();
});

function status(path: string, version: string): Promise<string> {
  return new Promise((resolve) => {
    execFile(
      'curl',
      [
        '-sS',
        '--path-as-is',
        version,
        '--cacert',
        gw.caFile as string,
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        `${gw.url}${path}`,
      ],
      (_err, stdout) => resolve(String(stdout)),
    );
  });
}

const NOT_ROUTES = [
  '/v1/x/../client/linux-x64',
  '/v1/x/%2e%2e/client/linux-x64',
  '/v1\\client\\linux-x64',
  '//elsewhere/v1/client/linux-x64',
];

describe('request paths that only normalize to a route', () => {
  for (const version of ['--http1.1', '--http2']) {
    it(`are not served as that route (${version})`, async () => {
      const got = await Promise.all(NOT_ROUTES.map(async (p) => [p, await status(p, version)]));
      expect(got).toEqual(NOT_ROUTES.map((p) => [p, '404']));
    });
  }
});
