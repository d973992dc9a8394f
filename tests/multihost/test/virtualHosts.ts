import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/** One emulated machine: a network namespace with its own address on a shared virtual LAN. */
export interface VirtualHost {
  /** The namespace's name, for `ip netns exec`. */
  namespace: string;
  /** Its IPv4 address on the LAN. */
  address: string;
}

/** A LAN of {@link VirtualHost}s; `destroy()` removes every namespace and link it made. */
export interface VirtualLan {
  hosts: VirtualHost[];
  destroy(): void;
}

const ip = (...args: string[]) =>
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });

/**
 * Why this is not a skip in disguise: CI runs as root on Linux, where network namespaces work;
 * elsewhere (a developer's laptop without root) the test says why it cannot run.
 */
export function virtualHostsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root (CI runs as root)';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return 'the `ip` command (iproute2) is missing or cannot list namespaces';
  }
  return undefined;
}

/**
 * Creates `count` network namespaces wired to one bridge (itself in a namespace of its own, so
 * nothing in the machine's own network changes), addressed 10.X.Y.1, .2, ... with a random X.Y.
 * Processes started with {@link inHost} see only their namespace's loopback and the LAN: a
 * worker there reaches the coordinator the way it would across machines, by its LAN address.
 */
export function createVirtualLan(count: number): VirtualLan {
  const id = randomBytes(3).toString('hex');
  const subnet = `10.${200 + (Number.parseInt(id.slice(0, 2), 16) % 50)}.${Number.parseInt(id.slice(2, 4), 16)}`;
  const lan = `sl-lan-${id}`;
  const hosts: VirtualHost[] = [];
  const destroy = () => {
    // Deleting a namespace deletes the links inside it; the veth peers go with them.
    for (const name of [...hosts.map((h) => h.namespace), lan]) {
      try {
        ip('netns', 'del', name);
      } catch {
        // Already gone (or never made): nothing to clean.
      }
    }
  };
  try {
    ip('netns', 'add', lan);
    ip('-n', lan, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', lan, 'link', 'set', 'br0', 'up');
    for (let i = 1; i <= count; i++) {
      const namespace = `sl-h${i}-${id}`;
      const address = `${subnet}.${i}`;
      ip('netns', 'add', namespace);
      hosts.push({ namespace, address });
      ip('-n', namespace, 'link', 'set', 'lo', 'up');
      // Created in the host's namespace with its peer directly in the LAN's: names never touch
      // the machine's own namespace.
      ip(
        '-n',
        namespace,
        'link',
        'add',
        'eth0',
        'type',
        'veth',
        'peer',
        'name',
        `port${i}`,
        'netns',
        lan,
      );
      ip('-n', lan, 'link', 'set', `port${i}`, 'master', 'br0');
      ip('-n', lan, 'link', 'set', `port${i}`, 'up');
      ip('-n', namespace, 'addr', 'add', `${address}/24`, 'dev', 'eth0');
      ip('-n', namespace, 'link', 'set', 'eth0', 'up');
    }
  } catch (error) {
    destroy();
    throw error;
  }
  return { hosts, destroy };
}

/** Spawns `node <args>` inside `host`'s namespace, as if run on that machine. */
export function inHost(host: VirtualHost, args: string[], env: NodeJS.ProcessEnv) {
  return spawn('ip', ['netns', 'exec', host.namespace, process.execPath, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
