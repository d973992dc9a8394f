/**
 * One run's dashboard, whole: the run state, the metrics, the server, and how a run plugs into
 * them. `train` opens it before anything else (its URL is the run's first log line), wraps its
 * reporter with {@link RunDashboard.observe}, hands the distributed mode's cluster to
 * {@link RunDashboard.watchCluster} and the loaded test set to
 * {@link RunDashboard.serveTestImages}, and closes it when the run is over.
 *
 * The dashboard only watches: an error in it is logged once and never fails or slows the run.
 */
import { type Logger, toShardlineError } from '@shardline/core';
import type { ImageSet } from '@shardline/datasets';
import type { RefusalHook } from '../distributed/refusals.js';
import type { Reporter } from '../reporter.js';
import { type DashboardSettings, isExposed } from './address.js';
import { createCoordinatorMetrics, type TrafficProbe } from './metrics.js';
import { createRunState, type RunState, type WorkerActivity } from './runState.js';
import { type DashboardServer, startDashboardServer } from './server.js';
import { createTestImages } from './testImages.js';

/** What the dashboard reads from the distributed mode's cluster (distributed/cluster.ts). */
export interface ClusterView {
  /** The attached workers and their activity. */
  attached(): readonly WorkerActivity[];
  /** Tensor bytes sent to and received from workers so far (none: no counts). */
  traffic?: TrafficProbe | undefined;
}

/** What a run hands the dashboard once its data is loaded (both modes). */
export interface DataObserver {
  /**
   * The run's test set (jobData.ts `testSet`; undefined when this process has none): the page's
   * grid of misclassified test images shows images from it.
   */
  serveTestImages(set: ImageSet | undefined): void;
}

/** The hooks the distributed mode feeds (a {@link RunDashboard}, or nothing when it is off). */
export interface ClusterObserver extends DataObserver {
  /** Counts one refusal (`shardline_rejected_messages_total`). */
  readonly refused: RefusalHook;
  /** Reads per-worker activity and traffic from the cluster. */
  watchCluster(cluster: ClusterView): void;
}

/** A run's dashboard; see the module comment. */
export interface RunDashboard extends ClusterObserver {
  /** The page's URL; undefined when the dashboard is off. */
  readonly url: string | undefined;
  /** The run's model, which the page is drawn from (undefined when off). */
  readonly runState: RunState | undefined;
  /**
   * `reporter` and the dashboard together: every event reaches both, and `started` reaches
   * `reporter` with a `dashboard` field holding the URL. Keeps `reporter`'s `output` and
   * `close`.
   */
  observe(reporter: Reporter): Reporter;
  /** The run failed: the page shows it, with why. */
  failed(error: unknown): void;
  /**
   * Serves the final state to the page, then closes the server. A run that neither finished nor
   * failed by then shows as stopped.
   */
  close(): Promise<void>;
}

/** Options of {@link openRunDashboard}. */
export interface OpenDashboardOptions {
  logger: Logger;
  /** Ports the default address must leave to the job (`--listen`, `--health-listen`). */
  reservedPorts?: readonly number[];
}

/** The dashboard when it is off: the reporter as it is, and hooks that do nothing. */
const OFF: RunDashboard = {
  url: undefined,
  runState: undefined,
  observe: (reporter) => reporter,
  refused: () => {},
  watchCluster: () => {},
  serveTestImages: () => {},
  failed: () => {},
  close: async () => {},
};

/**
 * Opens the dashboard of one run (`settings` undefined: off, and nothing listens), and logs its
 * URL. Rejects with INVALID_ARGUMENT when an explicit address cannot be bound.
 *
 * @example
 * ```ts
 * const dashboard = await openRunDashboard(flags.dashboard, { logger });
 * const reporter = dashboard.observe(createJsonReporter(streams));
 * try { await trainInProcess(config, reporter, logger); }
 * catch (error) { dashboard.failed(error); throw error; }
 * finally { await dashboard.close(); }
 * ```
 */
export async function openRunDashboard(
  settings: DashboardSettings | undefined,
  options: OpenDashboardOptions,
): Promise<RunDashboard> {
  if (!settings) return OFF;
  const { logger } = options;
  const runState = createRunState();
  const metrics = createCoordinatorMetrics({
    runState: () => runState.state,
    workerStates: () => runState.workers().map((w) => w.state),
  });
  const testImages = createTestImages();
  const server: DashboardServer = await startDashboardServer({
    settings,
    content: { runState, registry: metrics.registry, testImages },
    logger,
    ...(options.reservedPorts ? { reservedPorts: options.reservedPorts } : {}),
  });
  // One line, the run's first: where to look, and why it is not where it usually is.
  logger.info('dashboard listening', {
    url: server.url,
    address: server.address,
    ...(server.moved ? { wanted: server.moved.wanted, moved_because: server.moved.why } : {}),
  });
  if (isExposed(server.address)) {
    logger.warn(
      `the dashboard on ${server.address} is plain HTTP: the token, the run's numbers and its model's details travel in clear text. Reach it through an SSH tunnel or a TLS-terminating proxy on networks you do not trust`,
    );
  }
  let warned = false;
  /** Runs a dashboard update; its failure is logged once and never reaches the run. */
  const safely = (update: () => void) => {
    try {
      update();
    } catch (error) {
      if (warned) return;
      warned = true;
      logger.warn('the dashboard could not follow the run; training goes on without it', {
        reason: toShardlineError(error).message,
      });
    }
  };
  const watchers: Reporter[] = [runState.reporter, metrics.reporter];
  const each = (call: (watcher: Reporter) => void) => {
    for (const watcher of watchers) safely(() => call(watcher));
  };

  return {
    url: server.url,
    runState,
    observe(reporter) {
      return {
        ...(reporter.output ? { output: reporter.output } : {}),
        ...(reporter.close ? { close: () => reporter.close?.() } : {}),
        started(info) {
          reporter.started({ ...info, dashboard: server.url });
          each((w) => w.started(info));
        },
        workerJoined(info) {
          reporter.workerJoined(info);
          each((w) => w.workerJoined(info));
        },
        workerLeft(info) {
          reporter.workerLeft(info);
          each((w) => w.workerLeft(info));
        },
        progress(p) {
          reporter.progress(p);
          each((w) => w.progress(p));
        },
        epochEnd(m) {
          reporter.epochEnd(m);
          each((w) => w.epochEnd(m));
        },
        done(m) {
          reporter.done(m);
          each((w) => w.done(m));
        },
      };
    },
    refused: (reason) => safely(() => metrics.refused(reason)),
    watchCluster(cluster) {
      runState.watchWorkers(() => cluster.attached());
      const traffic = cluster.traffic;
      if (traffic) metrics.watchTraffic(() => traffic.call(cluster));
    },
    serveTestImages(set) {
      testImages.use(set);
    },
    failed(error) {
      runState.finish({ state: 'failed', error: toShardlineError(error).message });
    },
    async close() {
      runState.finish({ state: 'stopped' });
      await server.close();
      logger.debug('dashboard closed', { url: server.url });
    },
  };
}
