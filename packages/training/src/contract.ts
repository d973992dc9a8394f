/**
 * The training contract between the coordinator and its workers: what the synchronous trainer
 * needs from a worker, wherever it runs (in this process for `--in-process`, or in another
 * process across gRPC), and from the membership that supplies workers for each step. The
 * trainer's loop is the same for both, so the two modes cannot drift apart.
 */
import { hasErrorCode, type OptimizerState, ShardlineError } from '@shardline/core';
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

/**
 * How many misclassified test images every evaluation keeps (the lowest indices), per slice and
 * once merged: enough for a grid of examples, small enough for every evaluation message. The
 * wire contract (ClassificationCounts.misclassified) promises at most this many.
 */
export const MISCLASSIFIED_KEPT = 32;

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

/** One member of a ring formation: who it is and where its peer endpoint listens. */
export interface RingPeer {
  workerId: string;
  /** `host:port` other members dial (the worker's advertised peer address). */
  peerAddress: string;
}

/** The members of one ring formation, in rank order. A re-formed ring gets a new id. */
export interface RingFormation {
  id: string;
  members: readonly RingPeer[];
}

/** A member's part of one ring-mode step: its share, and the ring to all-reduce it in. */
export interface RingShareAssignment extends ShareAssignment {
  ring: RingFormation;
}

/**
 * What a ring member reports once its all-reduce succeeded. It then holds the averaged gradient
 * staged (not applied) until the trainer commits or aborts the step.
 */
export interface RingShareReport {
  /** This member's own share, as in star mode. */
  sampleCount: number;
  loss: number;
  correct: number;
  computeSeconds: number;
  /** Samples behind the average, over every member. */
  totalSamples: number;
  /** CRC-32 of the averaged gradient's bytes (8 hex digits): equal on every member, or no commit. */
  checksum: string;
  /** Seconds spent in the all-reduce after the gradient was computed. */
  exchangeSeconds: number;
  /** Payload bytes this member sent to its right neighbour. */
  sentBytes: number;
}

/** A replica's whole state: weights version `version` and the optimizer state that goes with it. */
export interface ReplicaState {
  version: number;
  params: Float32Array;
  optimizer: OptimizerState;
}

/** An evaluation in ring mode: the metrics, and a checksum of the replica's weights they used. */
export interface ReplicaEvaluation {
  state: ClassificationState;
  /** CRC-32 of the weights (8 hex digits); every member's must be equal. */
  weightsChecksum: string;
}

/**
 * A worker that can train in ring mode (`--exchange ring`): it keeps a replica of the weights
 * and the optimizer, all-reduces its gradient with the other members, and applies a step only
 * when the trainer commits it, so that a step is applied by every member or by none.
 *
 * A member whose all-reduce failed because of another member (its neighbour's stream broke, the
 * ring was aborted) rejects `reduceShare` with an error {@link isRingAbort} recognises: the
 * trainer retries the step without dropping it. Any other rejection drops it, as in star mode.
 */
export interface RingTrainingWorker extends TrainingWorker {
  /** The peer endpoint the other members dial. */
  readonly peerAddress: string;
  /** The weights version its replica holds (-1: none yet). */
  readonly replicaVersion: number;
  /**
   * When it last sent anything (`Date.now()`); absent in-process. A member waiting on its ring
   * keeps sending heartbeats, so at a step's deadline the trainer blames only the members that
   * went quiet (frozen, or not playing their part), not the ones that waited on them.
   */
  readonly lastSeenMs?: number;
  /** Replaces its replica with `state` (a joiner, or a member that fell behind). */
  pushState(state: ReplicaState, signal?: AbortSignal): Promise<void>;
  /**
   * Computes its share on its replica (which must be at version `assignment.step`), all-reduces
   * the gradient in `assignment.ring` and stages the average; resolves with its report.
   */
  reduceShare(assignment: RingShareAssignment, signal?: AbortSignal): Promise<RingShareReport>;
  /** Applies the staged average of `step` with `learningRate`: the replica moves to step + 1. */
  commit(step: number, learningRate: number, checksum: string): void;
  /** Drops whatever is staged for `step` and stops its all-reduce if it still runs. */
  abortStep(step: number, reason: string): void;
  /** A copy of its replica's state. */
  pullState(signal?: AbortSignal): Promise<ReplicaState>;
  /** Evaluates a slice on its replica (at version `version`), with the weights' checksum. */
  evaluateReplica(
    slice: EvalAssignment,
    version: number,
    signal?: AbortSignal,
  ): Promise<ReplicaEvaluation>;
}

/** True for a worker that implements {@link RingTrainingWorker}. */
export function isRingWorker(worker: TrainingWorker): worker is RingTrainingWorker {
  return typeof (worker as Partial<RingTrainingWorker>).reduceShare === 'function';
}

/**
 * The error a ring member rejects `reduceShare` with when its all-reduce failed through no
 * fault of its own: the trainer retries the step in a new formation without dropping it.
 */
export function ringAbortError(message: string, cause?: unknown): ShardlineError {
  return new ShardlineError('CONNECTION_LOST', message, {
    details: { ring: 'aborted' },
    ...(cause === undefined ? {} : { cause }),
  });
}

/** True for an error made by {@link ringAbortError} (also after a trip through toShardlineError). */
export function isRingAbort(error: unknown): boolean {
  return hasErrorCode(error, 'CONNECTION_LOST') && error.details.ring === 'aborted';
}
