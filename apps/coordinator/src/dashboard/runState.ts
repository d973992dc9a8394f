/**
 * The run as the dashboard shows it, built from the run's own events: a {@link Reporter} (fed
 * beside the CLI's reporter) that keeps a snapshot (`/api/state`) and hands each change to
 * subscribers as a delta (`/api/events`).
 *
 * What it keeps: the job (the `started` event), where the run stands (state, epoch, step, ETA,
 * throughput), the workers table, a per-step train series (bounded: series.ts), the per-epoch
 * test series, and the latest confusion matrix and misclassified test images. Per-worker activity (last step, its compute time,
 * its share) comes from a probe of the cluster when the distributed mode attaches one
 * ({@link RunState.watchWorkers}); in-process runs show their one worker from the steps.
 *
 * Field names are the run record's (report/recorder.ts `stepEvent`, the `epoch_end` event), so
 * the live page and report.html read the same names.
 */
import { hostname } from 'node:os';
import type { MisclassifiedSample } from '@shardline/metrics';
import type { EpochMetrics, StepProgress } from '@shardline/training';
import { type ConfusionCell, confusionCells } from '../report/charts.js';
import { type StepEventFields, stepEvent } from '../report/recorder.js';
import type { Reporter, StartedInfo, WorkerLeftInfo } from '../reporter.js';
import { createEtaClock, type EtaClock } from '../terminal/eta.js';
import { createDownsampledSeries } from './series.js';

/** Where a run stands. `waiting`: loading data, building the model, or waiting for workers. */
export const RUN_STATES = [
  'waiting',
  'training',
  'evaluating',
  'done',
  'failed',
  'stopped',
] as const;

/** A value of {@link RUN_STATES}. */
export type RunStateName = (typeof RUN_STATES)[number];

/**
 * A worker's state in the table: `attached` (training with the job), `left` (during the run:
 * dropped, failed, gone), `finished` (stopped by the job's end).
 */
export const WORKER_STATES = ['attached', 'left', 'finished'] as const;

/** A value of {@link WORKER_STATES}. */
export type WorkerStateName = (typeof WORKER_STATES)[number];

/** One row of the workers table. */
export interface WorkerRow {
  /** The coordinator's id for it (`in-process` for the in-process run's worker). */
  id: string;
  name: string;
  state: WorkerStateName;
  hostname?: string;
  pid?: number;
  /** The address its stream came from (distributed mode), such as `ipv4:10.0.0.2:51234`. */
  peer?: string;
  /** Its peer endpoint in ring mode, what the other members dial. */
  peer_address?: string;
  backend?: string;
  /** Its last share as a fraction of the global batch, and in images. */
  share?: number;
  share_samples?: number;
  /** The last step whose result arrived from it. */
  last_step?: number;
  /** Seconds its last share took to compute, as it measured them. */
  last_step_seconds?: number;
  /** When it last sent anything (ISO 8601). */
  last_seen?: string;
  joined_at: string;
  left_at?: string;
  /** Why it left. */
  reason?: string;
}

/** What the cluster knows of an attached worker's activity (distributed/cluster.ts). */
export interface WorkerActivity {
  id: string;
  /** The last step whose result arrived (-1: none yet), and when it last sent anything. */
  lastStep: number;
  lastSeenMs: number;
  /** Its last share: images and compute seconds. */
  lastShare?: { samples: number; computeSeconds: number } | undefined;
  peerAddress?: string;
}

/** Reads the attached workers' activity; called at most once a second, and for each snapshot. */
export type WorkerProbe = () => readonly WorkerActivity[];

/** One point of the train series: a step (the run record's `step` event) and when it ended. */
export type TrainPoint = StepEventFields & {
  /** Unix time, milliseconds. */
  time: number;
};

/**
 * One point of the test series: an epoch's metrics (`epoch_end`) without the matrix and the
 * misclassified images, which only the latest epoch's are kept of.
 */
export type TestPoint = Omit<EpochMetrics, 'confusion' | 'misclassified'> & { time: number };

/**
 * The latest confusion matrix: `matrix[t][p]` counts test images of class `t` predicted `p`.
 * `cells` are the same counts as the heat map's rows (report/charts.ts `confusionCells`), so the
 * page draws them as they come and report.html and the page shape them with one function.
 */
