/**
 * `train` (distributed): the coordinator serves gRPC, admits workers (its own local worker
 * processes and remote ones), and runs the synchronous trainer over them.
 */
import { resolve } from 'node:path';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import {
  describeLayout,
  type Logger,
  readWeights,
  ShardlineError,
  selectBackend,
  writeWeights,
} from '@shardline/core';
import { getDataset } from '@shardline/datasets';
import { createModel } from '@shardline/models';
import {
  applyServerFlowControlWindow,
  CoordinatorServiceDefinition,
  type DataType,
  DEFAULT_CHUNK_BYTES,
  JobState,
  SERVER_OPTIONS,
  StopReason,
} from '@shardline/protocol';
import type { TrainResult } from '../inProcess.js';
import type { Reporter } from '../reporter.js';
import { prepareOutDir, writeRunOutputs } from '../runOutputs.js';
import type { TrainConfig } from '../trainConfig.js';
import { runSynchronousTraining } from '../training/syncTrainer.js';
import { createCluster } from './cluster.js';
import { type LocalWorkers, startLocalWorkers } from './localProcesses.js';

/** Settings only the distributed mode has. */
export interface DistributedSettings {
  /** host:port to listen on; port 0 picks a free one. */
  listen: string;
  localWorkers: number;
  minWorkers: number;
  /** Encoding of gradients on the wire. */
  gradientDtype: DataType;
  /** Encoding of weights on the wire; 16-bit types round the workers' copy, never the master. */
  weightsDtype: DataType;
}

function bind(server: Server, address: string): Promise<number> {
  return new Promise((resolvePort, reject) =>
    server.bindAsync(address, ServerCredentials.createInsecure(), (error, port) =>
      error
        ? reject(
            new ShardlineError(
              'INVALID_ARGUMENT',
              `Cannot listen on ${address}: ${error.message}. Choose another --listen address or port.`,
              { cause: error },
            ),
          )
        : resolvePort(port),
    ),
  );
}

/** Runs a whole distributed job. */
export async function trainDistributed(
  config: TrainConfig,
  settings: DistributedSettings,
  reporter: Reporter,
  logger: Logger,
  streams: { stderr: { write(chunk: string): unknown } },
  signal?: AbortSignal,
): Promise<TrainResult> {
  const started = Date.now();
  const outDir = await prepareOutDir(resolve(config.out));
  const server = new Server({ ...SERVER_OPTIONS });
  let locals: LocalWorkers | undefined;
  let cluster: ReturnType<typeof createCluster> | undefined;
  try {
    const selection = await selectBackend(config.backend, { logger });
    const descriptor = getDataset(config.dataset);
    const trainCount =
      config.limitTrain > 0
        ? Math.min(config.limitTrain, descriptor.train.count)
        : descriptor.train.count;
    const testCount =
      config.limitTest > 0
        ? Math.min(config.limitTest, descriptor.test.count)
        : descriptor.test.count;
    const model = createModel(config.model, { seed: config.seed });
    const layout = describeLayout(model);
    const params = readWeights(model, layout);
    const job = {
      jobId: `${Date.now().toString(36)}-${process.pid}`,
      modelName: config.model,
      hyperparametersJson: '{}',
      datasetName: config.dataset,
      seed: config.seed,
      globalBatchSize: config.batchSize,
      epochs: config.epochs,
      gradientDtype: settings.gradientDtype,
      weightsDtype: settings.weightsDtype,
      maxChunkBytes: DEFAULT_CHUNK_BYTES,
      layoutFingerprint: layout.fingerprint,
      parameterCount: layout.size,
      limitTrain: config.limitTrain,
      limitTest: config.limitTest,
      augment: config.augment,
      evalBatchSize: config.evalBatchSize,
    };
    cluster = createCluster({ job, layout, minWorkers: settings.minWorkers, reporter, logger });
    server.addService(CoordinatorServiceDefinition, cluster.service);
    const port = await bind(server, settings.listen);
    applyServerFlowControlWindow(server);
    const host = settings.listen.slice(0, settings.listen.lastIndexOf(':'));
    const address = `${host}:${port}`;
    logger.info('coordinator listening', {
      address,
      min_workers: settings.minWorkers,
      local_workers: settings.localWorkers,
    });
    reporter.started({
      mode: 'distributed',
      listen: address,
      model: config.model,
      dataset: config.dataset,
      backend: selection.backend,
      parameters: layout.size,
      layout_fingerprint: layout.fingerprint,
      train_samples: trainCount,
      test_samples: testCount,
      epochs: config.epochs,
      batch_size: config.batchSize,
      learning_rate: config.learningRate,
      optimizer: config.optimizer,
      seed: config.seed,
      steps_per_epoch: Math.ceil(trainCount / config.batchSize),
      local_workers: settings.localWorkers,
      min_workers: settings.minWorkers,
      out: outDir.path,
    });
    if (settings.localWorkers > 0) {
      const c = cluster;
      locals = startLocalWorkers({
        count: settings.localWorkers,
        coordinator: address,
        args: [
          '--backend',
          config.backend,
          '--log-format',
          config.logFormat,
          // Local workers log at the coordinator's level, so --log-level warn quiets them too.
          '--log-level',
          logger.level,
          ...(config.dataDir === undefined ? [] : ['--data-dir', config.dataDir]),
          ...(config.download ? [] : ['--no-download']),
        ],
        stderr: streams.stderr,
        onUnexpectedExit: (error) => c.abort(error),
      });
    }
    const c = cluster;
    // GetStatus reports what the reporter hears.
    const tracking: Reporter = {
      ...reporter,
      progress(p) {
        const step = (p.epoch - 1) * p.stepsPerEpoch + p.stepInEpoch;
        c.setProgress({ state: JobState.TRAINING, epoch: p.epoch, step, weightsVersion: step });
        reporter.progress(p);
      },
      epochEnd(m) {
        c.setProgress({
          lastEpoch: {
            epoch: m.epoch,
            trainLoss: m.train_loss,
            trainAccuracy: m.train_accuracy,
            testLoss: m.test_loss,
            testAccuracy: m.test_accuracy,
            imagesPerSecond: m.images_per_second,
          },
        });
        reporter.epochEnd(m);
      },
    };
    const result = await runSynchronousTraining({
      config,
      layout,
      params,
      trainCount,
      testCount,
      classNames: descriptor.classNames,
      membership: cluster,
      reporter: tracking,
      logger,
      ...(signal ? { signal } : {}),
    });
    cluster.setProgress({ state: JobState.DONE });
    await cluster.stopAll(StopReason.JOB_DONE, 'Training finished.');
    writeWeights(model, result.weights.params, layout);
    const outputs = await writeRunOutputs(outDir.path, model, {
      config,
      backend: selection.backend,
      history: result.history,
      layout,
      classNames: descriptor.classNames,
      evaluation: result.evaluation,
      seconds: (Date.now() - started) / 1000,
    });
    const last = result.history[result.history.length - 1]!;
    reporter.done({ ...last, model_path: outputs.modelPath, summary_path: outputs.summaryPath });
    return { history: result.history, ...outputs };
  } catch (error) {
    cluster?.setProgress({ state: JobState.FAILED });
    await cluster?.stopAll(StopReason.JOB_FAILED, (error as Error).message).catch(() => {});
    await outDir.discardIfEmpty();
    throw error;
  } finally {
    await locals?.stop(5000);
    server.forceShutdown();
  }
}
