/**
 * `train` (distributed): the coordinator serves gRPC, admits workers (its own local worker
 * processes and remote ones), and runs the synchronous trainer over them.
 */
import { resolve } from 'node:path';
import { Server, type ServerCredentials } from '@grpc/grpc-js';
import {
  type Logger,
  readWeights,
  ShardlineError,
  selectBackend,
  writeWeights,
} from '@shardline/core';
import {
  applyServerFlowControlWindow,
  CoordinatorServiceDefinition,
  type DataType,
  DEFAULT_CHUNK_BYTES,
  Exchange,
  exchangeLogFields,
  type JobSpec,
  JobState,
  SERVER_OPTIONS,
  StopReason,
} from '@shardline/protocol';
import { runSynchronousTraining } from '@shardline/training';
import { HealthImplementation } from 'grpc-health-check';
import type { ClusterObserver } from '../dashboard/runDashboard.js';
import {
  checkpointOptions,
  finishRun,
  type JobSources,
  prepareJobInputs,
  type RunControl,
  type TrainResult,
} from '../job.js';
import { pluginRequirements, wireHyperparameters } from '../jobModel.js';
import { recordRunEvents } from '../report/recorder.js';
import type { Reporter } from '../reporter.js';
import { prepareOutDir } from '../runOutputs.js';
import { resolveExchange, type TrainConfig } from '../trainConfig.js';
import { createCluster } from './cluster.js';
import { type HealthPort, serveHealthPort } from './healthListen.js';
import { type LocalWorkers, startLocalWorkers } from './localProcesses.js';
import { resolveServerSecurity, type ServerSecurityFlags } from './security.js';

/** The name probes ask the health service about (the empty name means the whole server). */
export const COORDINATOR_SERVICE = 'shardline.v1.CoordinatorService';

/** Settings only the distributed mode has. */
export interface DistributedSettings {
  /** host:port to listen on; port 0 picks a free one. */
  listen: string;
  /**
   * host:port of a plaintext port serving only the gRPC health service, for probes that cannot
   * use `listen` (healthListen.ts); none by default.
   */
  healthListen?: string;
  localWorkers: number;
  minWorkers: number;
  /** Encoding of gradients on the wire. */
  gradientDtype: DataType;
  /** Encoding of weights on the wire; 16-bit types round the workers' copy, never the master. */
  weightsDtype: DataType;
  /** Joins beyond this many attached workers are refused (0: no limit). */
  maxWorkers: number;
  /** A worker that has not returned its share this long after a step began is dropped. */
  workerTimeoutMs: number;
  /** How long to wait below --min-workers before giving up. */
  waitTimeoutMs: number;
  /** Token and TLS flags (security.ts); none: plaintext, no token, loopback only. */
  security?: ServerSecurityFlags;
}

