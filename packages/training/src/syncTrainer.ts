/**
 * Synchronous data-parallel SGD, the default training algorithm (design.md, "One training
 * step"). The coordinator owns the master weights and the optimizer; for each step every member
 * computes the gradient of its share of the global batch, the coordinator averages them weighted
 * by sample count (so the result equals the gradient of the whole global batch), applies the
 * optimizer and bumps the weights version. At each epoch's end the test set is split among the
 * members and their metrics are merged.
 *
 * Faults: a member that fails or misses the step deadline is dropped and the step is retried
 * with the others. Shares derive from (seed, epoch, step, rank, world size), so the retried step
 * re-shards the same global batch and the epoch still covers every sample exactly once.
 *
 * Checkpoints: the trainer's whole state (weights, optimizer, position, history) is handed to
 * `onCheckpoint` every `checkpointEvery` steps and at each epoch's end; `resume` continues from
 * such a state and, with the same seed and membership, reproduces the uninterrupted run.
 *
 * Ring mode (`exchange: 'ring'`) replaces the gather-average-apply of each step with the members'
 * own all-reduce and a commit; the rest of this file (epochs, progress, checkpoints, metrics) is
 * shared. See ringSteps.ts.
 */
import {
  createOptimizer,
  createSchedule,
  type Logger,
  type Optimizer,
  type OptimizerKind,
  type OptimizerState,
  type ParamLayout,
  type ScheduleKind,
  ShardlineError,
} from '@shardline/core';
import { shareSize, stepsPerEpoch } from '@shardline/datasets';
import { type ClassificationReport, createClassificationAccumulator } from '@shardline/metrics';
import { averageGradients } from './averageGradients.js';
import {
  evaluationTopK,
  type Membership,
  MISCLASSIFIED_KEPT,
  type ShareAssignment,
  type ShareResult,
  type TrainingWorker,
  type WeightsSnapshot,
} from './contract.js';
import type { EpochMetrics, TrainingEvents } from './events.js';
import {
  createRingState,
  ensureTrainerState,
  evaluateRing,
  type RingRunState,
  ringStep,
} from './ringSteps.js';
import { evaluationSlice, settle, startDeadline } from './rounds.js';

/** The hyperparameters the trainer reads (a job's full config may carry more). */
export interface TrainerConfig {
  epochs: number;
  /** Global batch: the number of images behind one optimizer step, over all workers. */
  batchSize: number;
  learningRate: number;
  optimizer: OptimizerKind;
  momentum: number;
  weightDecay: number;
  schedule: ScheduleKind;
  warmupEpochs: number;
}

/** Running training sums of the epoch in progress. */
export interface RunningSums {
  lossSum: number;
  correct: number;
  seen: number;
}

/** Everything needed to continue a run exactly where it was. */
export interface TrainerCheckpoint {
  /** 0-based epoch in progress, and the next step to run within it. */
  epoch: number;
  stepInEpoch: number;
  /** Optimizer steps done so far (also the weights version). */
  step: number;
  params: Float32Array;
  optimizer: OptimizerState;
  /** Finished epochs' metrics. */
  history: EpochMetrics[];
  /** The epoch in progress's running training sums, so its epoch_end reports the whole epoch. */
  running: RunningSums;
}