export interface ConfusionSnapshot {
  epoch: number;
  class_names: string[];
  matrix: number[][];
  cells: ConfusionCell[];
}

/**
 * The latest evaluation's misclassified test images (the `epoch_end` event's `misclassified`):
 * up to 32, the lowest test-set indices first. `label` (the true class) and `predicted` index
 * `class_names`; `/api/test-images/<index>.png` is the image.
 */
export interface MisclassifiedSnapshot {
  epoch: number;
  samples: MisclassifiedSample[];
}

/** Estimates of time left, in seconds (terminal/eta.ts, as the progress bar shows them). */
export interface EtaSnapshot {
  epoch_seconds?: number;
  run_seconds?: number;
}

/** `/api/state`: the whole run as of now. */
export interface RunSnapshot {
  state: RunStateName;
  /** Why the run failed (`failed`). */
  error?: string;
  /**
   * The `started` event's fields (mode, model, dataset, epochs, batch size...) but the class
   * names, which have their own field; absent before `started`.
   */
  job?: StartedInfo;
  class_names: string[];
  epoch: number;
  epochs: number;
  step: number;
  step_in_epoch: number;
  steps_per_epoch: number;
  eta: EtaSnapshot;
  /** The current epoch's images per second so far. */
  images_per_second?: number;
  started_at: string;
  updated_at: string;
  workers: WorkerRow[];
  /** Per step; `stride` raw steps behind each point once the series was downsampled. */
  train: { stride: number; total: number; points: TrainPoint[] };
  /** Per epoch. */
  test: TestPoint[];
  confusion?: ConfusionSnapshot;
  misclassified?: MisclassifiedSnapshot;
  /** The `done` event's fields (model_path, summary_path...), once done. */
  result?: Record<string, unknown>;
}

/** A change, as `/api/events` pushes it: the SSE event name and its JSON data. */
export type RunDelta =
  | { event: 'step'; data: TrainPoint & { epoch_images_per_second: number; eta: EtaSnapshot } }
  | {
      event: 'epoch_end';
      data: TestPoint & { confusion?: ConfusionSnapshot; misclassified?: MisclassifiedSnapshot };
    }
  | { event: 'worker'; data: WorkerRow }
  | { event: 'state'; data: { state: RunStateName; epoch: number; step: number; error?: string } };

/** The run's model; see the module comment. */
export interface RunState {
  /** Feed it the run's events (compose it with the CLI's reporter). */
  readonly reporter: Reporter;
  snapshot(): RunSnapshot;
  /** The workers table alone (cheaper than a snapshot, which copies the series). */
  workers(): WorkerRow[];
  /** Calls `listener` with every change from now on; returns the unsubscribe function. */
  subscribe(listener: (delta: RunDelta) => void): () => void;
  /** Reads per-worker activity from `probe` (distributed mode). */
  watchWorkers(probe: WorkerProbe): void;
  /** Ends the run as `failed` (with why) or `stopped`; nothing once it is `done`. */
  finish(outcome: { state: 'failed'; error: string } | { state: 'stopped' }): void;
  readonly state: RunStateName;
}

/** Options of {@link createRunState}. */
export interface RunStateOptions {
  /** Most points of the train series (default 10,000). */
  maxTrainPoints?: number;
  /** Departed workers kept in the table (default 256); the oldest go first. */
  maxDepartedWorkers?: number;
  /** Milliseconds between two refreshes of the workers' activity (default 1,000). */
  workerRefreshMs?: number;
  /** The clock, in milliseconds (tests pass a fake one). */
  now?: () => number;
}

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Creates the run's model.
 *
 * @example
 * ```ts
 * const run = createRunState();
 * const reporter = composeReporters(cliReporter, run.reporter);
 * run.subscribe((delta) => console.log(delta.event));
 * ```
 */
