/**
 * What the trainer reports while it runs. The coordinator's reporters print these (text, or the
 * JSON Lines events scripts rely on); the field names of {@link EpochMetrics} are that contract.
 */

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
}

/** Progress within an epoch, for a progress bar. */
export interface StepProgress {
  epoch: number;
  epochs: number;
  stepInEpoch: number;
  stepsPerEpoch: number;
  loss: number;
  accuracy: number;
  imagesPerSecond: number;
}

/** Receives the trainer's events: after every step, and at each epoch's end. */
export interface TrainingEvents {
  progress(progress: StepProgress): void;
  epochEnd(metrics: EpochMetrics): void;
}
