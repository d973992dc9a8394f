/**
 * `train --in-process`: the whole job in this one process, no gRPC and no workers. It runs the
 * synchronous trainer with a single local worker, so it shares every line of the training loop
 * with the distributed mode: only where gradients are computed differs.
 */
import { resolve } from 'node:path';
import { type Logger, readWeights, selectBackend, writeWeights } from '@shardline/core';
import { createLocalWorker, fixedMembership, runSynchronousTraining } from '@shardline/training';
import type { DataObserver } from './dashboard/runDashboard.js';
import {
  checkpointOptions,
  finishRun,
  type JobSources,
  prepareJobInputs,
  type RunControl,
  type TrainResult,
} from './job.js';
import { recordRunEvents } from './report/recorder.js';
import type { Reporter } from './reporter.js';
import { prepareOutDir } from './runOutputs.js';
import type { TrainConfig } from './trainConfig.js';

export type { TrainResult } from './job.js';

/**
 * Runs a whole training job in this process. Resolves when it finished or stopped; rejects with a
 * ShardlineError. `dashboard` (the run's, when it has one) gets the test set to show images from.
 */
export async function trainInProcess(
  config: TrainConfig,
  given: Reporter,
  logger: Logger,
  control: RunControl = {},
  sources: JobSources = {},
  dashboard?: DataObserver,
): Promise<TrainResult> {
  const started = Date.now();
  // Every event also goes to <out>/events.jsonl, the record report.html is built from.
  const reporter = recordRunEvents(given, logger);
  const outDir = await prepareOutDir(resolve(config.out), config.resume);
  try {
    const selection = await selectBackend(config.backend, { logger });
    const { data, resolved, layout } = await prepareJobInputs(config, 'all', logger, sources);
    dashboard?.serveTestImages(data.testSet);
    const { train, test } = data.splits!;
    const classNames = data.classNames;
    const model = resolved.model;
    const params = readWeights(model, layout);
    const checkpoints = await checkpointOptions(config, outDir.path, layout, logger);
    const worker = createLocalWorker({
      model,
      layout,
      train,
      test,
      classNames,
      seed: config.seed,
      batchSize: config.batchSize,
      augment: config.augment,
      evalBatchSize: config.evalBatchSize,
    });
    reporter.started({
      mode: 'in-process',
      model: resolved.label,
      dataset: data.label,
      ...(data.location === undefined ? {} : { dataset_location: data.location }),
      backend: selection.backend,
      parameters: layout.size,
      layout_fingerprint: layout.fingerprint,
      train_samples: train.count,
      test_samples: test.count,
      epochs: config.epochs,
      batch_size: config.batchSize,
      learning_rate: config.learningRate,
      optimizer: config.optimizer,
      seed: config.seed,
      steps_per_epoch: Math.ceil(train.count / config.batchSize),
      class_names: [...classNames],
      out: outDir.path,
      ...(checkpoints.resume ? { resumed_from_step: checkpoints.resume.step } : {}),
    });
    const result = await runSynchronousTraining({
      config,
      layout,
      params,
      trainCount: train.count,
      testCount: test.count,
      classNames,
      membership: fixedMembership([worker]),
      reporter,
      logger,
      ...checkpoints,
      ...(control.signal ? { signal: control.signal } : {}),
      ...(control.shouldStop ? { shouldStop: control.shouldStop } : {}),
      ...(control.stopSignal ? { stopSignal: control.stopSignal } : {}),
    });
    return await finishRun({
      result,
      out: outDir.path,
      model,
      layout,
      config,
      backend: selection.backend,
      classNames,
      started,
      reporter,
      logger,
      writeWeights: () => writeWeights(model, result.weights.params, layout),
      data,
      plugins: resolved.plugins,
    });
  } catch (error) {
    await outDir.discardIfEmpty();
    throw error;
  }
}
