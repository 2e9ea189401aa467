// An http target whose injected secret cannot be sent fails the gateway's start (not the first
// request), with a message naming the target and the secret's origin, never its value.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import { startGateway } from '../../src/gateway/server.js';
import { silentLogger } from '../../src/log/logger.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-http-start-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('http exit at gateway start', () => {
  it('refuses to start when a token holds a newline', async () => {
    writeFileSync(join(dir, 'token'), 'abc\r\nX-Evil: 1');
    const cfg = parseGatewayConfig(
      JSON.stringify({
        listen: '127.0.0.1:0',
        data_dir: join(dir, 'data'),
        store: { sqlite: { path: join(dir, 'data', 'ciport.db') } },
        targets: [
          {
            name: 'api',
            protocol: 'http',
            address: '127.0.0.1:1',
            credentials: { token: { file: join(dir, 'token') } },
          },
        ],
      }),
      'start.json',
      { resolveSecrets: true, env: {} },
    );
    const started = startGateway(cfg, { logger: silentLogger(), stderr: { write: () => true } as never });
    await expect(started).rejects.toMatchObject({ code: 'CIPORT_E_CONFIG_INVALID' });
    await expect(started).rejects.toThrow(/targets\.api\.credentials/);
    await expect(started).rejects.not.toThrow(/X-Evil/);
  });
});
