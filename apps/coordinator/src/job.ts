/**
 * What both training modes share around the trainer: resuming from a checkpoint, writing
 * checkpoints, and the final outputs and `done` event.
 */
import { describeLayout, type Logger, type ParamLayout, ShardlineError } from '@shardline/core';
import type { EpochMetrics, SyncTrainingOptions, SyncTrainingResult } from '@shardline/training';
import type * as tf from '@tensorflow/tfjs';
import { assertResumable, readLatestCheckpoint, writeCheckpoint } from './checkpoints.js';
import { type InMemoryDataset, type JobData, loadJobData } from './jobData.js';
import { type JobModel, type JobPlugin, type ModelSource, resolveJobModel } from './jobModel.js';
import { writeReportAfterRun } from './report/report.js';
import type { Reporter } from './reporter.js';
import { writeRunOutputs } from './runOutputs.js';
import type { TrainConfig } from './trainConfig.js';

/** The outcome of a run: finished (model and summary written) or stopped at a checkpoint. */
export interface TrainResult {
  completed: boolean;
  history: EpochMetrics[];
  modelPath?: string;
  summaryPath?: string;
}

/**
 * What code may give instead of `config.model` and `config.dataset` (the `train()` API): a model
 * spec or a function returning the model, and sets built in memory. The config keeps a label of
 * each for summary.json.
 */
export interface JobSources {
  model?: ModelSource;
  sets?: InMemoryDataset;
}

/** A job's data and model, resolved and checked against each other, before any step. */
export interface JobInputs {
  data: JobData;
  resolved: JobModel;
  layout: ParamLayout;
}

/**
 * Loads the data (`load` as {@link loadJobData} takes it), builds the model for it and describes
 * its parameter layout: the same for both training modes, so they train the same job.
 */
export async function prepareJobInputs(
  config: TrainConfig,
  load: 'all' | 'describe',
  logger: Logger,
  sources: JobSources,
): Promise<JobInputs> {
  const data = await loadJobData(config, {
    load,
    logger,
    ...(sources.sets ? { sets: sources.sets } : {}),
  });
  const resolved = await resolveJobModel({
    model: sources.model ?? config.model,
    hyperparameters: config.hyperparameters,
    plugins: config.plugins,
    seed: config.seed,
    data: { ...data, numClasses: data.classNames.length },
    logger,
  });
  return { data, resolved, layout: describeLayout(resolved.model) };
}

/** Stops a run between steps (first SIGINT/SIGTERM) or at once (abort). */
export interface RunControl {
  signal?: AbortSignal;
  shouldStop?: () => boolean;
  /** Aborted when a stop is requested, to end waits for workers. */
  stopSignal?: AbortSignal;
}

/**
 * The trainer options for resuming and checkpointing under `out`: the newest checkpoint when
 * `config.resume` (after checking that the flags and the model still match), and a writer.
 */
export async function checkpointOptions(
  config: TrainConfig,
  out: string,
  layout: ParamLayout,
  logger: Logger,
): Promise<Pick<SyncTrainingOptions, 'resume' | 'onCheckpoint' | 'checkpointEvery'>> {
  const run = { config, layoutFingerprint: layout.fingerprint };
  let resume: SyncTrainingOptions['resume'];
  if (config.resume) {
    const loaded = await readLatestCheckpoint(out);
    assertResumable(loaded.config, config, loaded.path);
    assertSameExchange(loaded.config, config, loaded.path);
    if (loaded.layoutFingerprint !== layout.fingerprint) {
      throw new ShardlineError(
        'MISMATCH',
        `Checkpoint ${loaded.path} was written for layout ${loaded.layoutFingerprint}, this model has ${layout.fingerprint}. Resume with the Shardline version that wrote it.`,
      );
    }
    resume = loaded.checkpoint;
    logger.info('resuming from checkpoint', {
      path: loaded.path,
      epoch: resume.epoch + 1,
      step: resume.step,
    });
  }
  return {
    ...(resume ? { resume } : {}),
    checkpointEvery: config.checkpointEvery,
    onCheckpoint: async (checkpoint) => {
      const path = await writeCheckpoint(out, checkpoint, run, config.keepCheckpoints);
      logger.info('checkpoint written', { path, step: checkpoint.step });
    },
  };
}

/**
 * Throws MISMATCH when `config` would resume `saved`'s run in the other exchange mode: star and
 * ring sum the gradients in a different order, so the resumed run would not be the run that was
 * interrupted. Pinned here rather than with the other settings because checkpoints written
 * before ring mode record no exchange (they were star), and `auto` is compared as what it
 * resolved to: the distributed mode resolves it before this runs, in-process it is star.
 */
export function assertSameExchange(saved: TrainConfig, config: TrainConfig, path: string): void {
  const mode = (c: TrainConfig) => (c.exchange === 'ring' ? 'ring' : 'star');
  if (mode(saved) === mode(config)) return;
  throw new ShardlineError(
    'MISMATCH',
    `Cannot resume ${path} with --exchange ${config.exchange}${config.exchange === mode(config) ? '' : ` (${mode(config)})`}: the run trained with --exchange ${mode(saved)}. ` +
      `Pass --exchange ${mode(saved)}, as the original run did.`,
  );
}

/** After the trainer returns: outputs and `done` when it finished, a log line when it stopped. */
export async function finishRun(options: {
  result: SyncTrainingResult;
  out: string;
  model: tf.LayersModel;
  layout: ParamLayout;
  config: TrainConfig;
  backend: string;
  classNames: readonly string[];
  started: number;
  reporter: Reporter;
  logger: Logger;
  writeWeights: () => void;
  /** Reports refused from workers, by reason (distributed runs). */
  rejectedReports?: Readonly<Record<string, number>>;
  /** The data trained on, recorded with the model so that evaluate and predict match it. */
  data: JobData;
  /** Plugins the model needs. */
  plugins: readonly JobPlugin[];
}): Promise<TrainResult> {
  const { result, out, config, reporter, logger } = options;
  if (!result.completed || !result.evaluation) {
    logger.warn('stopped before the end; resume with --resume', {
      out,
      step: result.weights.version,
    });
    return { completed: false, history: result.history };
  }
  options.writeWeights();
  const outputs = await writeRunOutputs(out, options.model, {
    config,
    backend: options.backend,
    history: result.history,
    layout: options.layout,
    classNames: options.classNames,
    data: options.data,
    plugins: options.plugins,
    evaluation: result.evaluation,
    seconds: (Date.now() - options.started) / 1000,
    ...(options.rejectedReports ? { rejectedReports: options.rejectedReports } : {}),
  });
  const last = result.history[result.history.length - 1]!;
  reporter.done({ ...last, model_path: outputs.modelPath, summary_path: outputs.summaryPath });
  // After `done`, so the report reads the whole record, as `report <out>` later does; a report
  // that cannot be built is a warning, not a failed run.
  await writeReportAfterRun(out, logger);
  return { completed: true, history: result.history, ...outputs };
}
