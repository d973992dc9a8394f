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
 */
import {
  createOptimizer,
  createSchedule,
  type Logger,
  type Optimizer,
  type OptimizerState,
  type ParamLayout,
  ShardlineError,
} from '@shardline/core';
import { stepsPerEpoch } from '@shardline/datasets';
import { type ClassificationReport, createClassificationAccumulator } from '@shardline/metrics';
import type { ShareResult, TrainingWorker, WeightsSnapshot } from '@shardline/worker';
import type { EpochMetrics, Reporter } from '../reporter.js';
import type { TrainConfig } from '../trainConfig.js';

/** Where the trainer gets its members from for each step. */
export interface Membership {
  /** The workers taking part in the next step, in rank order; waits while there are too few. */
  members(signal?: AbortSignal): Promise<readonly TrainingWorker[]>;
  /** Bytes of tensors sent to and received from workers so far (absent in-process). */
  traffic?(): { sent: number; received: number };
  /**
   * Removes a member that failed or missed its deadline: it gets no more work. Absent when
   * members cannot be replaced (in-process): then a failure fails the job.
   */
  drop?(worker: TrainingWorker, reason: string): void;
}

/** A membership that never changes: the in-process worker, or a fixed test group. */
export function fixedMembership(workers: readonly TrainingWorker[]): Membership {
  return { members: async () => workers };
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
  running: { lossSum: number; correct: number; seen: number };
}

/** Inputs of {@link runSynchronousTraining}. */
export interface SyncTrainingOptions {
  config: TrainConfig;
  layout: ParamLayout;
  /** Initial master weights; updated in place. Ignored when resuming. */
  params: Float32Array;
  trainCount: number;
  testCount: number;
  classNames: readonly string[];
  membership: Membership;
  reporter: Reporter;
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
  /** From handing out shares until the last gradient arrived. */
  gather: number;
  /** The slowest worker's own compute time, per step. */
  compute: number;
  /** Averaging and the optimizer update. */
  optimizer: number;
}

/**
 * Weighted average of the members' gradients: sum(n_i * g_i) / sum(n_i), written into `out`
 * (fresh memory when left out). The trainer passes one buffer for every step, so averaging
 * allocates nothing; the result is then overwritten by the next call.
 */
export function averageGradients(
  results: readonly ShareResult[],
  size: number,
  out: Float32Array = new Float32Array(size),
): { gradient: Float32Array; samples: number } {
  if (out.length !== size) {
    throw new ShardlineError(
      'INTERNAL',
      `The gradient average buffer has ${out.length} values, expected ${size}.`,
    );
  }
  let samples = 0;
  for (const r of results) samples += r.sampleCount;
  let first = true;
  for (const r of results) {
    if (r.sampleCount === 0) continue;
    if (r.gradient.length !== size) {
      throw new ShardlineError(
        'MISMATCH',
        `A gradient has ${r.gradient.length} values, expected ${size}.`,
      );
    }
    const w = r.sampleCount / samples;
    const g = r.gradient;
    // The first share overwrites what the previous step left (0 + x: the same float32 rounding,
    // and the same +0 for -0, as adding it to zeros), so no separate clearing pass is needed.
    if (first) for (let i = 0; i < size; i++) out[i] = 0 + w * g[i]!;
    else for (let i = 0; i < size; i++) out[i]! += w * g[i]!;
    first = false;
  }
  if (first) out.fill(0);
  return { gradient: out, samples };
}

/** Rejects with TIMEOUT when `promise` has not settled after `ms` (0: never). */
function withDeadline<T>(promise: Promise<T>, ms: number, what: () => string): Promise<T> {
  if (ms <= 0) return promise;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ShardlineError('TIMEOUT', what())), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Runs the whole job: every epoch, every step, evaluation at each epoch's end. */
