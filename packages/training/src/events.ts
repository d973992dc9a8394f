/**
 * What the trainer reports while it runs. The coordinator's reporters print these (text, or the
 * JSON Lines events scripts rely on); the field names of {@link EpochMetrics} are that contract.
 */

import type { MisclassifiedSample } from '@shardline/metrics';

/** The metrics `epoch_end` and `done` carry (design.md's contract). */
export interface EpochMetrics {
  epoch: number;
  train_loss: number;
  train_accuracy: number;
  test_loss: number;
  test_accuracy: number;
  images_per_second: number;
  workers: number;
  step: number;
  /** Per-step means over the epoch, in seconds: whole step, slowest compute, exchange, optimizer. */
  step_seconds?: number;
  compute_seconds?: number;
  exchange_seconds?: number;
  optimizer_seconds?: number;
  /**
   * Tensor bytes this process sent to / received from workers during the epoch (distributed
   * mode): in star mode the gradients and weights of every step, in ring mode only the replica
   * states it pushed and pulled.
   */
  bytes_sent?: number;
  bytes_received?: number;
  /**
   * Ring mode only: payload bytes the members sent each other in their all-reduces during the
   * epoch, as they reported them (2 (N - 1) / N x the gradient per member per step).
   */
  ring_bytes?: number;
  /**
   * Ring mode only: the CRC-32 (8 hex digits) of the weights that every replica held at this
   * epoch's evaluation; they all agreed on it, or the evaluation would not have been reported.
   */
  replica_checksum?: string;
  /**
   * The test set's confusion matrix at this epoch's evaluation, merged over the members that
   * evaluated it: `confusion[t][p]` counts images of true class `t` predicted as `p`. Reports
   * draw it and derive per-class precision / recall / F1 from it.
   */
  confusion?: number[][];
  /**
   * Up to MISCLASSIFIED_KEPT test images this epoch's evaluation got wrong, the lowest test-set
   * indices first (each worker keeps its slice's lowest, the merge keeps the lowest overall):
   * `{ index, label, predicted, confidence }`, for a grid of examples.
   */
  misclassified?: MisclassifiedSample[];
}

/**
 * Progress after one step: where the run is (for a progress bar), the epoch's running means,
 * and what that one step did and cost (for a per-step record and live curves).
 */
export interface StepProgress {
  /** 1-based epoch, and the number of epochs of the run. */
  epoch: number;
  epochs: number;
  /** 1-based step within the epoch (this step), and the steps of an epoch. */
  stepInEpoch: number;
  stepsPerEpoch: number;
  /** Mean training loss and accuracy over the epoch so far (what a progress bar shows). */
  loss: number;
  accuracy: number;
  /** Images per second over the epoch so far. */
  imagesPerSecond: number;
  // The fields below are optional so that code building a StepProgress of its own (a custom
  // trainer, a test) keeps compiling; Shardline's trainer always sets them.
  /** Optimizer steps done in the run, this one included: the weights version after it. */
  step?: number;
  /** This step's own training loss and accuracy, over its whole global batch. */
  stepLoss?: number;
  stepAccuracy?: number;
  /** Images behind this step, over every member. */
  samples?: number;
  /** Members that computed this step. */
  workers?: number;
  /**
   * Where this step's time went, in seconds, as the epoch's means in {@link EpochMetrics}
   * split it: the whole step; the slowest member's compute; the exchange (star: the wait for
   * gradients beyond that compute; ring: the slowest member's all-reduce); the optimizer
   * (star: averaging and applying; ring: committing).
   */
  stepSeconds?: number;
  computeSeconds?: number;
  exchangeSeconds?: number;
  optimizerSeconds?: number;
}

/** Receives the trainer's events: after every step, and at each epoch's end. */
export interface TrainingEvents {
  progress(progress: StepProgress): void;
  epochEnd(metrics: EpochMetrics): void;
}
