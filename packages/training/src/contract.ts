/**
 * The training contract between the coordinator and its workers: what the synchronous trainer
 * needs from a worker, wherever it runs (in this process for `--in-process`, or in another
 * process across gRPC), and from the membership that supplies workers for each step. The
 * trainer's loop is the same for both, so the two modes cannot drift apart.
 */
import type { ClassificationState } from '@shardline/metrics';

/** The master weights at one version. Version v is the result of v optimizer steps. */
export interface WeightsSnapshot {
  version: number;
  params: Float32Array;
}

/** One worker's part of one synchronous step. */
export interface ShareAssignment {
  /** 0-based epoch and global step; `stepInEpoch` indexes the epoch's global batches. */
  epoch: number;
  step: number;
  stepInEpoch: number;
  /** The worker's place in this step's membership; shares are derived from (seed, epoch, rank, worldSize). */
  rank: number;
  worldSize: number;
  /**
   * The size of this share, as the coordinator computed it: the `sampleCount` the result must
   * report (0 when the global batch has fewer samples than members).
   */
  samples: number;
}

/** What a worker sends back for its share. */
export interface ShareResult {
  /**
   * Mean-loss gradient over the share, flat; empty when `sampleCount` is 0. A worker may reuse
   * this memory for its next share, so consume it (average, send) before asking for another.
   */
  gradient: Float32Array;
  sampleCount: number;
  /** Mean loss over the share. */
  loss: number;
  correct: number;
  /** Seconds the worker spent computing (excludes transfer), as it measured them. */
  computeSeconds: number;
}

/** The top-k accuracies every evaluation reports (top-1 and top-3), so slices merge exactly. */
export const EVALUATION_TOP_K: readonly number[] = [1, 3];

/**
 * The top-k list of an evaluation over `numClasses` classes: {@link EVALUATION_TOP_K} without
 * the k that are not below the class count (top-3 of 2 or 3 classes says nothing, and the
 * metrics refuse k above the class count). Every process derives the same list.
 */
export function evaluationTopK(numClasses: number): number[] {
  return EVALUATION_TOP_K.filter((k) => k === 1 || k < numClasses);
}

/** A slice of the test set to evaluate: images [start, end). */
export interface EvalAssignment {
  start: number;
  end: number;
  /**
   * How many images of each class the slice holds, when the coordinator knows the test labels:
   * the row sums the result's confusion matrix must have.
   */
  classCounts?: readonly number[];
}

/**
 * A worker as the trainer sees it.
 *
 * Cancellation: when `signal` aborts (the run was cancelled, or the step's deadline passed), the
 * returned promise rejects promptly with `signal.reason`, even if the computation itself cannot
 * be interrupted; the trainer turns a deadline's `TimeoutError` into a TIMEOUT that names the
 * worker and drops it.
 */
export interface TrainingWorker {
  readonly id: string;
  readonly name: string;
  /** Brings the worker to `weights` (when it is behind) and computes the gradient of its share. */
  computeShare(
    assignment: ShareAssignment,
    weights: WeightsSnapshot,
    signal?: AbortSignal,
  ): Promise<ShareResult>;
  /** Brings the worker to `weights` and evaluates a slice of the test set. */
  evaluate(
    slice: EvalAssignment,
    weights: WeightsSnapshot,
    signal?: AbortSignal,
  ): Promise<ClassificationState>;
}

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