/** Inputs of {@link runSynchronousTraining}. */
export interface SyncTrainingOptions {
  config: TrainerConfig;
  layout: ParamLayout;
  /** Initial master weights; updated in place. Ignored when resuming. */
  params: Float32Array;
  trainCount: number;
  testCount: number;
  classNames: readonly string[];
  /**
   * The test set's labels, when this process has them: each evaluation slice then says how many
   * images of each class it holds, so a worker's confusion matrix can be checked row by row.
   */
  testLabels?: Uint8Array;
  membership: Membership;
  reporter: TrainingEvents;
  logger: Logger;
  signal?: AbortSignal;
  /** Continue from this state instead of from scratch. */
  resume?: TrainerCheckpoint;
  /** Checkpoint every N steps (0: only at epoch ends). Needs `onCheckpoint`. */
  checkpointEvery?: number;
  onCheckpoint?: (checkpoint: TrainerCheckpoint) => Promise<void>;
  /** A member that has not returned its share this long after the step began is dropped. */
  workerTimeoutMs?: number;
  /** Checked between steps: true stops the run after a final checkpoint (a graceful SIGINT). */
  shouldStop?: () => boolean;
  /**
   * Aborted together with `shouldStop` turning true, so that a wait for workers (which may
   * never come) ends too: the step in flight is then abandoned and the run stops at its start.
   */
  stopSignal?: AbortSignal;
  /**
   * How gradients are exchanged (default `star`). `star`: members send their gradients here,
   * this process averages them and applies the optimizer to the master weights. `ring`: every
   * member must be a `RingTrainingWorker`; members all-reduce among themselves and each
   * applies the step to its own replica when the trainer commits it (all members or none). The
   * trainer's copy of the weights and optimizer (`params`, the result) is then brought up to date
   * from a replica only when it is needed: for checkpoints, for a joiner, and at the end.
   */
  exchange?: 'star' | 'ring';
}

/** The result of a run that finished or stopped. */
export interface SyncTrainingResult {
  /** False when `shouldStop` ended the run early. */
  completed: boolean;
  history: EpochMetrics[];
  /** The last epoch's evaluation; absent when the run stopped before any epoch ended. */
  evaluation?: ClassificationReport;
  weights: WeightsSnapshot;
  optimizer: Optimizer;
}

/** Per-step timing, summed over an epoch, so logs can tell computing from exchanging. */
interface StepTimes {
  /** Whole steps, from handing out shares to the updated weights. */
  wall: number;
  /** From handing out shares until the last gradient (star) or report (ring) arrived. */
  gather: number;
  /** The slowest worker's own compute time, per step. */
  compute: number;
  /** Ring only: the slowest member's all-reduce time, per step. */
  exchange: number;
  /** Averaging and the optimizer update (star); sending the commits (ring). */
  optimizer: number;
}

/** What one applied step tells its epoch's loop. Internal (ringSteps.ts returns it too). */
export interface StepDone {
  /** Samples behind the step, over every member. */
  samples: number;
  /** Members that took part. */
  members: number;
  /** Seconds from handing out the work until every member answered. */
  gather: number;
  /** The slowest member's own compute seconds. */
  compute: number;
  /** Ring only: the slowest member's all-reduce seconds. */
  exchange?: number;
  /** Seconds spent averaging and applying (star) or committing (ring). */
  optimizer: number;
}

/** The state of one run, shared by the functions below and ringSteps.ts. Internal. */
export interface Run {
  readonly options: SyncTrainingOptions;
  readonly params: Float32Array;
  readonly optimizer: Optimizer;
  readonly learningRate: (step: number) => number;
  /** The averaged gradient of every step, in one buffer (see averageGradients). */
  readonly averaged: Float32Array;
  readonly steps: number;
  readonly weights: WeightsSnapshot;
  readonly history: EpochMetrics[];
  /** Ends waits for members on a hard abort and on a graceful stop. */
  readonly waitSignal: AbortSignal | undefined;
  /** Optimizer steps done so far. */
  step: number;
  evaluation?: ClassificationReport;
  /** Ring mode's state; absent in star mode. */
  readonly ring: RingRunState | undefined;
}

/** Where an epoch's loop ended: at its last step, or at a graceful stop before `stepInEpoch`. */
type EpochOutcome = { stopped: false } | { stopped: true; stepInEpoch: number };

/** Runs the whole job: every epoch, every step, evaluation at each epoch's end. */
export async function runSynchronousTraining(
  options: SyncTrainingOptions,
): Promise<SyncTrainingResult> {
  const run = startRun(options);
  const { resume } = options;
  for (let epoch = resume?.epoch ?? 0; epoch < options.config.epochs; epoch++) {
    const resuming = resume !== undefined && epoch === resume.epoch;
    const running = resuming ? { ...resume.running } : { lossSum: 0, correct: 0, seen: 0 };
    const firstStep = resuming ? resume.stepInEpoch : 0;
    const outcome = await runEpoch(run, epoch, firstStep, running);
    if (outcome.stopped) {
      await checkpoint(run, epoch, outcome.stepInEpoch, running);
      return await result(run, false);
    }
    await checkpoint(run, epoch + 1, 0, { lossSum: 0, correct: 0, seen: 0 });
  }
  if (!run.evaluation) {
    throw new ShardlineError('INVALID_ARGUMENT', 'Expected at least one epoch to run, found none.');
  }
  return await result(run, true);
}

