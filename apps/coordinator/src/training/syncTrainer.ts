/**
 * Synchronous data-parallel SGD, the default training algorithm (design.md, "One training
 * step"). The coordinator owns the master weights and the optimizer; for each step every member
 * computes the gradient of its share of the global batch, the coordinator averages them weighted
 * by sample count (so the result equals the gradient of the whole global batch), applies the
 * optimizer and bumps the weights version. At each epoch's end the test set is split among the
 * members and their metrics are merged.
 */
import {
  createOptimizer,
  createSchedule,
  type Logger,
  type Optimizer,
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
}

/** A membership that never changes: the in-process worker, or a fixed test group. */
export function fixedMembership(workers: readonly TrainingWorker[]): Membership {
  return { members: async () => workers };
}

/** Inputs of {@link runSynchronousTraining}. */
export interface SyncTrainingOptions {
  config: TrainConfig;
  layout: ParamLayout;
  /** Initial master weights; updated in place. */
  params: Float32Array;
  trainCount: number;
  testCount: number;
  classNames: readonly string[];
  membership: Membership;
  reporter: Reporter;
  logger: Logger;
  signal?: AbortSignal;
}

/** The result of a finished run. */
export interface SyncTrainingResult {
  history: EpochMetrics[];
  evaluation: ClassificationReport;
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

/** Weighted average of the members' gradients: sum(n_i * g_i) / sum(n_i). */
export function averageGradients(
  results: readonly ShareResult[],
  size: number,
): { gradient: Float32Array; samples: number } {
  const gradient = new Float32Array(size);
  let samples = 0;
  for (const r of results) samples += r.sampleCount;
  if (samples === 0) return { gradient, samples };
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
    for (let i = 0; i < size; i++) gradient[i]! += w * g[i]!;
  }
  return { gradient, samples };
}

/** Runs the whole job: every epoch, every step, evaluation at each epoch's end. */
export async function runSynchronousTraining(
  options: SyncTrainingOptions,
): Promise<SyncTrainingResult> {
  const { config, layout, params, membership, reporter, signal } = options;
  const optimizer = createOptimizer({
    kind: config.optimizer,
    size: layout.size,
    momentum: config.momentum,
    weightDecay: config.weightDecay,
  });
  const steps = stepsPerEpoch(options.trainCount, config.batchSize);
  const schedule = createSchedule({
    kind: config.schedule,
    baseLr: config.learningRate,
    totalSteps: steps * config.epochs,
    warmupSteps: Math.round(config.warmupEpochs * steps),
  });
  const weights: WeightsSnapshot = { version: 0, params };
  const history: EpochMetrics[] = [];
  let evaluation: ClassificationReport | undefined;
  let step = 0;

  for (let epoch = 0; epoch < config.epochs; epoch++) {
    let lossSum = 0;
    let correct = 0;
    let seen = 0;
    let workersSeen = 0;
    const times: StepTimes = { wall: 0, gather: 0, compute: 0, optimizer: 0 };
    const trafficBefore = membership.traffic?.();
    for (let s = 0; s < steps; s++) {
      if (signal?.aborted)
        throw new ShardlineError('CANCELLED', 'Training was interrupted before it finished.');
      const members = await membership.members(signal);
      workersSeen = Math.max(workersSeen, members.length);
      const t0 = performance.now();
      const results = await Promise.all(
        members.map((worker, rank) =>
          worker.computeShare(
            { epoch, step, stepInEpoch: s, rank, worldSize: members.length },
            weights,
            signal,
          ),
        ),
      );
      const t1 = performance.now();
      const { gradient, samples } = averageGradients(results, layout.size);
      let stepLoss = 0;
      for (const r of results) {
        stepLoss += r.loss * r.sampleCount;
        correct += r.correct;
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
      lossSum += stepLoss;
      seen += samples;
      reporter.progress({
        epoch: epoch + 1,
        epochs: config.epochs,
        stepInEpoch: s + 1,
        stepsPerEpoch: steps,
        loss: lossSum / seen,
        accuracy: correct / seen,
        imagesPerSecond: seen / times.wall,
      });
      // Let signal handlers, timers and I/O run between steps.
      await new Promise((r) => setImmediate(r));
    }
    // Step traffic only: evaluation's weight transfer is not part of a step.
    const trafficAfter = membership.traffic?.();
    evaluation = await evaluateAll(options, weights);
    const metrics: EpochMetrics = {
      epoch: epoch + 1,
      train_loss: lossSum / seen,
      train_accuracy: correct / seen,
      test_loss: evaluation.loss,
      test_accuracy: evaluation.accuracy,
      images_per_second: seen / times.wall,
      workers: workersSeen,
      step,
      // Per-step means: where a step's time goes. Exchange is the wait for gradients beyond the
      // slowest worker's own compute time: transfers, encoding, queueing.
      step_seconds: times.wall / steps,
      compute_seconds: times.compute / steps,
      exchange_seconds: Math.max(0, times.gather - times.compute) / steps,
      optimizer_seconds: times.optimizer / steps,
      ...(trafficBefore && trafficAfter
        ? {
            bytes_sent: trafficAfter.sent - trafficBefore.sent,
            bytes_received: trafficAfter.received - trafficBefore.received,
          }
        : {}),
    };
    history.push(metrics);
    reporter.epochEnd(metrics);
  }
  if (!evaluation)
    throw new ShardlineError('INVALID_ARGUMENT', 'Expected at least one epoch, found none.');
  return { history, evaluation, weights, optimizer };
}

/** Splits the test set into contiguous slices, one per member, and merges their metrics. */
async function evaluateAll(
  options: SyncTrainingOptions,
  weights: WeightsSnapshot,
): Promise<ClassificationReport> {
  const members = await options.membership.members(options.signal);
  const total = options.testCount;
  const accumulator = createClassificationAccumulator({
    numClasses: options.classNames.length,
    classNames: options.classNames,
    topK: [1, 3],
  });
  const states = await Promise.all(
    members.map((worker, rank) => {
      const start = Math.floor((total * rank) / members.length);
      const end = Math.floor((total * (rank + 1)) / members.length);
      return worker.evaluate({ start, end }, weights, options.signal);
    }),
  );
  for (const state of states) accumulator.merge(state);
  return accumulator.result();
}
