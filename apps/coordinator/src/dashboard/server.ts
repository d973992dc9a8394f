/**
 * The dashboard's HTTP server, on node:http: a handful of GET routes and one event stream need
 * no framework (Hono or Express would add a router, a dependency and an adapter for what is a
 * `switch` on the path here; server-sent events are plain writes on a response).
 *
 * Routes (every one behind the token when the dashboard is beyond loopback, access.ts):
 * - `/metrics`: Prometheus text format (metrics.ts);
 * - `/healthz`: `ok`;
 * - `/api/state`: the run as JSON (runState.ts `RunSnapshot`);
 * - `/api/events`: server-sent events, a `snapshot` first, then `step`, `epoch_end`, `worker`
 *   and `state` deltas (eventStream.ts);
 * - `/api/charts`: the page's charts as Vega-Lite specs, the report's own (liveCharts.ts);
 * - `/api/test-images/<index>.png`: one image of the run's test set (testImages.ts);
 * - `/vendor/<bundle>`: Vega's and Vega-Lite's browser bundles (staticFiles.ts);
 * - anything else: the page's files (staticFiles.ts), `/` being `index.html`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { type Logger, ShardlineError, toShardlineError } from '@shardline/core';
import { isWildcardHost, splitHostPort } from '@shardline/protocol';
import type { Registry } from 'prom-client';
import { createAccessCheck } from './access.js';
import { DASHBOARD_FLAG, type DashboardSettings, isExposed } from './address.js';
import { createEventStream, type EventStream, type EventStreamOptions } from './eventStream.js';
import { liveCharts } from './liveCharts.js';
import { exposition, METRICS_CONTENT_TYPE } from './metrics.js';
import type { RunState } from './runState.js';
import { createStaticFiles, createVendorFiles, DASHBOARD_ASSETS_DIR } from './staticFiles.js';
import { missingImageText, TEST_IMAGES_PREFIX, type TestImages } from './testImages.js';

/** What the server serves. */
export interface DashboardContent {
  runState: RunState;
  /** The run's metrics registry (the process metrics are added to it at each scrape). */
  registry: Registry;
  /** The run's test images, for the misclassified grid (none: that route answers 404). */
  testImages?: TestImages;
}

/** Options of {@link startDashboardServer}. */
export interface DashboardServerOptions {
  settings: DashboardSettings;
  content: DashboardContent;
  logger: Logger;
  /**
   * Ports the default address must not take (the job's `--listen` and `--health-listen`): with
   * `settings.fallback` it takes a free port instead.
   */
  reservedPorts?: readonly number[];
  /** The page's folder. Default: the package's `dashboard/`. */
  assetsDir?: string;
  /** Event stream tuning (tests use small limits). */
  events?: EventStreamOptions;
}

/** A running dashboard server. */
export interface DashboardServer {
  /** The page's URL, such as `http://127.0.0.1:7071/` (loopback for a wildcard address). */
  readonly url: string;
  /** host:port it listens on, with the port it got. */
  readonly address: string;
  /**
   * Set when it took a free port instead of the one asked for: that address, and why (taken by
   * another program, or one of the job's own ports).
   */
  readonly moved?: { wanted: string; why: string };
  /** The event stream's clients (tests). */
  readonly events: EventStream;
  /**
   * Ends the event streams (after what is queued: the final state), stops accepting
   * connections and closes the open ones, waiting at most `graceMs` for requests in flight.
   */
  close(graceMs?: number): Promise<void>;
}

/** Answers 200 with `body` as JSON, never cached (it is the run as of now). */
function sendJson(response: ServerResponse, body: unknown, head: boolean): void {
  response.writeHead(200, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
  });
  response.end(head ? undefined : JSON.stringify(body));
}

/** Answers `/api/test-images/<index>.png`: the PNG, or 404 saying why there is none. */
async function sendTestImage(
  images: TestImages | undefined,
  pathname: string,
  response: ServerResponse,
  head: boolean,
): Promise<void> {
  const png = images ? await images.png(pathname) : { why: 'no-set' as const };
  if (!Buffer.isBuffer(png)) {
    response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
    response.end(missingImageText(png));
    return;
  }
  response.writeHead(200, {
    'content-type': 'image/png',
    'content-length': png.byteLength,
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
  });
  response.end(head ? undefined : png);
}

