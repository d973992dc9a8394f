/**
 * `--metrics-listen <host:port>`: a plain HTTP port serving the worker's Prometheus metrics at
 * `/metrics` (off unless given). On node:http: one route needs no framework.
 *
 * The token rule is the coordinator dashboard's: on loopback anyone on this machine may scrape;
 * beyond loopback every request must carry the worker's token as `Authorization: Bearer
 * <token>` (Prometheus: `authorization: { credentials_file: ... }`), compared in constant time,
 * and a port beyond loopback without a token is refused at start.
 */
import { createServer } from 'node:http';
import { isIP } from 'node:net';
import { type Logger, ShardlineError, toShardlineError } from '@shardline/core';
import {
  createTokenVerifier,
  isLoopbackHost,
  isWildcardHost,
  splitHostPort,
  TOKEN_ENV,
} from '@shardline/protocol';
import { Registry } from 'prom-client';
import { exposition } from './workerMetrics.js';

/** The flag, for messages. */
export const METRICS_LISTEN_FLAG = '--metrics-listen';

/** A running metrics port. */
export interface MetricsServer {
  /** The scrape URL, such as `http://127.0.0.1:9464/metrics` (loopback for a wildcard host). */
  readonly url: string;
  /** host:port it listens on, with the port it got. */
  readonly address: string;
  /** Stops listening and closes open connections. */
  close(): Promise<void>;
}

/** Options of {@link serveWorkerMetrics}. */
export interface MetricsServerOptions {
  /** host:port to listen on; port 0 takes a free one. */
  address: string;
  /** The worker's token: required on every request when `address` is beyond loopback. */
  token?: string | undefined;
  registry: Registry;
  logger: Logger;
}

/**
 * Refuses a metrics port beyond loopback without a token, before anything starts: anyone who
 * reaches it could read the worker's metrics.
 */
export function checkMetricsListen(address: string | undefined, token: string | undefined): void {
  if (address === undefined || token !== undefined) return;
  if (isLoopbackHost(splitHostPort(address).host)) return;
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `Refusing to serve metrics on ${address} (${METRICS_LISTEN_FLAG}) without a token: any machine that reaches that port could read them. ` +
      `Set the worker's token (--token, --token-file or ${TOKEN_ENV}; scrapers then send "Authorization: Bearer <token>"), or listen on 127.0.0.1.`,
  );
}

/** The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive). */
function bearerToken(header: string | undefined): string | undefined {
  return /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '')?.[1];
}

/**
 * Serves `registry` (and the process metrics) at `/metrics` on `address`. Rejects with
 * INVALID_ARGUMENT when the address cannot be bound.
 *
 * @example
 * ```ts
 * const metrics = createWorkerMetrics(name);
 * const server = await serveWorkerMetrics({ address: '127.0.0.1:9464', registry: metrics.registry, logger });
 * ```
 */
export async function serveWorkerMetrics(options: MetricsServerOptions): Promise<MetricsServer> {
  const { host, port } = splitHostPort(options.address);
  const exposed = !isLoopbackHost(host);
  const verify =
    exposed && options.token !== undefined ? createTokenVerifier(options.token) : undefined;
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://worker.invalid').pathname;
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      response.end('Only GET and HEAD.\n');
      return;
    }
    if (verify && !verify(bearerToken(request.headers.authorization))) {
      response.writeHead(401, {
        'content-type': 'text/plain; charset=utf-8',
        'www-authenticate': 'Bearer realm="shardline-worker"',
      });
      response.end(
        `This worker's metrics require its token (--token, --token-file or ${TOKEN_ENV}), sent as "Authorization: Bearer <token>".\n`,
      );
      return;
    }
    if (path !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' });
      response.end(`Nothing at ${path}: the metrics are at /metrics.\n`);
      return;
    }
    exposition(options.registry).then(
      (text) => {
        response.writeHead(200, {
          'content-type': Registry.PROMETHEUS_CONTENT_TYPE,
          'cache-control': 'no-store',
        });
        response.end(request.method === 'HEAD' ? undefined : text);
      },
      (error: unknown) => {
        options.logger.warn('metrics scrape failed', { reason: toShardlineError(error).message });
        response.writeHead(500, { 'content-type': 'text/plain' });
        response.end();
      },
    );
  });
  const bound = await new Promise<number>((resolvePort, reject) => {
    server.once('error', reject);
    server.listen({ host, port: Number(port) }, () => {
      server.off('error', reject);
      const a = server.address();
      resolvePort(typeof a === 'object' && a ? a.port : Number(port));
    });
  }).catch((error: unknown) => {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Cannot serve metrics on ${options.address} (${METRICS_LISTEN_FLAG}): ${code === 'EADDRINUSE' ? 'the port is taken' : (error as Error).message}. Choose another host:port (port 0 takes any free one).`,
      { cause: error },
    );
  });
  const dial = isWildcardHost(host) ? (isIP(host) === 6 ? '::1' : '127.0.0.1') : host;
  const hostText = (h: string) => (isIP(h) === 6 ? `[${h}]` : h);
  return {
    url: `http://${hostText(dial)}:${bound}/metrics`,
    address: `${hostText(host)}:${bound}`,
    close() {
      return new Promise<void>((resolveClosed) => {
        server.close(() => resolveClosed());
        server.closeAllConnections();
      });
    },
  };
}