function bind(server: Server, address: string, credentials: ServerCredentials): Promise<number> {
  return new Promise((resolvePort, reject) =>
    server.bindAsync(address, credentials, (error, port) =>
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

/**
 * Runs a whole distributed job. `dashboard` (the run's, when it has one) counts refusals and
 * watches the cluster's workers and traffic.
 */
export async function trainDistributed(
  requested: TrainConfig,
  settings: DistributedSettings,
  given: Reporter,
  logger: Logger,
  streams: { stderr: { write(chunk: string): unknown } },
  control: RunControl = {},
  sources: JobSources = {},
  dashboard?: ClusterObserver,
): Promise<TrainResult> {
  const started = Date.now();
  // Every event also goes to <out>/events.jsonl, the record report.html is built from.
  const reporter = recordRunEvents(given, logger);
  let config = requested;
  // Security first: bad PEM files or an unprotected non-loopback --listen fail before any work.
  const security = resolveServerSecurity(settings.security ?? {}, settings, logger);
  const outDir = await prepareOutDir(resolve(config.out), config.resume);
  const server = new Server({ ...SERVER_OPTIONS });
  const health = new HealthImplementation({
    '': 'NOT_SERVING',
    [COORDINATOR_SERVICE]: 'NOT_SERVING',
  });
  let locals: LocalWorkers | undefined;
  let cluster: ReturnType<typeof createCluster> | undefined;
  let healthPort: HealthPort | undefined;
  try {
    const selection = await selectBackend(config.backend, { logger });
    const { data, resolved, layout } = await prepareJobInputs(config, 'describe', logger, sources);
    dashboard?.serveTestImages(data.testSet);
    // Once, for the whole job: every worker follows the JobSpec it joined with. The resolved
    // mode is what checkpoints and summary.json record.
    const choice = resolveExchange(requested.exchange, {
      workers: Math.max(settings.minWorkers, settings.localWorkers),
      remote: Math.max(0, settings.minWorkers - settings.localWorkers),
      parameterCount: layout.size,
    });
    config = { ...requested, exchange: choice.exchange };
    logger.info('exchange mode', { exchange: choice.exchange, reason: choice.reason });
    if (choice.exchange === 'ring' && security.tls === 'tls') {
      // A warning rather than a refusal: with TLS but no client certificates required, some
      // workers may still bring one; those without cannot serve a TLS peer endpoint.
      logger.warn(
        'ring mode with TLS: each worker serves its peer endpoint with its own certificate (--tls-cert and --tls-key, allowing server and client authentication and listing its peer address), and peers check it against --tls-ca; workers without one are refused by this job. Require client certificates here (--tls-ca) to catch that at Join, or use --exchange star',
      );
    }
    const ring = choice.exchange === 'ring';
    const { trainCount, testCount, classNames } = data;
    const model = resolved.model;
    const params = readWeights(model, layout);
    const job: JobSpec = {
      jobId: `${Date.now().toString(36)}-${process.pid}`,
      modelName: resolved.label,
      hyperparameters: wireHyperparameters(resolved.hyperparameters),
      datasetName: data.label,
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
      model: resolved.artifacts,
      plugins: pluginRequirements(resolved.plugins),
      dataset: data.folder?.spec,
      exchange: ring ? Exchange.RING : Exchange.STAR,
      // What every replica runs in ring mode; in star mode the coordinator runs it and workers
      // ignore it. The learning rate of each step comes with its CommitStep.
      optimizer: {
        kind: config.optimizer,
        momentum: config.momentum,
        weightDecay: config.weightDecay,
      },
    };
    // The decoded folder is in the cache file now; the coordinator itself trains on nothing.
    const datasetFile = data.folder
      ? {
          path: data.folder.cachePath,
          fingerprint: data.folder.spec.fingerprint,
          size: Number(data.folder.spec.cacheBytes),
        }
      : undefined;
    const checkpoints = await checkpointOptions(config, outDir.path, layout, logger);
    cluster = createCluster({
      job,
      layout,
      classNames,
      ...(datasetFile && datasetFile.size > 0 ? { datasetFile } : {}),
      minWorkers: settings.minWorkers,
      maxWorkers: settings.maxWorkers,
      waitTimeoutMs: settings.waitTimeoutMs,
      workerTimeoutMs: settings.workerTimeoutMs,
      reporter,
      logger,
      ...(dashboard ? { onRefusal: dashboard.refused } : {}),
    });
    dashboard?.watchCluster(cluster);
    server.addService(
      CoordinatorServiceDefinition,
      security.protect(CoordinatorServiceDefinition, cluster.service, logger, dashboard?.refused),
    );
    // The standard gRPC health service, for orchestrators' readiness and liveness probes. It is
    // not behind the token: probes carry no secrets, and it reveals nothing but SERVING.
    health.addToServer(server);
    const port = await bind(server, settings.listen, security.credentials);
    // The same statuses on the plaintext health port, which opens only once --listen is bound,
    // so a probe that reaches it knows the coordinator is reachable too.
    if (settings.healthListen !== undefined) {
      healthPort = await serveHealthPort(health, settings.healthListen);
      logger.info('health service listening (plaintext, health only)', {
        address: healthPort.address,
      });
    }
    health.setStatus('', 'SERVING');
    health.setStatus(COORDINATOR_SERVICE, 'SERVING');
    applyServerFlowControlWindow(server);
    const host = settings.listen.slice(0, settings.listen.lastIndexOf(':'));
    const address = `${host}:${port}`;
    logger.info('coordinator listening', {
      address,
      min_workers: settings.minWorkers,
      local_workers: settings.localWorkers,
      ...exchangeLogFields(),
    });
    reporter.started({
      mode: 'distributed',
      listen: address,
      ...(healthPort ? { health_listen: healthPort.address } : {}),
      model: resolved.label,
      dataset: data.label,
      backend: selection.backend,
      parameters: layout.size,
      layout_fingerprint: layout.fingerprint,
      train_samples: trainCount,
      test_samples: testCount,
      epochs: config.epochs,
      batch_size: config.batchSize,
      learning_rate: config.learningRate,
      optimizer: config.optimizer,
      exchange: choice.exchange,
      seed: config.seed,
      steps_per_epoch: Math.ceil(trainCount / config.batchSize),
      class_names: [...classNames],
      local_workers: settings.localWorkers,
      min_workers: settings.minWorkers,
      out: outDir.path,
      ...(checkpoints.resume ? { resumed_from_step: checkpoints.resume.step } : {}),
    });
    if (settings.localWorkers > 0) {
      const c = cluster;
      // Same token (by env, never argv) and TLS settings as remote workers; see security.ts.
      const link = security.localWorkers(address);
      locals = startLocalWorkers({
        count: settings.localWorkers,
        coordinator: link.coordinator,
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
          // Absolute paths: the coordinator's plugins, by the same files, on its own workers.
          ...resolved.plugins.flatMap((plugin) => ['--plugin', plugin.path]),
          ...link.args,
        ],
        env: link.env,
        // Routine records go to <out>/logs/<name>.log; warnings and errors to stderr as well.
        out: outDir.path,
        logFormat: config.logFormat,
        stderr: streams.stderr,
        // A worker that never joined failed to start (bad data, bad flags): fail the job with its
        // words rather than wait. One that did join is a worker failure like any other: the
        // cluster has already dropped it and the run goes on without it.
        onUnexpectedExit: (error, name) => {
          if (c.hasAttached(name))
            logger.warn('a local worker exited', { worker: name, reason: error.message });
          else c.abort(error);
        },
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
    const testLabels = data.testLabels;
    const result = await runSynchronousTraining({
      config,
      layout,
      params,
      trainCount,
      testCount,
      classNames,
      ...(testLabels ? { testLabels } : {}),
      membership: cluster,
      reporter: tracking,
      logger,
      workerTimeoutMs: settings.workerTimeoutMs,
      exchange: choice.exchange,
      ...checkpoints,
      ...(control.signal ? { signal: control.signal } : {}),
      ...(control.shouldStop ? { shouldStop: control.shouldStop } : {}),
      ...(control.stopSignal ? { stopSignal: control.stopSignal } : {}),
    });
    cluster.setProgress({ state: result.completed ? JobState.DONE : JobState.FAILED });
    health.setStatus(COORDINATOR_SERVICE, 'NOT_SERVING');
    await cluster.stopAll(
      result.completed ? StopReason.JOB_DONE : StopReason.SHUTDOWN,
      result.completed
        ? 'Training finished.'
        : 'The coordinator was asked to stop; the run can be resumed.',
    );
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
      rejectedReports: cluster.rejections(),
      data,
      plugins: resolved.plugins,
    });
  } catch (error) {
    cluster?.setProgress({ state: JobState.FAILED });
    health.setStatus(COORDINATOR_SERVICE, 'NOT_SERVING');
    await cluster?.stopAll(StopReason.JOB_FAILED, (error as Error).message).catch(() => {});
    await outDir.discardIfEmpty();
    throw error;
  } finally {
    await locals?.stop(5000);
    cluster?.close();
    healthPort?.close();
    server.forceShutdown();
  }
}