/** Listens on `host:port`; rejects with Node's error (EADDRINUSE...). */
function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const onError = (error: Error) => reject(error);
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      const bound = server.address();
      resolvePort(typeof bound === 'object' && bound ? bound.port : port);
    });
  });
}

/** The URL a browser on this machine opens: loopback in place of a wildcard address. */
function urlFor(host: string, port: number): string {
  const dial = isWildcardHost(host) ? (isIP(host) === 6 ? '::1' : '127.0.0.1') : host;
  return `http://${isIP(dial) === 6 ? `[${dial}]` : dial}:${port}/`;
}

/**
 * Starts the dashboard server on `settings.address`. The default address moves to a free port
 * when its port is taken or reserved (see {@link DashboardServer.moved}); an address given
 * explicitly that cannot be bound fails with INVALID_ARGUMENT saying which flag to change.
 */
export async function startDashboardServer(
  options: DashboardServerOptions,
): Promise<DashboardServer> {
  const { settings, content, logger } = options;
  const { host, port: portText } = splitHostPort(settings.address);
  const port = Number(portText);
  const events = createEventStream(options.events);
  const files = createStaticFiles(options.assetsDir ?? DASHBOARD_ASSETS_DIR);
  const vendor = createVendorFiles();
  const token = isExposed(settings.address) ? settings.token : undefined;
  let access = createAccessCheck(token, port);
  const unsubscribe = content.runState.subscribe((delta) => events.broadcast(delta));
  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      logger.warn('dashboard request failed', {
        path: request.url,
        reason: toShardlineError(error).message,
      });
      if (!response.headersSent) response.writeHead(500, { 'content-type': 'text/plain' });
      response.end();
    });
  });

  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const url = new URL(request.url ?? '/', 'http://dashboard.invalid');
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      response.end('The dashboard only answers GET and HEAD.\n');
      return;
    }
    if (!access(request, response, url)) return;
    const head = request.method === 'HEAD';
    switch (url.pathname) {
      case '/metrics': {
        const text = await exposition(content.registry);
        response.writeHead(200, {
          'content-type': METRICS_CONTENT_TYPE,
          'cache-control': 'no-store',
        });
        response.end(head ? undefined : text);
        return;
      }
      case '/healthz':
        response.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
        response.end(head ? undefined : 'ok\n');
        return;
      case '/api/state':
        sendJson(response, content.runState.snapshot(), head);
        return;
      case '/api/charts':
        sendJson(response, liveCharts(content.runState.snapshot()), head);
        return;
      case '/api/events':
        events.attach(request, response, [
          { event: 'snapshot', data: content.runState.snapshot() },
        ]);
        return;
      default:
        if (url.pathname.startsWith(TEST_IMAGES_PREFIX)) {
          await sendTestImage(content.testImages, url.pathname, response, head);
          return;
        }
        if (await vendor(url.pathname, response, head)) return;
        if (await files(url.pathname, response, head)) return;
        response.writeHead(404, { 'content-type': 'text/plain' });
        response.end(`Nothing at ${url.pathname}. Try /, /metrics, /api/state or /api/events.\n`);
    }
  };

  let bound: number;
  let movedFrom: number | undefined;
  const reserved = settings.fallback && (options.reservedPorts ?? []).includes(port);
  try {
    bound = await listen(server, host, reserved ? 0 : port);
    if (reserved) movedFrom = port;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (!(settings.fallback && code === 'EADDRINUSE')) {
      unsubscribe();
      events.close();
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Cannot serve the dashboard on ${settings.address}: ${code === 'EADDRINUSE' ? 'the port is taken' : (error as Error).message}. ` +
          `Choose another ${DASHBOARD_FLAG} host:port (port 0 takes any free one), or ${DASHBOARD_FLAG} off.`,
        { cause: error },
      );
    }
    bound = await listen(server, host, 0);
    movedFrom = port;
  }
  // The cookie is named after the port the browser sees.
  if (bound !== port) access = createAccessCheck(token, bound);
  const address = `${host.includes(':') ? `[${host}]` : host}:${bound}`;
  let closing: Promise<void> | undefined;
  return {
    url: urlFor(host, bound),
    address,
    ...(movedFrom === undefined
      ? {}
      : {
          moved: {
            wanted: settings.address,
            why: reserved ? 'a port of this job' : 'taken by another program',
          },
        }),
    events,
    close(graceMs = 2000) {
      closing ??= new Promise<void>((resolveClosed) => {
        unsubscribe();
        events.close();
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolveClosed();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}
