/**
 * `--health-listen`: a second port that serves only the standard gRPC health service, in
 * plaintext and without a token.
 *
 * Why a second port: the health service on `--listen` is outside the token check, so probes work
 * there while the coordinator serves plaintext. Once `--listen` serves TLS they do not: the
 * kubelet's gRPC probes (and most load balancers' health checks) speak neither TLS nor tokens,
 * and a plaintext client cannot even complete the handshake. This port answers with nothing but
 * SERVING / NOT_SERVING (the same statuses as on `--listen`), so it needs neither; the
 * coordinator service itself is never registered on it.
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { ShardlineError } from '@shardline/core';
import { Expectation } from '@shardline/core/settings';
import { splitHostPort } from '@shardline/protocol';
import type { HealthImplementation } from 'grpc-health-check';

/** The flag, for messages. */
export const HEALTH_LISTEN_FLAG = '--health-listen';

/**
 * Parser of `--health-listen <host:port>` (and SHARDLINE_HEALTH_LISTEN, `healthListen`): a host
 * (name, IPv4, or bracketed IPv6) and a port from 0 to 65535 (0 takes a free one). Throws an
 * {@link Expectation}.
 */
export function parseHealthListen(value: string): string {
  const v = value.trim();
  const match = /^(?:\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/.exec(v);
  if (!match || Number(match[1]) > 65535) {
    throw new Expectation(
      'expected host:port, such as 0.0.0.0:7071 or [::]:7071 (port 0 takes a free one)',
    );
  }
  return v;
}

/**
 * Refuses a `--health-listen` that cannot work, before anything is created: with
 * `--in-process` (no server at all), or on the port of `--listen` (the health port exists to be
 * another one: the same port would either fail to bind or be the TLS port probes cannot use).
 */
export function checkHealthListen(options: {
  healthListen: string | undefined;
  listen: string;
  inProcess: boolean;
}): void {
  const { healthListen, listen } = options;
  if (healthListen === undefined) return;
  if (options.inProcess) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${HEALTH_LISTEN_FLAG} needs the distributed mode: --in-process serves no gRPC at all. Drop one of the two.`,
    );
  }
  const health = splitHostPort(healthListen);
  const main = splitHostPort(listen);
  if (health.port === main.port && Number(health.port) !== 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${HEALTH_LISTEN_FLAG} ${healthListen} uses the port of --listen ${listen}. Give it another port, such as 0.0.0.0:7071: ` +
        'it serves the health service in plaintext for probes that cannot use the --listen port.',
    );
  }
}

/** A running health port. */
export interface HealthPort {
  /** host:port it listens on, with the port it got. */
  address: string;
  /** Stops it at once. */
  close(): void;
}

/**
 * Serves `health` (shared with the main server, so both ports report the same statuses) on
 * `address`, in plaintext, with no other service.
 */
export async function serveHealthPort(
  health: HealthImplementation,
  address: string,
): Promise<HealthPort> {
  const server = new Server();
  health.addToServer(server);
  try {
    const port = await new Promise<number>((resolvePort, reject) =>
      server.bindAsync(address, ServerCredentials.createInsecure(), (error, p) =>
        error ? reject(error) : resolvePort(p),
      ),
    );
    const host = address.slice(0, address.lastIndexOf(':'));
    return { address: `${host}:${port}`, close: () => server.forceShutdown() };
  } catch (error) {
    server.forceShutdown();
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Cannot listen on ${address} (${HEALTH_LISTEN_FLAG}): ${(error as Error).message}. Choose another ${HEALTH_LISTEN_FLAG} address or port.`,
      { cause: error },
    );
  }
}
