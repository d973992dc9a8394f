/**
 * A worker that lives in the coordinator's own process: the `--in-process` mode, and the
 * reference the distributed workers must agree with.
 */
import {
  computeGradients,
  type ParamLayout,
  predictProbabilities,
  type TrainableModel,
  writeWeights,
} from '@shardline/core';
import { createEpochPlan, type ImageSet, identityOrder, makeBatch } from '@shardline/datasets';
import type { ClassificationState } from '@shardline/metrics';
import { createClassificationAccumulator } from '@shardline/metrics';
import {
  type EvalAssignment,
  evaluationTopK,
  MISCLASSIFIED_KEPT,
  type ShareAssignment,
  type ShareResult,
  type TrainingWorker,
  type WeightsSnapshot,
} from './contract.js';

/** What a local worker computes with. */
export interface LocalWorkerOptions {
  id?: string;
  model: TrainableModel;
  layout: ParamLayout;
  train: ImageSet;
  test: ImageSet;
  classNames: readonly string[];
  seed: number;
  /** Global batch size (the plan is shared by every worker). */
  batchSize: number;
  augment: boolean;
  evalBatchSize: number;
}

/** Creates a {@link TrainingWorker} that computes in this process. */
export function createLocalWorker(options: LocalWorkerOptions): TrainingWorker {
  const { model, layout, train, test } = options;
  let version = -1;
  // One gradient buffer for every share: a fresh 5.6 MB array per step (seed CNN) would be
  // garbage after one send, and collecting it costs pauses in the middle of the exchange.
  const gradient = new Float32Array(layout.size);
  const sync = (weights: WeightsSnapshot) => {
    if (weights.version === version) return;
    writeWeights(model, weights.params, layout);
    version = weights.version;
  };
  let plan = createEpochPlan({
    count: train.count,
    seed: options.seed,
    epoch: 0,
    batchSize: options.batchSize,
  });
  const planFor = (epoch: number) => {
    if (plan.epoch !== epoch)
      plan = createEpochPlan({
        count: train.count,
        seed: options.seed,
        epoch,
        batchSize: options.batchSize,
      });
    return plan;
  };

  return {
    id: options.id ?? 'local',
    name: 'in-process',
    async computeShare(
      assignment: ShareAssignment,
      weights: WeightsSnapshot,
      signal?: AbortSignal,
    ): Promise<ShareResult> {
      // The computation below runs to its end once started (tfjs kernels cannot be interrupted).
      signal?.throwIfAborted();
      const started = performance.now();
      sync(weights);
      const indices = planFor(assignment.epoch).share(
        assignment.stepInEpoch,
        assignment.rank,
        assignment.worldSize,
      );
      if (indices.length === 0) {
        return {
          gradient: new Float32Array(0),
          sampleCount: 0,
          loss: 0,
          correct: 0,
          computeSeconds: 0,
        };
      }
      const batch = makeBatch(
        train,
        indices,
        options.augment
          ? { augment: { seed: options.seed, epoch: assignment.epoch, shift: 2, flip: true } }
          : {},
      );
      const result = computeGradients(model, batch, layout, gradient);
      return { ...result, computeSeconds: (performance.now() - started) / 1000 };
    },
    async evaluate(
      slice: EvalAssignment,
      weights: WeightsSnapshot,
      signal?: AbortSignal,
    ): Promise<ClassificationState> {
      signal?.throwIfAborted();
      sync(weights);
      return evaluateSlice(model, test, slice, options.classNames, options.evalBatchSize, signal);
    },
  };
}

/**
 * Evaluates images [start, end) of `set` and returns a mergeable accumulator state.
 *
 * Each batch's forward pass is synchronous (wasm and cpu run kernels on the main thread), so
 * the loop hands the event loop a turn between batches. Without that a worker evaluating a
 * 5,000-image slice of the seed CNN on wasm (about 30 s) answers no keepalive ping, and the
 * coordinator closes its connection mid-evaluation; an abort also takes effect between batches.
 */
export async function evaluateSlice(
  model: TrainableModel,
  set: ImageSet,
  slice: EvalAssignment,
  classNames: readonly string[],
  batchSize: number,
  signal?: AbortSignal,
): Promise<ClassificationState> {
  const accumulator = createClassificationAccumulator({
    numClasses: classNames.length,
    classNames,
    topK: evaluationTopK(classNames.length),
    keepMisclassified: MISCLASSIFIED_KEPT,
  });
  const order = identityOrder(set.count);
  for (let start = slice.start; start < slice.end; start += batchSize) {
    if (start > slice.start) await nextTurn();
    signal?.throwIfAborted();
    const indices = order.subarray(start, Math.min(start + batchSize, slice.end));
    const batch = makeBatch(set, indices);
    accumulator.update({
      probabilities: predictProbabilities(model, batch.xs, batch.shape),
      labels: batch.labels,
      indices,
    });
  }
  return accumulator.snapshot();
}

/** Resolves after the event loop has run its pending I/O (timers, sockets, pings). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Runs one throwaway gradient computation and one forward pass on the first `batchSize` images
 * of `set`, leaving the model's weights as they were. A backend's first step pays one-off costs:
 * tfjs-node-gpu 4.22 (built for CUDA 11.2) JIT-compiles PTX for newer GPUs such as Hopper, which
 * takes minutes, cuDNN picks its algorithms, wasm compiles its kernels. Paid here, before the
 * worker attaches, they cannot make the coordinator drop it for missing its first step's
 * deadline. Returns the seconds it took.
 */
export function warmUp(
  model: TrainableModel,
  layout: ParamLayout,
  set: ImageSet,
  batchSize: number,
): number {
  const started = performance.now();
  const count = Math.min(batchSize, set.count);
  if (count === 0) return 0;
  const batch = makeBatch(set, identityOrder(set.count).subarray(0, count));
  // Gradients only: nothing is applied, so the weights stay as they were.
  computeGradients(model, batch, layout);
  predictProbabilities(model, batch.xs, batch.shape);
  return (performance.now() - started) / 1000;
}
