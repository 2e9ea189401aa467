// Device authorizations the gateway started for `ciport login --device` (docs/login.md), in
// memory: the device code stays here, the CLI holds an opaque handle (`cpd_…`, kept as its
// SHA-256). Each poll may reach the provider only once its interval has passed, one poll at a
// time, so a CLI polling fast cannot make the gateway hammer the provider. Bounded in number;
// entries go when they expire or complete. Several gateways behind a TCP load balancer: the CLI
// polls over the HTTP/2 connection that started it, which stays on one gateway.
import { randomBytes } from 'node:crypto';
import { CiportError } from '../../errors/index.js';
import { hashSecret } from '../../session/secret.js';

export interface PendingDevice {
  deviceCode: string;
  /** Seconds between polls (raised by 5 on each slow_down, RFC 8628 §3.5). */
  interval: number;
  /** Epoch ms before which a poll does not reach the provider. */
  nextPollAt: number;
  expiresAt: number;
  /** A poll is at the provider now. */
  busy: boolean;
}

export const MAX_PENDING_DEVICES = 1000;

export class PendingDevices {
  readonly #byHash = new Map<string, PendingDevice>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  get size(): number {
    return this.#byHash.size;
  }

  /** Remember a device authorization; returns the handle the CLI polls with. */
  add(device: { device_code: string; interval?: number | undefined; expires_in: number }): string {
    this.#sweep();
    if (this.#byHash.size >= MAX_PENDING_DEVICES) {
      throw new CiportError(
        'CIPORT_E_RATE_LIMITED',
        'too many device sign-ins in progress; retry in a minute',
        {
          details: { retry_after_s: 60 },
        },
      );
    }
    const handle = `cpd_${randomBytes(32).toString('base64url')}`;
    const now = this.#now();
    const interval = Math.max(1, Math.min(60, Math.trunc(device.interval ?? 5)));
    this.#byHash.set(hashSecret(handle), {
      deviceCode: device.device_code,
      interval,
      nextPollAt: now + interval * 1000,
      expiresAt: now + Math.max(1, Math.min(3600, Math.trunc(device.expires_in))) * 1000,
      busy: false,
    });
    return handle;
  }

  /** The live entry of `handle`, or undefined (unknown, expired or completed). */
  get(handle: string): PendingDevice | undefined {
    const key = hashSecret(handle);
    const entry = this.#byHash.get(key);
    if (entry && entry.expiresAt <= this.#now()) {
      this.#byHash.delete(key);
      return undefined;
    }
    return entry;
  }

  delete(handle: string): void {
    this.#byHash.delete(hashSecret(handle));
  }

  #sweep(): void {
    const now = this.#now();
    for (const [key, entry] of this.#byHash) if (entry.expiresAt <= now) this.#byHash.delete(key);
  }
}
