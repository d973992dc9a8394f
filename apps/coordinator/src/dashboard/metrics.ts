/**
 * The coordinator's Prometheus metrics (`/metrics` on the dashboard port), with prom-client: a
 * {@link Reporter} fed the run's events, plus hooks for what events do not carry (refusals, the
 * cluster's tensor traffic) and the workers table of the run state.
 *
 * Each run has its own registry, so runs in one process (tests, programs calling `train()`)
 * never share or collide on metrics; the process metrics (CPU, memory, event loop, GC) live in
 * one registry per process ({@link processRegistry}), since prom-client's collectors watch the
 * process and cannot be stopped, and both are exposed together.
 */
import type { EpochMetrics, StepProgress } from '@shardline/training';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { REFUSAL_REASONS, type RefusalReason } from '../distributed/refusals.js';
import type { Reporter, StartedInfo } from '../reporter.js';
import { RUN_STATES, type RunStateName, WORKER_STATES, type WorkerStateName } from './runState.js';

/**
 * Bucket bounds of the step-time histograms, in seconds: 1 ms (an MLP step on loopback) to
 * 30 s (a slow step of a large model over a WAN), about 2.5x apart.
 */
export const STEP_SECONDS_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** The traffic the cluster counts: tensor bytes sent to and received from workers, in total. */
export type TrafficProbe = () => { sent: number; received: number };

/** The coordinator's metrics; see the module comment. */
export interface CoordinatorMetrics {
  /** The run's registry (the process metrics are not in it: see {@link exposition}). */
  readonly registry: Registry;
  /** Feeds the metrics from the run's events. */
  readonly reporter: Reporter;
  /** Counts one refusal. */
  refused(reason: RefusalReason): void;
  /** Reads the cluster's tensor traffic at each scrape (distributed mode). */
  watchTraffic(probe: TrafficProbe): void;
}

/** What the metrics read from the run state at each scrape. */
export interface MetricsSources {
  /** The run's state. */
  runState(): RunStateName;
  /** The state of each worker in the table. */
  workerStates(): readonly WorkerStateName[];
}

let shared: Registry | undefined;

/**
 * The process metrics (prom-client's defaults, `process_*` and `nodejs_*`), registered once per
 * process and shared by every run's `/metrics`.
 */
export function processRegistry(): Registry {
  if (!shared) {
    shared = new Registry();
    collectDefaultMetrics({ register: shared });
  }
  return shared;
}

/** The text `/metrics` answers: the run's metrics, then the process's. */
export async function exposition(registry: Registry): Promise<string> {
  return Registry.merge([registry, processRegistry()]).metrics();
}

/** The content type of {@link exposition}: the Prometheus text format, version 0.0.4. */
export const METRICS_CONTENT_TYPE: string = Registry.PROMETHEUS_CONTENT_TYPE;

/**
 * Creates the run's metrics in a registry of their own:
 * - `shardline_steps_total` (counter), `shardline_epoch` (gauge);
 * - `shardline_images_per_second`, `shardline_train_loss`, `shardline_train_accuracy` (gauges:
 *   the current epoch's running values, as the progress bar shows them);
 * - `shardline_test_loss`, `shardline_test_accuracy` (gauges: the latest evaluation);
 * - `shardline_step_seconds`, `shardline_compute_seconds`, `shardline_exchange_seconds`,
 *   `shardline_optimizer_seconds` (histograms, one observation per step);
 * - `shardline_workers{state}` (gauge), `shardline_run_state{state}` (gauge, 1 for the current);
 * - `shardline_tensor_bytes_total{direction="in|out"}` (counter), `shardline_ring_bytes_total`
 *   (counter, ring mode: what the members sent each other);
 * - `shardline_rejected_messages_total{reason}` (counter, every reason of distributed/refusals.ts
 *   from 0);
 * - `shardline_run_info{mode,model,dataset,backend,exchange}` (gauge, 1).
 */
