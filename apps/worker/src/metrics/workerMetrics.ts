/**
 * A worker's Prometheus metrics (`--metrics-listen`), with prom-client: what the session
 * reports through a {@link WorkerMonitor} (steps, compute time, traffic, all-reduces,
 * evaluations, the connection), plus prom-client's process metrics.
 *
 * Every worker has its own registry (not prom-client's global one), so a program running
 * several workers, or a test, never mixes their numbers. The process metrics live in one
 * registry per process ({@link processRegistry}): prom-client's collectors watch the process
 * (GC, event loop) and cannot be stopped, so they are registered once and shown by every worker.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Where a worker stands with its coordinator: `connecting` (joining, or rejoining after a
 * loss), `connected` (joined and serving its Train stream), `disconnected` (lost it; about to
 * rejoin), `stopped` (its session is over).
 */
export const CONNECTION_STATES = ['connecting', 'connected', 'disconnected', 'stopped'] as const;

/** A value of {@link CONNECTION_STATES}. */
export type ConnectionState = (typeof CONNECTION_STATES)[number];

/**
 * What a worker's session reports as it goes (session.ts calls these; all optional to it). The
 * metrics implement it; anything else may too (a test, a program embedding `runWorker`).
 */
export interface WorkerMonitor {
  /** The connection changed state; see {@link CONNECTION_STATES}. */
  connection(state: ConnectionState): void;
  /** Joined (again, when `rejoin`) as `workerId`, computing with `backend`. */
  joined(info: { workerId: string; backend: string; rejoin: boolean }): void;
  /** Computed a share of `samples` images in `computeSeconds`. */
  stepComputed(computeSeconds: number, samples: number): void;
  /** Tensor bytes received from (`in`) or sent to (`out`) the coordinator. */
  tensorBytes(direction: 'in' | 'out', bytes: number): void;
  /** Ring mode: one all-reduce, its seconds and the payload bytes sent to the right neighbour. */
  ringAllReduce(info: { seconds: number; sentBytes: number; failed: boolean }): void;
  /** Evaluated a test slice in `seconds`. */
  evaluated(seconds: number): void;
}

let shared: Registry | undefined;

/** The process metrics (prom-client's defaults), registered once per process. */
export function processRegistry(): Registry {
  if (!shared) {
    shared = new Registry();
    collectDefaultMetrics({ register: shared });
  }
  return shared;
}

/** The text `/metrics` answers: the worker's metrics, then the process's. */
export function exposition(registry: Registry): Promise<string> {
  return Registry.merge([registry, processRegistry()]).metrics();
}

/** Bucket bounds of the compute and all-reduce histograms, in seconds (1 ms to 30 s). */
export const WORKER_SECONDS_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** A worker's metrics: its registry and the monitor that feeds it. */
export interface WorkerMetrics {
  readonly registry: Registry;
  readonly monitor: WorkerMonitor;
}

/**
 * Creates a worker's metrics in a registry of its own:
 * - `shardline_worker_steps_total` (counter), `shardline_worker_compute_seconds` (histogram);
 * - `shardline_worker_tensor_bytes_total{direction="in|out"}` (counter: the coordinator link);
 * - `shardline_worker_ring_allreduce_seconds` (histogram),
 *   `shardline_worker_ring_allreduces_total{outcome="ok|failed"}` and
 *   `shardline_worker_ring_bytes_sent_total` (counters);
 * - `shardline_worker_evaluations_total` (counter);
 * - `shardline_worker_connection_state{state}` (gauge, 1 for the current state),
 *   `shardline_worker_rejoins_total` (counter);
 * - `shardline_worker_info{name,backend,worker_id}` (gauge, 1);
 * and, at each scrape ({@link exposition}), prom-client's default `process_*` and `nodejs_*`.
 *
 * @example
 * ```ts
 * const metrics = createWorkerMetrics('gpu-1');
 * await runWorker({ ...options, monitor: metrics.monitor });
 * ```
 */
export function createWorkerMetrics(name: string): WorkerMetrics {
  const registry = new Registry();
  const registers = [registry];
  const steps = new Counter({
    name: 'shardline_worker_steps_total',
    help: 'Shares of training steps this worker computed.',
    registers,
  });
  const compute = new Histogram({
    name: 'shardline_worker_compute_seconds',
    help: 'Seconds this worker spent computing each share (forward and backward pass).',
    buckets: [...WORKER_SECONDS_BUCKETS],
    registers,
  });
  const tensorBytes = new Counter({
    name: 'shardline_worker_tensor_bytes_total',
    help: 'Tensor bytes received from (in: weights, replica states) and sent to (out: gradients, replica states) the coordinator.',
    labelNames: ['direction'],
    registers,
  });
  const allReduce = new Histogram({
    name: 'shardline_worker_ring_allreduce_seconds',
    help: 'Ring mode: seconds of each successful all-reduce with the other members.',
    buckets: [...WORKER_SECONDS_BUCKETS],
    registers,
  });
  const allReduces = new Counter({
    name: 'shardline_worker_ring_allreduces_total',
    help: 'Ring mode: all-reduces this worker took part in, by outcome.',
    labelNames: ['outcome'],
    registers,
  });
  const ringBytes = new Counter({
    name: 'shardline_worker_ring_bytes_sent_total',
    help: 'Ring mode: payload bytes this worker sent its right neighbour in all-reduces.',
    registers,
  });
  const evaluations = new Counter({
    name: 'shardline_worker_evaluations_total',
    help: 'Test slices this worker evaluated.',
    registers,
  });
  const connection = new Gauge({
    name: 'shardline_worker_connection_state',
    help: 'The connection to the coordinator: 1 for the current state, 0 for the others.',
    labelNames: ['state'],
    registers,
  });
  const rejoins = new Counter({
    name: 'shardline_worker_rejoins_total',
    help: 'Times this worker joined its coordinator again after losing it.',
    registers,
  });
  const info = new Gauge({
    name: 'shardline_worker_info',
    help: 'This worker: its name, compute backend and current worker id, as labels (value 1).',
    labelNames: ['name', 'backend', 'worker_id'],
    registers,
  });
  // Label values that exist from the start, so rates over them are 0 rather than absent.
  for (const direction of ['in', 'out']) tensorBytes.inc({ direction }, 0);
  for (const outcome of ['ok', 'failed']) allReduces.inc({ outcome }, 0);
  const setConnection = (current: ConnectionState) => {
    for (const state of CONNECTION_STATES) connection.set({ state }, state === current ? 1 : 0);
  };
  setConnection('connecting');

  return {
    registry,
    monitor: {
      connection: setConnection,
      joined({ workerId, backend, rejoin }) {
        // One series: the worker id changes at each rejoin.
        info.reset();
        info.set({ name, backend, worker_id: workerId }, 1);
        if (rejoin) rejoins.inc();
      },
      stepComputed(seconds) {
        steps.inc();
        compute.observe(seconds);
      },
      tensorBytes(direction, bytes) {
        tensorBytes.inc({ direction }, bytes);
      },
      ringAllReduce({ seconds, sentBytes, failed }) {
        allReduces.inc({ outcome: failed ? 'failed' : 'ok' });
        ringBytes.inc(sentBytes);
        if (!failed) allReduce.observe(seconds);
      },
      evaluated() {
        evaluations.inc();
      },
    },
  };
}
