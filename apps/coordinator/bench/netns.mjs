// Emulated machines for benchmarks: one network namespace per host, each wired by a veth pair to
// a bridge that lives in a namespace of its own (so nothing in the machine's own network
// changes), with a `tbf` rate limit on both ends of every host's link: the host's eth0 (its
// upload) and the bridge's port (its download). The same approach as
// tests/multihost/test/virtualHosts.ts, in plain ESM so a .bench.mjs can import it, plus the
// shaping. netem is not available on the machines this runs on, so links get a rate, no delay.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

const ip = (...args) =>
  execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).toString();
const tc = (...args) =>
  execFileSync('tc', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });

/** Why namespaces cannot be made here, or undefined when they can. */
export function netnsUnavailable() {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root (run it as root)';
  for (const [command, args] of [
    ['ip', ['netns', 'list']],
    ['tc', ['-V']],
  ]) {
    try {
      execFileSync(command, args, { stdio: 'ignore' });
    } catch {
      return `\`${command} ${args.join(' ')}\` failed: install iproute2 (ip, tc) with netns support`;
    }
  }
  return undefined;
}

/**
 * Parses a tc rate ("100mbit", "1gbit", "500kbit") into bits per second, so callers can compute
 * bounds from the same string they pass to tc.
 */
export function parseRate(rate) {
  const match = /^(\d+(?:\.\d+)?)(k|m|g)?bit$/i.exec(rate);
  if (!match) throw new Error(`rate "${rate}" is not understood: expected like 100mbit or 1gbit`);
  const scale = { k: 1e3, m: 1e6, g: 1e9 }[(match[2] ?? '').toLowerCase()] ?? 1;
  return Number(match[1]) * scale;
}

/**
 * Creates `count` hosts on one shaped LAN: addresses 10.X.Y.1, .2, ... (random X.Y), every
 * host's link limited to `rate` in both directions. `destroy()` removes all of it (deleting a
 * namespace deletes its links, and a veth pair goes with either end); it is safe to call twice.
 */
export function createShapedLan(count, rate) {
  const bitsPerSecond = parseRate(rate);
  // The bucket must hold at least one GSO super-packet (64 KiB) or tbf drops it, and about a
  // millisecond of traffic so the timer's granularity does not cap the rate.
  const burst = Math.max(128 * 1024, Math.ceil(bitsPerSecond / 8 / 1000) * 2);
  const shape = (namespace, dev) =>
    tc(
      '-n',
      namespace,
      'qdisc',
      'add',
      'dev',
      dev,
      'root',
      'tbf',
      'rate',
      rate,
      'burst',
      String(burst),
      'latency',
      '50ms',
    );
  const id = randomBytes(3).toString('hex');
  const subnet = `10.${150 + (Number.parseInt(id.slice(0, 2), 16) % 50)}.${Number.parseInt(id.slice(2, 4), 16)}`;
  const lan = `xch-lan-${id}`;
  const hosts = [];
  let destroyed = false;
  const destroy = () => {
    if (destroyed) return;
    destroyed = true;
    for (const name of [...hosts.map((h) => h.namespace), lan]) {
      try {
        ip('netns', 'del', name);
      } catch {
        // Never made, or already gone.
      }
    }
  };
  try {
    ip('netns', 'add', lan);
    ip('-n', lan, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', lan, 'link', 'set', 'br0', 'up');
    for (let i = 1; i <= count; i++) {
      const namespace = `xch-h${i}-${id}`;
      const address = `${subnet}.${i}`;
      ip('netns', 'add', namespace);
      hosts.push({ namespace, address, port: `port${i}`, lan });
      ip('-n', namespace, 'link', 'set', 'lo', 'up');
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
      shape(namespace, 'eth0');
      shape(lan, `port${i}`);
    }
  } catch (error) {
    destroy();
    throw error;
  }
  return { hosts, destroy, burst };
}

/** Bytes the host's link has carried so far: sent (its upload) and received (its download). */
export function linkBytes(host) {
  const [link] = JSON.parse(ip('-n', host.namespace, '-s', '-j', 'link', 'show', 'eth0'));
  const stats = link.stats64 ?? link.stats;
  return { sent: stats.tx.bytes, received: stats.rx.bytes };
}

/** Spawns `node <args>` inside `host`'s namespace, as if run on that machine. */
export function inHost(host, args, env = {}) {
  return spawn('ip', ['netns', 'exec', host.namespace, process.execPath, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
