// protocol http: one HttpExit per target (an HTTP server over the tunnel streams and a pool of
// upstream sockets) parses the app's requests and injects the credential (exit.ts).
import type { ExitDefinition, StreamExit } from '../contract.js';
import { createHttpExit } from './exit.js';
import { httpInjectionFrom } from './injection.js';

export const httpExit: ExitDefinition<'http'> = {
  protocol: 'http',
  build(target, host): StreamExit {
    const exit = createHttpExit(
      { name: target.name, address: target.address, tls: target.tls, injection: httpInjectionFrom(target) },
      {
        connectTimeoutMs: host.connectTimeoutMs,
        ...(host.idleTimeoutMs !== undefined ? { idleTimeoutMs: host.idleTimeoutMs } : {}),
      },
    );
    return {
      mode: 'stream',
      target,
      async serve(stream, connection) {
        const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
        // Requests are relayed as they come; the connection itself is open from the start.
        connection.onConnected?.({});
        exit.serve(stream, {
          onRequest: (event) => connection.onRequest?.(event),
        });
        await closed;
        return {};
      },
      close: () => exit.close(),
    };
  },
};