function startRun(options: SyncTrainingOptions): Run {
  const { config, layout, resume, signal, stopSignal } = options;
  const exchange = options.exchange ?? 'star';
  if (exchange !== 'star' && exchange !== 'ring') {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Expected exchange 'star' or 'ring', found ${JSON.stringify(exchange)}.`,
    );
  }
  const optimizer = createOptimizer({
    kind: config.optimizer,
    size: layout.size,
    momentum: config.momentum,
    weightDecay: config.weightDecay,
  });
  if (resume) optimizer.setState(resume.optimizer);
  const steps = stepsPerEpoch(options.trainCount, config.batchSize);
  const params = resume?.params ?? options.params;
  return {
    options,
    params,
    optimizer,
    learningRate: createSchedule({
      kind: config.schedule,
      baseLr: config.learningRate,
      totalSteps: steps * config.epochs,
      warmupSteps: Math.round(config.warmupEpochs * steps),
    }),
    averaged: new Float32Array(layout.size),
    steps,
    // Version v is the result of v optimizer steps, so a resumed run's versions continue too.
    weights: { version: resume?.step ?? 0, params },
    history: [...(resume?.history ?? [])],
    waitSignal:
      signal && stopSignal ? AbortSignal.any([signal, stopSignal]) : (signal ?? stopSignal),
    step: resume?.step ?? 0,
    // The initial weights (or the checkpoint's) are the state of the first step.
    ring: exchange === 'ring' ? createRingState(resume?.step ?? 0) : undefined,
  };
}

async function result(run: Run, completed: boolean): Promise<SyncTrainingResult> {
  // Ring mode: the trainer's copy is only as recent as its last pull; the result must be exact.
  if (run.ring) await ensureTrainerState(run, 'the final weights');
  const { history, evaluation, weights, optimizer } = run;
  return { completed, history, ...(evaluation ? { evaluation } : {}), weights, optimizer };
}

async function checkpoint(run: Run, epoch: number, stepInEpoch: number, running: RunningSums) {
  const { onCheckpoint } = run.options;
  if (!onCheckpoint) return;
  if (run.ring) await ensureTrainerState(run, `the checkpoint of step ${run.step}`);
  await onCheckpoint({
    epoch,
    stepInEpoch,
    step: run.step,
    params: run.params,
    optimizer: run.optimizer.getState(),
    history: [...run.history],
    running: { ...running },
  });
}

/** Runs the steps of one epoch from `firstStep`, then evaluates and reports the epoch. */
async function runEpoch(
  run: Run,
  epoch: number,
  firstStep: number,
  running: RunningSums,
): Promise<EpochOutcome> {
  const { options } = run;
  const { membership, signal } = options;
  const checkpointEvery = options.checkpointEvery ?? 0;
  const times: StepTimes = { wall: 0, gather: 0, compute: 0, exchange: 0, optimizer: 0 };
  const trafficBefore = membership.traffic?.();
  const ringBytesBefore = run.ring?.ringBytes ?? 0;
  // Samples trained in this process this epoch: the throughput's numerator after a resume.
  let seenHere = 0;
  let workersSeen = 0;
  for (let s = firstStep; s < run.steps; s++) {
    if (signal?.aborted) {
      throw new ShardlineError('CANCELLED', 'Training was interrupted before it finished.');
    }
    if (options.shouldStop?.()) return { stopped: true, stepInEpoch: s };
    const t0 = performance.now();
    // The step's own loss and accuracy are what it adds to the epoch's sums.
    const before = { ...running };
    const done = run.ring
      ? await ringStep(run, epoch, s, running)
      : await starStep(run, epoch, s, running);
    if (!done) return { stopped: true, stepInEpoch: s };
    const wall = (performance.now() - t0) / 1000;
    workersSeen = Math.max(workersSeen, done.members);
    times.wall += wall;
    times.gather += done.gather;
    times.compute += done.compute;
    times.exchange += done.exchange ?? 0;
    times.optimizer += done.optimizer;
    seenHere += done.samples;
    const stepSeen = Math.max(running.seen - before.seen, 1);
    options.reporter.progress({
      epoch: epoch + 1,
      epochs: options.config.epochs,
      stepInEpoch: s + 1,
      stepsPerEpoch: run.steps,
      loss: running.lossSum / running.seen,
      accuracy: running.correct / running.seen,
      imagesPerSecond: seenHere / Math.max(times.wall, 1e-9),
      step: run.step,
      stepLoss: (running.lossSum - before.lossSum) / stepSeen,
      stepAccuracy: (running.correct - before.correct) / stepSeen,
      samples: done.samples,
      workers: done.members,
      stepSeconds: wall,
      computeSeconds: done.compute,
      // As the epoch's mean below splits it.
      exchangeSeconds: done.exchange ?? Math.max(0, done.gather - done.compute),
      optimizerSeconds: done.optimizer,
    });
    if (checkpointEvery > 0 && run.step % checkpointEvery === 0 && s + 1 < run.steps) {
      await checkpoint(run, epoch, s + 1, running);
    }
    // Let signal handlers, timers and I/O run between steps.
    await new Promise((r) => setImmediate(r));
  }
  // Step traffic only: evaluation's weight transfer is not part of a step.
  const trafficAfter = membership.traffic?.();
  const ringBytes = (run.ring?.ringBytes ?? 0) - ringBytesBefore;
  const { evaluation, replicaChecksum } = run.ring
    ? await evaluateRing(run)
    : { evaluation: await evaluateAll(options, run.weights), replicaChecksum: undefined };
  run.evaluation = evaluation;
  const stepsRun = Math.max(1, run.steps - firstStep);
  const metrics: EpochMetrics = {
    epoch: epoch + 1,
    train_loss: running.lossSum / running.seen,
    train_accuracy: running.correct / running.seen,
    test_loss: evaluation.loss,
    test_accuracy: evaluation.accuracy,
    images_per_second: seenHere / Math.max(times.wall, 1e-9),
    workers: workersSeen,
    step: run.step,
    // Per-step means: where a step's time goes. Star: exchange is the wait for gradients beyond
    // the slowest worker's own compute time (transfers, encoding, queueing). Ring: the slowest
    // member's all-reduce, as the members measured it.
    step_seconds: times.wall / stepsRun,
    compute_seconds: times.compute / stepsRun,
    exchange_seconds:
      (run.ring ? times.exchange : Math.max(0, times.gather - times.compute)) / stepsRun,
    optimizer_seconds: times.optimizer / stepsRun,
    ...epochTraffic(trafficBefore, trafficAfter, run.ring ? ringBytes : undefined),
    ...(replicaChecksum === undefined ? {} : { replica_checksum: replicaChecksum }),
    confusion: evaluation.confusionMatrix,
    misclassified: evaluation.misclassified ?? [],
  };
  run.history.push(metrics);
  options.reporter.epochEnd(metrics);
  return { stopped: false };
}

/**
 * The epoch's `bytes_sent` / `bytes_received` (the membership's traffic: tensors to and from
 * this process) and, in ring mode, `ring_bytes` (what the members sent each other).
 */
function epochTraffic(
  before: { sent: number; received: number } | undefined,
  after: { sent: number; received: number } | undefined,
  ringBytes: number | undefined,
): Pick<EpochMetrics, 'bytes_sent' | 'bytes_received' | 'ring_bytes'> {
  return {
    ...(before && after
      ? { bytes_sent: after.sent - before.sent, bytes_received: after.received - before.received }
      : {}),
    ...(ringBytes === undefined ? {} : { ring_bytes: ringBytes }),
  };
}

/** One star-mode step: gathers every member's share, averages them and applies the optimizer. */
async function starStep(
  run: Run,
  epoch: number,
  stepInEpoch: number,
  running: RunningSums,
): Promise<StepDone | undefined> {
  const t0 = performance.now();
  const gathered = await gatherShares(run, epoch, stepInEpoch);
  if (!gathered) return undefined;
  const t1 = performance.now();
  const samples = applyStep(run, epoch, gathered.results, running);
  return {
    samples,
    members: gathered.members,
    gather: (t1 - t0) / 1000,
    compute: Math.max(...gathered.results.map((r) => r.computeSeconds)),
    optimizer: (performance.now() - t1) / 1000,
  };
}

/**
 * Collects every member's share of one step, dropping members that fail and retrying with the
 * rest until a whole group answered. Undefined when a graceful stop came first.
 */
async function gatherShares(
  run: Run,
  epoch: number,
  stepInEpoch: number,
): Promise<{ results: ShareResult[]; members: number } | undefined> {
  const { options } = run;
  for (;;) {
    let members: readonly TrainingWorker[];
    try {
      members = await options.membership.members(run.waitSignal);
    } catch (error) {
      if (!options.stopSignal?.aborted || options.signal?.aborted) throw error;
      return undefined;
    }
    const assignment = { epoch, step: run.step, stepInEpoch, worldSize: members.length };
    const settled = await computeShares(run, members, assignment);
    const results = settle(settled, members, options, `step ${run.step}`);
    if (results) return { results, members: members.length };
    // Stopping anyway: abandon a failed step rather than retry it.
    if (options.shouldStop?.()) return undefined;
    // Let timers, signals and stream events run before the retry (a drop may still be landing).
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * Asks every member for its share, all under one deadline: `--worker-timeout` after the step
 * began. A member still computing then is failed with a TIMEOUT that names it.
 */
function computeShares(
  run: Run,
  members: readonly TrainingWorker[],
  assignment: Omit<ShareAssignment, 'rank' | 'samples'>,
): Promise<PromiseSettledResult<ShareResult>[]> {
  const { signal, trainCount, config } = run.options;
  const deadline = startDeadline(run.options.workerTimeoutMs ?? 0, signal);
  return Promise.allSettled(
    members.map((worker, rank) => {
      const share = {
        ...assignment,
        rank,
        samples: shareSize(
          trainCount,
          config.batchSize,
          assignment.stepInEpoch,
          rank,
          assignment.worldSize,
        ),
      };
      return deadline.call(worker, `return its share of step ${assignment.step}`, (stepSignal) =>
        worker.computeShare(share, run.weights, stepSignal),
      );
    }),
  );
}

/** Averages a step's shares, applies the optimizer and adds to the epoch's sums; returns the samples. */
function applyStep(
  run: Run,
  epoch: number,
  results: readonly ShareResult[],
  running: RunningSums,
): number {
  const { config } = run.options;
  const { gradient, samples } = averageGradients(results, run.options.layout.size, run.averaged);
  let stepLoss = 0;
  for (const r of results) {
    stepLoss += r.loss * r.sampleCount;
    running.correct += r.correct;
  }
  if (!Number.isFinite(stepLoss)) {
    throw new ShardlineError(
      'NUMERIC',
      `The loss became ${stepLoss} at epoch ${epoch + 1}, step ${run.step}: training diverged. Lower --learning-rate (now ${config.learningRate}) and run again.`,
    );
  }
  run.optimizer.apply(run.params, gradient, run.learningRate(run.step));
  run.weights.version++;
  run.step++;
  running.lossSum += stepLoss;
  running.seen += samples;
  return samples;
}

/** Splits the test set into contiguous slices, one per member, and merges their metrics. */
async function evaluateAll(
  options: SyncTrainingOptions,
  weights: WeightsSnapshot,
): Promise<ClassificationReport> {
  const total = options.testCount;
  for (;;) {
    const members = await options.membership.members(options.signal);
    const accumulator = createClassificationAccumulator({
      numClasses: options.classNames.length,
      classNames: options.classNames,
      topK: evaluationTopK(options.classNames.length),
      keepMisclassified: MISCLASSIFIED_KEPT,
    });
    const settled = await Promise.allSettled(
      members.map(async (worker, rank) =>
        worker.evaluate(
          evaluationSlice(
            total,
            rank,
            members.length,
            options.testLabels,
            options.classNames.length,
          ),
          weights,
          options.signal,
        ),
      ),
    );
    const states = settle(settled, members, options, 'evaluation');
    if (states) {
      for (const state of states) accumulator.merge(state);
      return accumulator.result();
    }
  }
}
