/**
 * `--dashboard <host:port|off>`: where the run's dashboard (the live page, its JSON API and
 * `/metrics`) listens, and the rules checked before anything is created.
 *
 * Policy, the same as the gRPC port's (distributed/security.ts) minus TLS, which the dashboard
 * does not serve: on loopback anyone on this machine may look; beyond loopback every request
 * must carry the job's token, and a dashboard beyond loopback without one is refused at start.
 */
import { ShardlineError } from '@shardline/core';
import { Expectation } from '@shardline/core/settings';
import { isLoopbackHost, splitHostPort, TOKEN_ENV } from '@shardline/protocol';

/** The flag, for messages. */
export const DASHBOARD_FLAG = '--dashboard';

/**
 * The default address: loopback, port 7071 (next to the gRPC port's 7070). When 7071 is taken
 * the default moves to a free port; an address given explicitly does not move.
 */
export const DEFAULT_DASHBOARD = '127.0.0.1:7071';

/** Where a run's dashboard listens; `undefined` (elsewhere) when it is `off`. */
export interface DashboardSettings {
  /** host:port to listen on; port 0 takes a free one. */
  address: string;
  /**
   * Take a free port when this one is taken (or is one the job's other ports use): true for
   * the default address, false for one the user chose, which must be what it says.
   */
  fallback: boolean;
  /** The job's token: required on every request when `address` is beyond loopback. */
  token?: string;
}

/**
 * Parser of `--dashboard` (and SHARDLINE_DASHBOARD, config key `dashboard`): `off`, or a host
 * (name, IPv4, or bracketed IPv6) and a port from 0 to 65535. Throws an {@link Expectation}.
 */
export function parseDashboard(value: string): string {
  const v = value.trim();
  if (v.toLowerCase() === 'off') return 'off';
  const match = /^(?:\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/.exec(v);
  if (!match || Number(match[1]) > 65535) {
    throw new Expectation(
      'expected off, or host:port such as 127.0.0.1:7071 or 0.0.0.0:7071 (port 0 takes a free one)',
    );
  }
  return v;
}

/** Whether a dashboard on `address` can be reached from other machines. */
export function isExposed(address: string): boolean {
  return !isLoopbackHost(splitHostPort(address).host);
}

/**
 * Refuses a dashboard that cannot work, before anything is created: beyond loopback without a
 * token (anyone who reaches the port would see the job, and could read the run's state), or
 * explicitly on the port of `--listen` or `--health-listen` (ports a distributed run binds
 * too). The default address is not refused for a shared port: it moves to a free one.
 */
export function checkDashboard(
  dashboard: DashboardSettings | undefined,
  others: { listen?: string; healthListen?: string | undefined },
): void {
  if (!dashboard) return;
  if (isExposed(dashboard.address) && dashboard.token === undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Refusing to serve the dashboard on ${dashboard.address} without a token: any machine that reaches that port could watch the job and read its metrics. ` +
        `Set the job's token (--token, --token-file or ${TOKEN_ENV}; browsers open <url>/?token=<token> once, scrapers send "Authorization: Bearer <token>"), ` +
        `serve it on loopback (${DASHBOARD_FLAG} ${DEFAULT_DASHBOARD}, reached through an SSH tunnel), or turn it off (${DASHBOARD_FLAG} off).`,
    );
  }
  if (dashboard.fallback) return;
  const port = Number(splitHostPort(dashboard.address).port);
  if (port === 0) return;
  for (const [flag, address] of [
    ['--listen', others.listen],
    ['--health-listen', others.healthListen],
  ] as const) {
    if (address !== undefined && Number(splitHostPort(address).port) === port) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${DASHBOARD_FLAG} ${dashboard.address} uses the port of ${flag} ${address}. Give the dashboard another port (such as ${DEFAULT_DASHBOARD}, or port 0 for any free one).`,
      );
    }
  }
}

/**
 * The ports the default dashboard address must not take because the job binds them itself
 * (`--listen`, `--health-listen`): binding 127.0.0.1:7071 first would make a later
 * `--health-listen 0.0.0.0:7071` fail.
 */
export function reservedPorts(others: {
  listen?: string | undefined;
  healthListen?: string | undefined;
}): number[] {
  return [others.listen, others.healthListen]
    .filter((a): a is string => a !== undefined)
    .map((a) => Number(splitHostPort(a).port))
    .filter((p) => p > 0);
}