export function createCoordinatorMetrics(sources: MetricsSources): CoordinatorMetrics {
  const registry = new Registry();
  const registers = [registry];
  const steps = new Counter({
    name: 'shardline_steps_total',
    help: 'Optimizer steps done by this coordinator process.',
    registers,
  });
  const epoch = new Gauge({
    name: 'shardline_epoch',
    help: 'The epoch being trained (1-based; 0 before the first step).',
    registers,
  });
  const imagesPerSecond = new Gauge({
    name: 'shardline_images_per_second',
    help: "Training images per second over the current epoch's steps so far.",
    registers,
  });
  const trainLoss = new Gauge({
    name: 'shardline_train_loss',
    help: 'Mean training loss over the current epoch so far.',
    registers,
  });
  const trainAccuracy = new Gauge({
    name: 'shardline_train_accuracy',
    help: 'Training accuracy over the current epoch so far (0 to 1).',
    registers,
  });
  const testLoss = new Gauge({
    name: 'shardline_test_loss',
    help: 'Test loss at the latest evaluation (the end of an epoch).',
    registers,
  });
  const testAccuracy = new Gauge({
    name: 'shardline_test_accuracy',
    help: 'Test accuracy at the latest evaluation (0 to 1).',
    registers,
  });
  const histogram = (name: string, help: string) =>
    new Histogram({ name, help, buckets: [...STEP_SECONDS_BUCKETS], registers });
  const stepSeconds = histogram('shardline_step_seconds', 'Seconds of each whole step.');
  const computeSeconds = histogram(
    'shardline_compute_seconds',
    "Seconds of each step's slowest worker computing its share, as the workers measured them.",
  );
  const exchangeSeconds = histogram(
    'shardline_exchange_seconds',
    "Seconds of each step's exchange: star, the wait for gradients beyond the slowest compute; ring, the slowest member's all-reduce.",
  );
  const optimizerSeconds = histogram(
    'shardline_optimizer_seconds',
    "Seconds of each step's optimizer: star, averaging and applying; ring, committing.",
  );
  new Gauge({
    name: 'shardline_workers',
    help: 'Workers in the run, by state: attached (training), left (during the run), finished (stopped by its end).',
    labelNames: ['state'],
    registers,
    collect() {
      const counts = new Map<string, number>(WORKER_STATES.map((s) => [s, 0]));
      for (const s of sources.workerStates()) counts.set(s, (counts.get(s) ?? 0) + 1);
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'shardline_run_state',
    help: 'The run state: 1 for the current one, 0 for the others.',
    labelNames: ['state'],
    registers,
    collect() {
      const current = sources.runState();
      for (const state of RUN_STATES) this.set({ state }, state === current ? 1 : 0);
    },
  });
  let traffic: TrafficProbe | undefined;
  const counted = { sent: 0, received: 0 };
  const tensorBytes = new Counter({
    name: 'shardline_tensor_bytes_total',
    help: 'Tensor bytes this coordinator received from (in) and sent to (out) workers: gradients and weights in star mode, replica states in ring mode.',
    labelNames: ['direction'],
    registers,
    collect() {
      // The cluster keeps running totals; the counter takes what is new since the last scrape.
      const now = traffic?.();
      if (!now) return;
      this.inc({ direction: 'out' }, Math.max(0, now.sent - counted.sent));
      this.inc({ direction: 'in' }, Math.max(0, now.received - counted.received));
      counted.sent = Math.max(counted.sent, now.sent);
      counted.received = Math.max(counted.received, now.received);
    },
  });
  tensorBytes.inc({ direction: 'in' }, 0);
  tensorBytes.inc({ direction: 'out' }, 0);
  const ringBytes = new Counter({
    name: 'shardline_ring_bytes_total',
    help: 'Ring mode: payload bytes the members sent each other in their all-reduces, as they reported them (counted at each epoch end).',
    registers,
  });
  const rejected = new Counter({
    name: 'shardline_rejected_messages_total',
    help: 'Calls and messages the coordinator refused, by reason (see the coordinator README).',
    labelNames: ['reason'],
    registers,
  });
  // Every reason from 0, so a rate() over a reason that has not happened yet is 0, not absent.
  for (const reason of REFUSAL_REASONS) rejected.inc({ reason }, 0);
  const info = new Gauge({
    name: 'shardline_run_info',
    help: 'The run: its mode, model, dataset, backend and exchange, as labels (value 1).',
    labelNames: ['mode', 'model', 'dataset', 'backend', 'exchange'],
    registers,
  });

  const reporter: Reporter = {
    started(s: StartedInfo) {
      info.set(
        {
          mode: s.mode,
          model: s.model,
          dataset: s.dataset,
          backend: s.backend,
          exchange: typeof s.exchange === 'string' ? s.exchange : 'none',
        },
        1,
      );
    },
    workerJoined() {},
    workerLeft() {},
    progress(p: StepProgress) {
      steps.inc();
      epoch.set(p.epoch);
      imagesPerSecond.set(p.imagesPerSecond);
      trainLoss.set(p.loss);
      trainAccuracy.set(p.accuracy);
      // A trainer of its own may not time its steps (the fields are optional).
      if (p.stepSeconds !== undefined) stepSeconds.observe(p.stepSeconds);
      if (p.computeSeconds !== undefined) computeSeconds.observe(p.computeSeconds);
      if (p.exchangeSeconds !== undefined) exchangeSeconds.observe(p.exchangeSeconds);
      if (p.optimizerSeconds !== undefined) optimizerSeconds.observe(p.optimizerSeconds);
    },
    epochEnd(m: EpochMetrics) {
      testLoss.set(m.test_loss);
      testAccuracy.set(m.test_accuracy);
      trainLoss.set(m.train_loss);
      trainAccuracy.set(m.train_accuracy);
      if (m.ring_bytes !== undefined) ringBytes.inc(m.ring_bytes);
    },
    done() {},
  };

  return {
    registry,
    reporter,
    refused: (reason) => rejected.inc({ reason }),
    watchTraffic(probe) {
      traffic = probe;
    },
  };
}
