// Whether and how `ciport login` opens a browser (docs/login.md). Never required: the URL is
// always printed. Opened only where a person's browser can also reach this machine's loopback
// address, i.e. a local desktop session; over SSH without a forwarded display the loopback
// redirect cannot come back, so login prefers the device grant there.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

function onPath(env: NodeJS.ProcessEnv, name: string): string | undefined {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A graphical session this process can show a browser in. */
export function hasDisplay(env: NodeJS.ProcessEnv): boolean {
  return process.platform === 'darwin' || Boolean(env.DISPLAY || env.WAYLAND_DISPLAY);
}

/** Logged in over SSH without a display: a browser elsewhere cannot reach our 127.0.0.1. */
export function isRemoteShell(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.SSH_CONNECTION || env.SSH_TTY) && !hasDisplay(env);
}

/**
 * The program that opens a URL in the person's browser: by default only in a graphical session,
 * with `force` (`--open`) wherever one is installed.
 */
export function browserOpener(env: NodeJS.ProcessEnv, force = false): string | undefined {
  if (!force && !hasDisplay(env)) return undefined;
  return process.platform === 'darwin' ? '/usr/bin/open' : onPath(env, 'xdg-open');
}

/**
 * Open `url` (an authorization or verification URL: no secret in it) with `opener`, detached and
 * silent; false when it could not be started. The CLI never waits for the browser.
 */
export function openBrowser(opener: string, url: string, env: NodeJS.ProcessEnv): boolean {
  try {
    // The browser inherits no CIPORT_* variable (CIPORT_ADMIN_TOKEN may be set in this shell).
    const childEnv = Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('CIPORT_')));
    const child = spawn(opener, [url], { detached: true, stdio: 'ignore', env: childEnv });
    child.on('error', () => {});
    child.unref();
    return true;
  } catch {
    return false;
  }
}
