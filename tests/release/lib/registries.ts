/**
 * Local npm registries on 127.0.0.1 for the release tests: an empty one that answers 404 to
 * everything, and a real Verdaccio (the root devDependency) with its storage in a temp folder.
 * Both listen on a port the kernel picks and are stopped by the test that started them.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { repoRoot } from '../../../scripts/pack-all.mjs';

/** A registry the test started; `stop()` is safe to call more than once. */
export interface LocalRegistry {
  /** Base URL with a trailing slash, e.g. `http://127.0.0.1:41865/`. */
  url: string;
  /** What the registry was asked for, as `METHOD /path` (the empty registry only). */
  requests: string[];
  stop(): Promise<void>;
}

/**
 * A registry that knows no packages. Pointing the `@shardline` scope at it makes npm take every
 * `@shardline/*` package from the tarballs it was given: it still asks for each one's metadata
 * (to check the tarball against the dependency ranges), and a quick 404 is what lets it carry
 * on. A closed port would make it retry for minutes; the public registry would answer for
 * whoever owns the names there.
 */
export async function startEmptyRegistry(): Promise<LocalRegistry> {
  const requests: string[] = [];
  const server = createServer((request, response) => {
    requests.push(`${request.method} ${request.url}`);
    response.writeHead(404, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ error: 'not found: this registry is empty on purpose' }));
  });
  await new Promise<void>((resolvePromise) => server.listen(0, '127.0.0.1', resolvePromise));
  const { port } = server.address() as AddressInfo;
  let stopped: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}/`,
    requests,
    stop() {
      stopped ??= new Promise((resolvePromise) => {
        server.closeAllConnections();
        server.close(() => resolvePromise());
      });
      return stopped;
    },
  };
}

/** A running Verdaccio with one user allowed to publish. */
export interface Verdaccio extends LocalRegistry {
  /** Auth token of the publishing user (an `_authToken` for .npmrc). */
  token: string;
  /** `//127.0.0.1:PORT/`: the prefix of .npmrc lines scoped to this registry. */
  nerfDart: string;
  /** Everything Verdaccio printed, for failure messages. */
  log(): string;
}

/**
 * Starts Verdaccio with its storage and password file under `dir`. `@shardline/*` is served
 * from local storage only (no uplink), so nothing published here can be mistaken for, or
 * shadowed by, a package of the public registry; installs take other packages from the public
 * registry directly.
 */
export async function startVerdaccio(dir: string, timeoutMs = 60_000): Promise<Verdaccio> {
  const configPath = join(dir, 'config.yaml');
  writeFileSync(
    configPath,
    [
      `storage: ${JSON.stringify(join(dir, 'storage'))}`,
      'auth:',
      '  htpasswd:',
      `    file: ${JSON.stringify(join(dir, 'htpasswd'))}`,
      'uplinks: {}',
      'packages:',
      "  '@shardline/*':",
      '    access: $all',
      '    publish: $authenticated',
      "  '**':",
      '    access: $all',
      '    publish: $authenticated',
      'web:',
      '  enable: false',
      'log: { type: stdout, format: json, level: warn }',
      '',
    ].join('\n'),
  );
  const child = spawn(
    process.execPath,
    [join(repoRoot, 'tests/release/lib/verdaccioServer.mjs'), configPath],
    // The IPC channel is the registry's lifeline: it stops when this process goes away.
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] },
  );
  let output = '';
  const exited = new Promise<void>((resolvePromise) => child.on('close', () => resolvePromise()));
  const port = await new Promise<number>((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `Verdaccio did not report its port within ${timeoutMs / 1000} s. Its output:\n${output}`,
        ),
      );
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      const match = /^\{"port":(\d+)\}$/m.exec(output);
      if (match) {
        clearTimeout(timer);
        resolvePromise(Number(match[1]));
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      reject(
        new Error(
          `Verdaccio exited (${signal ?? `status ${code}`}) before listening. Its output:\n${output}`,
        ),
      );
    });
  });
  const url = `http://127.0.0.1:${port}/`;
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      child.kill('SIGTERM');
      const deadline = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(deadline);
    })();
    return stopped;
  };
  try {
    const token = await addUser(url, 'shardline-release-test', `pw-${process.pid}-${Date.now()}`);
    return { url, nerfDart: `//127.0.0.1:${port}/`, token, requests: [], stop, log: () => output };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Registers a user the way `npm adduser` does and returns the session token. */
async function addUser(url: string, name: string, password: string): Promise<string> {
  const response = await fetch(
    new URL(`-/user/org.couchdb.user:${encodeURIComponent(name)}`, url),
    {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name, password }),
    },
  );
  const body = (await response.json()) as { token?: string; error?: string };
  if (!response.ok || typeof body.token !== 'string') {
    throw new Error(
      `Verdaccio refused to create the test user: expected 201 with a token, found ${response.status} ${JSON.stringify(body)}.`,
    );
  }
  return body.token;
}

/** The packument of `name` on `registry` (all published versions), or undefined on a 404. */
export async function fetchPackument(
  registry: string,
  name: string,
): Promise<
  | { versions: Record<string, { dist: { tarball: string } }>; 'dist-tags': Record<string, string> }
  | undefined
> {
  const response = await fetch(new URL(name.replace('/', '%2f'), registry));
  if (response.status === 404) return undefined;
  if (!response.ok)
    throw new Error(`GET ${name} from ${registry}: expected 200 or 404, found ${response.status}.`);
  return (await response.json()) as never;
}
