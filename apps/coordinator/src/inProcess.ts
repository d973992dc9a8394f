/**
 * `train --in-process`: the whole job in this one process, no gRPC and no workers. It runs the
 * same gradient step (`computeGradients`) and the same optimizer over flat vectors as the
 * distributed mode, so the two modes differ only in where gradients are computed.
 */
import { resolve } from 'node:path';
import {
  computeGradients,
  createOptimizer,
  createSchedule,
  describeLayout,
  type Logger,
  readWeights,
  ShardlineError,
  selectBackend,
  writeWeights,
} from '@shardline/core';
import { epochOrder, loadDataset, makeBatch } from '@shardline/datasets';
import { createThroughputMeter } from '@shardline/metrics';
import { createModel } from '@shardline/models';
import { type Evaluation, evaluate } from './evaluate.js';
import type { EpochMetrics, Reporter } from './reporter.js';
import { prepareOutDir, writeRunOutputs } from './runOutputs.js';
import type { TrainConfig } from './trainConfig.js';

/** The outcome of a finished run. */
export interface TrainResult {
  history: EpochMetrics[];
  modelPath: string;
  summaryPath: string;
}

/** Runs a whole training job in this process. Resolves when it finished; rejects with a ShardlineError. */
export async function trainInProcess(
  config: TrainConfig,
  reporter: Reporter,
  logger: Logger,
  signal?: AbortSignal,
): Promise<TrainResult> {
  const started = Date.now();
  const selection = await selectBackend(config.backend, { logger });
  const data = await loadDataset(config.dataset, {
    ...(config.dataDir === undefined ? {} : { dataDir: config.dataDir }),
    ...(config.limitTrain > 0 ? { limitTrain: config.limitTrain } : {}),
    ...(config.limitTest > 0 ? { limitTest: config.limitTest } : {}),
    download: config.download,
    logger,
  });
  const { train, test } = data;
  const model = createModel(config.model, {
    seed: config.seed,
    inputShape: [train.height, train.width, train.channels],
    numClasses: data.descriptor.classNames.length,
  });
  const layout = describeLayout(model);
  const params = readWeights(model, layout);
  const optimizer = createOptimizer({
    kind: config.optimizer,
    size: layout.size,
    momentum: config.momentum,
    weightDecay: config.weightDecay,
  });
  const stepsPerEpoch = Math.ceil(train.count / config.batchSize);
  const schedule = createSchedule({
    kind: config.schedule,
    baseLr: config.learningRate,
    totalSteps: stepsPerEpoch * config.epochs,
    warmupSteps: Math.round(config.warmupEpochs * stepsPerEpoch),
  });
  const outDir = await prepareOutDir(resolve(config.out));
  try {
    return await run();
  } catch (error) {
    await outDir.discardIfEmpty();
    throw error;
  }

  async function run(): Promise<TrainResult> {
    const out = outDir.path;

    reporter.started({
      mode: 'in-process',
      model: config.model,
      dataset: config.dataset,
      dataset_source: data.source,
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
      steps_per_epoch: stepsPerEpoch,
      out,
    });

    const history: EpochMetrics[] = [];
    let evaluation: Evaluation | undefined;
    let step = 0;
    for (let epoch = 1; epoch <= config.epochs; epoch++) {
      const order = epochOrder(train.count, config.seed, epoch - 1);
      const meter = createThroughputMeter();
      let lossSum = 0;
      let correct = 0;
      let seen = 0;
      for (let s = 0; s < stepsPerEpoch; s++) {
        if (signal?.aborted)
          throw new ShardlineError('CANCELLED', 'Training was interrupted before it finished.');
        const indices = order.subarray(
          s * config.batchSize,
          Math.min((s + 1) * config.batchSize, train.count),
        );
        const t0 = performance.now();
        const batch = makeBatch(
          train,
          indices,
          config.augment ? { augment: { seed: config.seed, epoch, shift: 2, flip: true } } : {},
        );
        const result = computeGradients(model, batch, layout);
        if (!Number.isFinite(result.loss)) {
          throw new ShardlineError(
            'NUMERIC',
            `The loss became ${result.loss} at epoch ${epoch}, step ${step}: training diverged. Lower --learning-rate (now ${config.learningRate}) and run again.`,
          );
        }
        optimizer.apply(params, result.gradient, schedule(step));
        writeWeights(model, params, layout);
        step++;
        meter.record(result.sampleCount, (performance.now() - t0) / 1000);
        lossSum += result.loss * result.sampleCount;
        correct += result.correct;
        seen += result.sampleCount;
        reporter.progress({
          epoch,
          epochs: config.epochs,
          stepInEpoch: s + 1,
          stepsPerEpoch,
          loss: lossSum / seen,
          accuracy: correct / seen,
          imagesPerSecond: meter.result().itemsPerSecond,
        });
        // Let signal handlers and I/O run between steps.
        await new Promise((r) => setImmediate(r));
      }
      evaluation = evaluate(model, test, {
        batchSize: config.evalBatchSize,
        classNames: data.descriptor.classNames,
      });
      const metrics: EpochMetrics = {
        epoch,
        train_loss: lossSum / seen,
        train_accuracy: correct / seen,
        test_loss: evaluation.loss,
        test_accuracy: evaluation.accuracy,
        images_per_second: meter.result().itemsPerSecond,
        workers: 1,
        step,
      };
      history.push(metrics);
      reporter.epochEnd(metrics);
    }

    const outputs = await writeRunOutputs(out, model, {
      config,
      backend: selection.backend,
      history,
      layout,
      classNames: data.descriptor.classNames,
      evaluation: evaluation!,
      seconds: (Date.now() - started) / 1000,
    });
    const last = history[history.length - 1]!;
    reporter.done({ ...last, model_path: outputs.modelPath, summary_path: outputs.summaryPath });
    return { history, ...outputs };
  }
}
