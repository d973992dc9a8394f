/**
 * @shardline/coordinator: the coordinator side of Shardline. The CLI (`shardline-coordinator`)
 * runs a whole training job, in-process or over gRPC with local and remote workers; `train`
 * runs the same job from code (models and data as objects, events to a callback), and `runCli`
 * runs the CLI from code with its exit status returned. `evaluateSavedModel` and
 * `predictImages` are the `evaluate` and `predict` commands. `TRAIN_SETTINGS` is the table of `train`'s
 * settings (flag, environment variable, config-file key), for tools that check deployment files
 * against it.
 */

export {
  type EvaluateOptions,
  type EvaluationResult,
  evaluateSavedModel,
} from './evaluate.js';
export type { JobSources, TrainResult } from './job.js';
export type { InMemoryDataset } from './jobData.js';
export type { ModelBuildContext, ModelSource } from './jobModel.js';
export {
  type ClassProbability,
  type ImagePrediction,
  type PredictOptions,
  predictImages,
} from './predict.js';
export { type CoordinatorCliContext, runCli } from './program.js';
export type { TrainEvent } from './reporter.js';
export { readSavedModel } from './savedModel.js';
export { type TrainOptions, train } from './train.js';
export {
  TRAIN_SETTINGS,
  TRAIN_SETTINGS_MODEL,
  type TrainConfig,
  type TrainSettings,
} from './trainConfig.js';
