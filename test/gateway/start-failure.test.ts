// A gateway whose start fails half-way releases what it had made (src/gateway/teardown.ts): the
// store is closed and nothing touches it afterwards (the session sweep, the role reaper, agent
// discovery), and the port it may have bound is free again.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import { startGateway } from '../../src/gateway/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-start-failure-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The store, with every call after close() recorded. */
async function watchedStore(name: string): Promise<{ store: Store; late: string[]; closed: () => boolean }> {
  const real = await openStore({ sqlite: { path: join(dir, `${name}.db`) } }, { dataDir: dir });
  const late: string[] = [];
  let closed = false;
  const store = new Proxy(real, {
    get(target, prop) {
      // Getters run on the real store (it keeps private fields).
      const value = Reflect.get(target, prop);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (closed) late.push(String(prop));
        if (prop === 'close') closed = true;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, late, closed: () => closed };
}

function config(name: string, extra: object = {}) {
  return parseGatewayConfig(
    JSON.stringify({ listen: '127.0.0.1:0', data_dir: join(dir, name), ...extra }),
    `${name}.json`,
    { resolveSecrets: true, env: {} },
  );
}

const quiet = { logger: silentLogger(), stderr: { write: () => true } as never };

describe('a start that fails half-way', () => {
  it('an exit that cannot be built: the store is closed and no timer uses it afterwards', async () => {
    writeFileSync(join(dir, 'token'), 'abc\r\nX-Evil: 1');
    const watched = await watchedStore('exits');
    const cfg = config('exits', {
      targets: [
        {
          name: 'api',
          protocol: 'http',
          address: '127.0.0.1:1',
          credentials: { token: { file: join(dir, 'token') } },
        },
      ],
    });
    await expect(
      startGateway(cfg, { ...quiet, store: watched.store, sweepIntervalMs: 20 }),
    ).rejects.toMatchObject({ code: 'CIPORT_E_CONFIG_INVALID' });
    expect(watched.closed()).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(watched.late).toEqual([]);
  });

  it('a port already taken: the store is closed, nothing uses it afterwards', async () => {
    const taken: Server = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    const watched = await watchedStore('listen');
    const cfg = config('listen', { listen: `127.0.0.1:${port}` });
    await expect(
      startGateway(cfg, { ...quiet, store: watched.store, sweepIntervalMs: 20 }),
    ).rejects.toMatchObject({
      code: 'CIPORT_E_CONFIG_INVALID',
    });
    taken.close();
    expect(watched.closed()).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(watched.late).toEqual([]);
  });

  it('a gateway that started closes its store once, and drain after close does not touch it again', async () => {
    const watched = await watchedStore('normal');
    const gw = await startGateway(config('normal'), { ...quiet, store: watched.store, sweepIntervalMs: 20 });
    await gw.close();
    await gw.drain();
    expect(watched.closed()).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(watched.late).toEqual([]);
  });
});