export function createRunState(options: RunStateOptions = {}): RunState {
  const now = options.now ?? Date.now;
  const maxDeparted = options.maxDepartedWorkers ?? 256;
  const refreshMs = options.workerRefreshMs ?? 1000;
  const listeners = new Set<(delta: RunDelta) => void>();
  const train = createDownsampledSeries<TrainPoint>({
    max: options.maxTrainPoints ?? 10_000,
    last: ['step', 'epoch', 'step_in_epoch', 'steps_per_epoch', 'time'],
  });
  const test: TestPoint[] = [];
  const workers = new Map<string, WorkerRow>();
  const startedAt = now();
  let updatedAt = startedAt;
  let state: RunStateName = 'waiting';
  let error: string | undefined;
  let job: StartedInfo | undefined;
  let classNames: string[] = [];
  let position = { epoch: 0, epochs: 0, step: 0, stepInEpoch: 0, stepsPerEpoch: 0 };
  let eta: EtaSnapshot = {};
  let imagesPerSecond: number | undefined;
  let confusion: ConfusionSnapshot | undefined;
  let misclassified: MisclassifiedSnapshot | undefined;
  let result: Record<string, unknown> | undefined;
  let clock: EtaClock = createEtaClock();
  let probe: WorkerProbe | undefined;
  let lastRefresh = Number.NEGATIVE_INFINITY;

  const emit = (delta: RunDelta) => {
    updatedAt = now();
    for (const listener of listeners) listener(delta);
  };
  const setState = (next: RunStateName) => {
    if (next === state) return;
    state = next;
    emit({
      event: 'state',
      data: {
        state,
        epoch: position.epoch,
        step: position.step,
        ...(error === undefined ? {} : { error }),
      },
    });
  };
  const forgetDeparted = () => {
    const departed = [...workers.values()].filter((w) => w.state !== 'attached');
    for (const w of departed.slice(0, Math.max(0, departed.length - maxDeparted))) {
      workers.delete(w.id);
    }
  };
  /** Applies the probe's activity to the rows; emits a `worker` delta for each row it changed. */
  const refreshWorkers = (emitChanges: boolean) => {
    if (!probe) return;
    for (const a of probe()) {
      const row = workers.get(a.id);
      if (row?.state !== 'attached') continue;
      const next: WorkerRow = {
        ...row,
        ...(a.lastStep >= 0 ? { last_step: a.lastStep } : {}),
        last_seen: iso(a.lastSeenMs),
        ...(a.peerAddress ? { peer_address: a.peerAddress } : {}),
        ...(a.lastShare ? shareFields(a.lastShare, job?.batch_size) : {}),
      };
      if (JSON.stringify(next) === JSON.stringify(row)) continue;
      workers.set(a.id, next);
      if (emitChanges) emit({ event: 'worker', data: next });
    }
  };
  const updateRow = (id: string, change: Partial<WorkerRow>) => {
    const row = workers.get(id);
    if (!row) return;
    const next = { ...row, ...change };
    workers.set(id, next);
    emit({ event: 'worker', data: next });
  };

  const reporter: Reporter = {
    started(info) {
      const { class_names, ...rest } = info;
      job = rest as StartedInfo;
      classNames = Array.isArray(class_names) ? class_names.map(String) : [];
      position = { ...position, epochs: info.epochs, stepsPerEpoch: info.steps_per_epoch };
      clock = createEtaClock({
        trainSamples: info.train_samples,
        testSamples: info.test_samples,
        batchSize: info.batch_size,
      });
      if (info.mode === 'in-process') {
        // One worker, this process: shown so the table reads the same in both modes.
        const row: WorkerRow = {
          id: 'in-process',
          name: 'in-process',
          state: 'attached',
          hostname: hostname(),
          pid: process.pid,
          backend: info.backend,
          share: 1,
          joined_at: iso(now()),
        };
        workers.set(row.id, row);
        emit({ event: 'worker', data: row });
      }
      // Subscribers that connected before `started` learn the job from a fresh state event.
      emit({ event: 'state', data: { state, epoch: 0, step: 0 } });
    },
    workerJoined(info) {
      const id = typeof info.worker_id === 'string' ? info.worker_id : info.worker;
      const row: WorkerRow = {
        id,
        name: info.worker,
        state: 'attached',
        ...optionalString('hostname', info.hostname),
        ...(typeof info.pid === 'number' ? { pid: info.pid } : {}),
        ...optionalString('peer', info.peer),
        ...optionalString('backend', info.backend),
        joined_at: iso(now()),
      };
      workers.set(id, row);
      forgetDeparted();
      emit({ event: 'worker', data: row });
    },
    workerLeft(info: WorkerLeftInfo) {
      const id = typeof info.worker_id === 'string' ? info.worker_id : info.worker;
      updateRow(id, {
        state: info.job_ended === true ? 'finished' : 'left',
        left_at: iso(now()),
        reason: info.reason,
      });
      forgetDeparted();
    },
    progress(p: StepProgress) {
      const t = now();
      const point: TrainPoint = { ...stepEvent(p), time: t };
      train.push(point);
      position = {
        epoch: p.epoch,
        epochs: p.epochs,
        step: point.step,
        stepInEpoch: p.stepInEpoch,
        stepsPerEpoch: p.stepsPerEpoch,
      };
      imagesPerSecond = p.imagesPerSecond;
      const e = clock.step(p, t);
      eta = {
        ...(e.epoch === undefined ? {} : { epoch_seconds: e.epoch }),
        ...(e.run === undefined ? {} : { run_seconds: e.run }),
      };
      setState(p.stepInEpoch >= p.stepsPerEpoch ? 'evaluating' : 'training');
      emit({
        event: 'step',
        data: { ...point, epoch_images_per_second: p.imagesPerSecond, eta },
      });
      if (t - lastRefresh >= refreshMs) {
        lastRefresh = t;
        const self = workers.get('in-process');
        if (self?.state === 'attached') {
          updateRow(self.id, {
            last_step: point.step,
            last_seen: iso(t),
            ...(p.computeSeconds === undefined ? {} : { last_step_seconds: p.computeSeconds }),
            ...(p.samples === undefined ? {} : { share_samples: p.samples }),
          });
        }
        refreshWorkers(true);
      }
    },
    epochEnd(m: EpochMetrics) {
      const t = now();
      clock.epochEnded(t);
      const { confusion: matrix, misclassified: wrong, ...metrics } = m;
      const point: TestPoint = { ...metrics, time: t };
      test.push(point);
      if (matrix) {
        confusion = {
          epoch: m.epoch,
          class_names: classNames,
          matrix,
          cells: confusionCells(matrix, classNames),
        };
      }
      if (wrong) misclassified = { epoch: m.epoch, samples: wrong };
      emit({
        event: 'epoch_end',
        data: {
          ...point,
          ...(confusion ? { confusion } : {}),
          ...(misclassified ? { misclassified } : {}),
        },
      });
      refreshWorkers(true);
      if (m.epoch < position.epochs) setState('training');
    },
    done(m) {
      const { confusion: _matrix, misclassified: _wrong, ...fields } = m;
      result = fields;
      eta = { epoch_seconds: 0, run_seconds: 0 };
      const self = workers.get('in-process');
      if (self?.state === 'attached') {
        updateRow(self.id, { state: 'finished', left_at: iso(now()), reason: 'the job ended' });
      }
      setState('done');
    },
  };

  return {
    reporter,
    get state() {
      return state;
    },
    snapshot() {
      refreshWorkers(false);
      return {
        state,
        ...(error === undefined ? {} : { error }),
        ...(job ? { job } : {}),
        class_names: classNames,
        epoch: position.epoch,
        epochs: position.epochs,
        step: position.step,
        step_in_epoch: position.stepInEpoch,
        steps_per_epoch: position.stepsPerEpoch,
        eta,
        ...(imagesPerSecond === undefined ? {} : { images_per_second: imagesPerSecond }),
        started_at: iso(startedAt),
        updated_at: iso(updatedAt),
        workers: [...workers.values()],
        train: { stride: train.stride, total: train.total, points: train.points() },
        test: [...test],
        ...(confusion ? { confusion } : {}),
        ...(misclassified ? { misclassified } : {}),
        ...(result ? { result } : {}),
      };
    },
    workers() {
      refreshWorkers(false);
      return [...workers.values()];
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    watchWorkers(next) {
      probe = next;
    },
    finish(outcome) {
      if (state === 'done' || state === 'failed' || state === 'stopped') return;
      if (outcome.state === 'failed') error = outcome.error;
      setState(outcome.state);
    },
  };
}

/** `{ [key]: value }` when `value` is a non-empty string, else nothing. */
function optionalString<K extends string>(key: K, value: unknown): { [P in K]?: string } {
  return (typeof value === 'string' && value !== '' ? { [key]: value } : {}) as {
    [P in K]?: string;
  };
}

/** A worker's last share as table fields. */
function shareFields(
  share: { samples: number; computeSeconds: number },
  batchSize: number | undefined,
): Partial<WorkerRow> {
  return {
    share_samples: share.samples,
    last_step_seconds: share.computeSeconds,
    ...(batchSize ? { share: share.samples / batchSize } : {}),
  };
}
