/**
 * The settings of one training job, as the `train` command resolves them from its flags.
 */
import type { BackendPreference, OptimizerKind, ScheduleKind } from '@shardline/core';

/** Everything a training job needs to know, validated. */
export interface TrainConfig {
  model: string;
  dataset: string;
  dataDir?: string;
  /** Download the dataset when no local copy exists. */
  download: boolean;
  epochs: number;
  /** Global batch: the number of images behind one optimizer step, over all workers. */
  batchSize: number;
  learningRate: number;
  optimizer: OptimizerKind;
  momentum: number;
  weightDecay: number;
  schedule: ScheduleKind;
  warmupEpochs: number;
  seed: number;
  backend: BackendPreference;
  /** Use only the first N training / test images (0 = all). */
  limitTrain: number;
  limitTest: number;
  /** Images per forward pass during evaluation. */
  evalBatchSize: number;
  augment: boolean;
  out: string;
  /** Continue the run under `out` from its newest checkpoint. */
  resume: boolean;
  /** Checkpoint every N steps (0: only at each epoch's end). */
  checkpointEvery: number;
  /** Checkpoints kept; older ones are deleted. */
  keepCheckpoints: number;
  logFormat: 'json' | 'text';
}