export async function runSynchronousTraining(
  options: SyncTrainingOptions,
): Promise<SyncTrainingResult> {
  const { config, layout, membership, reporter, signal, resume } = options;
  const params = resume?.params ?? options.params;
  const optimizer = createOptimizer({
    kind: config.optimizer,
    size: layout.size,
    momentum: config.momentum,
    weightDecay: config.weightDecay,
  });
  if (resume) optimizer.setState(resume.optimizer);
  // The averaged gradient of every step, in one buffer (see averageGradients).
  const averaged = new Float32Array(layout.size);
  const steps = stepsPerEpoch(options.trainCount, config.batchSize);
  const schedule = createSchedule({
    kind: config.schedule,
    baseLr: config.learningRate,
    totalSteps: steps * config.epochs,
    warmupSteps: Math.round(config.warmupEpochs * steps),
  });
  // Version v is the result of v optimizer steps, so a resumed run's versions continue too.
  const weights: WeightsSnapshot = { version: resume?.step ?? 0, params };
  const history: EpochMetrics[] = [...(resume?.history ?? [])];
  let evaluation: ClassificationReport | undefined;
  let step = resume?.step ?? 0;
  const checkpointEvery = options.checkpointEvery ?? 0;
  const stopAt = async (
    epoch: number,
    stepInEpoch: number,
    running: TrainerCheckpoint['running'],
  ): Promise<SyncTrainingResult> => {
    await checkpoint(epoch, stepInEpoch, running);
    return { completed: false, history, ...(evaluation ? { evaluation } : {}), weights, optimizer };
  };
  const waitSignal =
    signal && options.stopSignal
      ? AbortSignal.any([signal, options.stopSignal])
      : (signal ?? options.stopSignal);
  const checkpoint = async (
    epoch: number,
    stepInEpoch: number,
    running: TrainerCheckpoint['running'],
  ) => {
    if (!options.onCheckpoint) return;
    await options.onCheckpoint({
      epoch,
      stepInEpoch,
      step,
      params,
      optimizer: optimizer.getState(),
      history: [...history],
      running: { ...running },
    });
  };

  for (let epoch = resume?.epoch ?? 0; epoch < config.epochs; epoch++) {
    const resumingThisEpoch = resume !== undefined && epoch === resume.epoch;
    const running = resumingThisEpoch ? { ...resume.running } : { lossSum: 0, correct: 0, seen: 0 };
    let workersSeen = 0;
    // Samples trained in this process this epoch: the throughput's numerator after a resume.
    let seenHere = 0;
    const times: StepTimes = { wall: 0, gather: 0, compute: 0, optimizer: 0 };
    const trafficBefore = membership.traffic?.();
    const firstStep = resumingThisEpoch ? resume.stepInEpoch : 0;
    for (let s = firstStep; s < steps; s++) {
      if (signal?.aborted) {
        throw new ShardlineError('CANCELLED', 'Training was interrupted before it finished.');
      }
      if (options.shouldStop?.()) return await stopAt(epoch, s, running);
      const t0 = performance.now();
      let results: ShareResult[] | undefined;
      while (!results) {
        let members: readonly TrainingWorker[];
        try {
          members = await membership.members(waitSignal);
        } catch (error) {
          if (!options.stopSignal?.aborted || signal?.aborted) throw error;
          return await stopAt(epoch, s, running);
        }
        workersSeen = Math.max(workersSeen, members.length);
        const settled = await Promise.allSettled(
          members.map((worker, rank) =>
            withDeadline(
              worker.computeShare(
                { epoch, step, stepInEpoch: s, rank, worldSize: members.length },
                weights,
                signal,
              ),
              options.workerTimeoutMs ?? 0,
              () =>
                `Worker ${worker.name} did not return its share of step ${step} within ${(options.workerTimeoutMs ?? 0) / 1000} s (--worker-timeout).`,
            ),
          ),
        );
        results = succeeded(settled, members, options, `step ${step}`);
        // Stopping anyway: abandon a failed step rather than retry it.
        if (!results && options.shouldStop?.()) return await stopAt(epoch, s, running);
      }
      const t1 = performance.now();
      const { gradient, samples } = averageGradients(results, layout.size, averaged);
      let stepLoss = 0;
      for (const r of results) {
        stepLoss += r.loss * r.sampleCount;
        running.correct += r.correct;
      }
      if (!Number.isFinite(stepLoss)) {
        throw new ShardlineError(
          'NUMERIC',
          `The loss became ${stepLoss} at epoch ${epoch + 1}, step ${step}: training diverged. Lower --learning-rate (now ${config.learningRate}) and run again.`,
        );
      }
      optimizer.apply(params, gradient, schedule(step));
      weights.version++;
      step++;
      const t2 = performance.now();
      times.wall += (t2 - t0) / 1000;
      times.gather += (t1 - t0) / 1000;
      times.compute += Math.max(...results.map((r) => r.computeSeconds));
      times.optimizer += (t2 - t1) / 1000;
      running.lossSum += stepLoss;
      running.seen += samples;
      seenHere += samples;
      reporter.progress({
        epoch: epoch + 1,
        epochs: config.epochs,
        stepInEpoch: s + 1,
        stepsPerEpoch: steps,
        loss: running.lossSum / running.seen,
        accuracy: running.correct / running.seen,
        imagesPerSecond: seenHere / Math.max(times.wall, 1e-9),
      });
      if (checkpointEvery > 0 && step % checkpointEvery === 0 && s + 1 < steps) {
        await checkpoint(epoch, s + 1, running);
      }
      // Let signal handlers, timers and I/O run between steps.
      await new Promise((r) => setImmediate(r));
    }
    // Step traffic only: evaluation's weight transfer is not part of a step.
    const trafficAfter = membership.traffic?.();
    evaluation = await evaluateAll(options, weights);
    const stepsRun = steps - firstStep;
    const metrics: EpochMetrics = {
      epoch: epoch + 1,
      train_loss: running.lossSum / running.seen,
      train_accuracy: running.correct / running.seen,
      test_loss: evaluation.loss,
      test_accuracy: evaluation.accuracy,
      images_per_second: seenHere / Math.max(times.wall, 1e-9),
      workers: workersSeen,
      step,
      // Per-step means: where a step's time goes. Exchange is the wait for gradients beyond the
      // slowest worker's own compute time: transfers, encoding, queueing.
      step_seconds: times.wall / Math.max(1, stepsRun),
      compute_seconds: times.compute / Math.max(1, stepsRun),
      exchange_seconds: Math.max(0, times.gather - times.compute) / Math.max(1, stepsRun),
      optimizer_seconds: times.optimizer / Math.max(1, stepsRun),
      ...(trafficBefore && trafficAfter
        ? {
            bytes_sent: trafficAfter.sent - trafficBefore.sent,
            bytes_received: trafficAfter.received - trafficBefore.received,
          }
        : {}),
    };
    history.push(metrics);
    reporter.epochEnd(metrics);
    await checkpoint(epoch + 1, 0, { lossSum: 0, correct: 0, seen: 0 });
  }
  if (!evaluation) {
    throw new ShardlineError('INVALID_ARGUMENT', 'Expected at least one epoch to run, found none.');
  }
  return { completed: true, history, evaluation, weights, optimizer };
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
      topK: [1, 3],
    });
    const settled = await Promise.allSettled(
      members.map((worker, rank) => {
        const start = Math.floor((total * rank) / members.length);
        const end = Math.floor((total * (rank + 1)) / members.length);
        return worker.evaluate({ start, end }, weights, options.signal);
      }),
    );
    const states = succeeded(settled, members, options, 'evaluation');
    if (states) {
      for (const state of states) accumulator.merge(state);
      return accumulator.result();
    }
  }
}

/**
 * The members' answers when all of them answered; otherwise drops every member that failed (or
 * rethrows when members cannot be dropped, or the run was aborted) and returns undefined, so the
 * caller retries with those that remain.
 */
function succeeded<T>(
  settled: readonly PromiseSettledResult<T>[],
  members: readonly TrainingWorker[],
  options: Pick<SyncTrainingOptions, 'membership' | 'logger' | 'signal'>,
  what: string,
): T[] | undefined {
  const failed = settled.flatMap((r, i) =>
    r.status === 'rejected' ? [{ worker: members[i]!, error: r.reason as unknown }] : [],
  );
  if (failed.length === 0) return settled.map((r) => (r as PromiseFulfilledResult<T>).value);
  const { membership, logger, signal } = options;
  const first = failed[0]!.error;
  if (
    !membership.drop ||
    (first instanceof ShardlineError && first.code === 'CANCELLED' && signal?.aborted)
  ) {
    throw first;
  }
  for (const { worker, error } of failed) {
    const reason = (error as Error)?.message ?? String(error);
    logger.warn(`dropped a worker; retrying ${what} without it`, { worker: worker.name, reason });
    membership.drop(worker, reason);
  }
  return undefined;
}
