/**
 * @shardline/coordinator: the coordinator side of Shardline. The CLI (`shardline-coordinator`)
 * runs a whole training job, in-process or over gRPC with local and remote workers; `runCli`
 * runs it from code with its exit status returned. `TRAIN_SETTINGS` is the table of `train`'s
 * settings (flag, environment variable, config-file key), for tools that check deployment files
 * against it.
 */

export { type CoordinatorCliContext, runCli } from './program.js';
export {
  TRAIN_SETTINGS,
  TRAIN_SETTINGS_MODEL,
  type TrainConfig,
  type TrainSettings,
} from './trainConfig.js';
