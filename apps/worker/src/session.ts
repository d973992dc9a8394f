/**
 * One worker's life: join the coordinator (retrying while it is not up yet), load the job's
 * dataset and model, then serve the Train stream: take weights, compute the gradient of each
 * assigned share, evaluate test slices, until the coordinator says stop.
 */
import { hostname } from 'node:os';
import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import {
  type BackendPreference,
  describeLayout,
  heapTuning,
  type Logger,
  readWeights,
  ShardlineError,
  selectBackend,
  toShardlineError,
} from '@shardline/core';
import { loadDataset } from '@shardline/datasets';
import { createModel } from '@shardline/models';
import {
  CHANNEL_OPTIONS,
  CoordinatorClient,
  type CoordinatorServiceClient,
  CRC32_IMPLEMENTATION,
  createTensorAssembler,
  DataType,
  decodeTensor,
  encodeTensor,
  fromGrpcStatus,
  gradientMessages,
  type JobSpec,
  type JoinResponse,
  PROTOCOL_VERSION,
  StopReason,
  type TrainRequest,
  type TrainResponse,
  writeMessages,
} from '@shardline/protocol';
import { createLocalWorker, type WeightsSnapshot, warmUp } from '@shardline/training';
import { retryWithBackoff } from './backoff.js';
import { plaintextChannel, tlsFailure, type WorkerChannel } from './security.js';

/** Settings of one worker process. */
export interface WorkerOptions {
  /** host:port of the coordinator. */
  coordinator: string;
  name: string;
  backend: BackendPreference;
  dataDir?: string;
  download: boolean;
  /** How long to keep trying to reach the coordinator before giving up. */
  connectTimeoutMs: number;
  /** TLS and token (security.ts `resolveWorkerChannel`); default: plaintext, no token. */
  channel?: WorkerChannel;
  logger: Logger;
  signal?: AbortSignal;
}

/** How a worker's session ended. */
export interface WorkerOutcome {
  workerId: string;
  reason: 'job-done' | 'shutdown' | 'evicted' | 'job-failed';
  message: string;
  steps: number;
}

/** Steps between the info-level summaries of compute time. */
const STEP_LOG_EVERY = 50;

const RETRYABLE = new Set<number>([
  status.UNAVAILABLE,
  status.DEADLINE_EXCEEDED,
  status.RESOURCE_EXHAUSTED,
]);

function join(
  client: CoordinatorServiceClient,
  name: string,
  backend: string,
): Promise<JoinResponse> {
  return new Promise((resolve, reject) => {
    client.join(
      {
        protocolVersion: PROTOCOL_VERSION,
        workerName: name,
        backend,
        hostname: hostname(),
        pid: process.pid,
        supportedDtypes: [DataType.FLOAT32, DataType.FLOAT16, DataType.BFLOAT16],
        capabilities: ['evaluate'],
        previousWorkerId: '',
        maxReceiveMessageBytes: CHANNEL_OPTIONS['grpc.max_receive_message_length'] as number,
        softwareVersion: '',
      },
      new Metadata(),
      { deadline: Date.now() + 10_000 },
      (error, response) => (error ? reject(error) : resolve(response)),
    );
  });
}

/** Joins the coordinator and trains until the job ends. Rejects with a ShardlineError. */
export async function runWorker(options: WorkerOptions): Promise<WorkerOutcome> {
  const { logger } = options;
  const selection = await selectBackend(options.backend, { logger });
  const channel = options.channel ?? plaintextChannel();
  const client = new CoordinatorClient(options.coordinator, channel.credentials, {
    ...CHANNEL_OPTIONS,
    ...channel.options,
  });
  const cache: DataCache = {};
  try {
    // A worker outlives its coordinator's restarts: when the stream breaks it joins again (with
    // backoff, for up to --connect-timeout) and starts over from the weights it is sent, so it
    // never computes on stale weights.
    for (let session = 0; ; session++) {
      const joined = await retryWithBackoff(() => join(client, options.name, selection.backend), {
        deadlineMs: options.connectTimeoutMs,
        // A failed TLS handshake looks like UNAVAILABLE but will fail the same way every time.
        retryable: (e) => RETRYABLE.has((e as ServiceError).code) && !tlsFailure(e),
        onRetry: (e, attempt, delayMs) =>
          logger.info(
            session === 0
              ? 'coordinator not reachable yet, retrying'
              : 'coordinator gone, trying to rejoin',
            {
              coordinator: options.coordinator,
              attempt,
              delayMs,
              reason: (e as Error).message,
            },
          ),
        ...(options.signal ? { signal: options.signal } : {}),
      }).catch((e: unknown) => {
        throw (e as ServiceError).code !== undefined
          ? fromGrpcStatus(e as ServiceError)
          : toShardlineError(e);
      });
      const job = joined.job;
      if (!job)
        throw new ShardlineError('INTERNAL', 'The coordinator accepted the join but sent no job.');
      const log = logger.child({ worker: joined.workerId });
      log.info(session === 0 ? 'joined coordinator' : 'rejoined coordinator', {
        coordinator: options.coordinator,
        job: job.jobId,
        model: job.modelName,
        dataset: job.datasetName,
        // What the exchange runs with, for anyone comparing its speed across machines.
        checksum: `crc32-${CRC32_IMPLEMENTATION}`,
        heap_growing_percent: heapTuning()?.percent ?? 'v8-default',
      });
      try {
        return await serve(
          client,
          joined.workerId,
          job,
          options,
          log,
          cache,
          joined.heartbeatIntervalMs,
        );
      } catch (error) {
        const e = toShardlineError(error);
        if (options.signal?.aborted || !isConnectionLoss(e)) throw e;
        log.warn('lost the coordinator; rejoining', { reason: e.message });
      }
    }
  } finally {
    client.close();
  }
}

/** Errors that mean the coordinator went away (rather than refused or failed this worker). */
function isConnectionLoss(error: ShardlineError): boolean {
  return (
    error.code === 'NETWORK' ||
    (error.code === 'CANCELLED' && /unavailable|closed|reset|went away/i.test(error.message)) ||
    error.code === 'TIMEOUT'
  );
}

/** Images in the warm-up step: enough to run every kernel, few enough to be quick on a CPU. */
const WARM_UP_BATCH = 32;

/** The dataset of the last job, kept across rejoins when the next job needs the same data. */
interface DataCache {
  key?: string;
  data?: Awaited<ReturnType<typeof loadDataset>>;
}

async function serve(
  client: CoordinatorServiceClient,
  workerId: string,
  job: JobSpec,
  options: WorkerOptions,
  log: Logger,
  cache: DataCache,
  heartbeatMs: number,
): Promise<WorkerOutcome> {
  const key = JSON.stringify([job.datasetName, job.limitTrain, job.limitTest]);
  if (cache.key !== key || !cache.data) {
    cache.data = await loadDataset(job.datasetName, {
      ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
      ...(job.limitTrain > 0 ? { limitTrain: job.limitTrain } : {}),
      ...(job.limitTest > 0 ? { limitTest: job.limitTest } : {}),
      download: options.download,
      progress: 'lines',
      logger: log,
    });
    cache.key = key;
  }
  const data = cache.data;
  const hyperparameters = JSON.parse(job.hyperparametersJson || '{}') as Record<string, unknown>;
  const model = createModel(job.modelName, { ...hyperparameters, seed: job.seed });
  const layout = describeLayout(model);
  if (layout.fingerprint !== job.layoutFingerprint || layout.size !== job.parameterCount) {
    throw new ShardlineError(
      'MISMATCH',
      `This worker built ${job.modelName} with layout ${layout.fingerprint} (${layout.size} parameters), but the coordinator's is ` +
        `${job.layoutFingerprint} (${job.parameterCount}). Run the same Shardline version on every machine.`,
    );
  }
  const local = createLocalWorker({
    id: workerId,
    model,
    layout,
    train: data.train,
    test: data.test,
    classNames: data.descriptor.classNames,
    seed: job.seed,
    batchSize: job.globalBatchSize,
    augment: job.augment,
    evalBatchSize: job.evalBatchSize || 500,
  });
  // One-off backend costs (PTX compilation on new GPUs can take minutes) before attaching: the
  // coordinator lists a joined worker without a deadline, but drops one that misses a step's.
  const warmUpSeconds = warmUp(
    model,
    layout,
    data.train,
    Math.min(job.globalBatchSize, WARM_UP_BATCH),
  );
  log.info('warmed up', { seconds: Number(warmUpSeconds.toFixed(3)) });
  const assembler = createTensorAssembler({
    expectedFingerprint: layout.fingerprint,
    expectedElementCount: layout.size,
    maxChunkBytes: job.maxChunkBytes,
    label: 'weights from the coordinator',
    // Reused: each version is written into the model at the next assignment, before the
    // coordinator sends another version.
    reuseBuffer: true,
  });
  let weights: WeightsSnapshot = { version: -1, params: readWeights(model, layout) };
  let steps = 0;
  const recent: number[] = [];
  const call = client.train();
  // Proof of life between steps (during one, the event loop computes and the coordinator's
  // per-step deadline applies instead).
  const heartbeat =
    heartbeatMs > 0
      ? setInterval(() => {
          if (call.writableEnded || call.destroyed) return;
          call.write({
            kind: {
              $case: 'heartbeat',
              value: { step: BigInt(Math.max(0, steps)), unixTimeMs: BigInt(Date.now()) },
            },
          } satisfies TrainRequest);
        }, heartbeatMs)
      : undefined;
  const onAbort = () => call.cancel();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    call.write({
      kind: { $case: 'attach', value: { workerId, weightsVersion: undefined } },
    } satisfies TrainRequest);
    for await (const message of call as AsyncIterable<TrainResponse>) {
      const kind = message.kind;
      if (!kind) continue;
      if (kind.$case === 'weights') {
        const tensor = assembler.push(kind.value.chunk!);
        if (tensor)
          weights = {
            version: Number(tensor.meta.version),
            params: decodeTensor(tensor.bytes, tensor.meta.dtype),
          };
      } else if (kind.$case === 'assignment') {
        const a = kind.value;
        if (Number(a.weightsVersion) !== weights.version) {
          throw new ShardlineError(
            'INTERNAL',
            `Assigned step ${a.step} at weights version ${a.weightsVersion}, but this worker holds version ${weights.version}.`,
          );
        }
        const result = await local.computeShare(
          {
            epoch: a.epoch,
            step: Number(a.step),
            stepInEpoch: a.stepInEpoch,
            rank: a.rank,
            worldSize: a.worldSize,
          },
          weights,
        );
        const gradient = result.sampleCount > 0 ? result.gradient : new Float32Array(layout.size);
        const meta = {
          dtype: job.gradientDtype,
          shape: [layout.size],
          elementCount: layout.size,
          layoutFingerprint: layout.fingerprint,
          version: BigInt(weights.version),
          step: a.step,
        };
        await writeMessages(
          call,
          gradientMessages(
            meta,
            encodeTensor(gradient, job.gradientDtype),
            {
              sampleCount: result.sampleCount,
              loss: result.loss,
              correct: result.correct,
              computeSeconds: result.computeSeconds,
            },
            job.maxChunkBytes,
          ),
        );
        steps++;
        recent.push(result.computeSeconds);
        if (recent.length === STEP_LOG_EVERY) {
          log.info('steps computed', {
            steps,
            share: result.sampleCount,
            rank: a.rank,
            world_size: a.worldSize,
            mean_compute_seconds: recent.reduce((x, y) => x + y, 0) / recent.length,
          });
          recent.length = 0;
        }
        if (log.enabled('debug'))
          log.debug('step done', {
            step: Number(a.step),
            rank: a.rank,
            samples: result.sampleCount,
            computeSeconds: result.computeSeconds,
          });
      } else if (kind.$case === 'evaluate') {
        const e = kind.value;
        const started = performance.now();
        const state = await local.evaluate({ start: e.start, end: e.end }, weights);
        call.write({
          kind: {
            $case: 'evaluation',
            value: {
              requestId: e.requestId,
              stateJson: JSON.stringify(state),
              computeSeconds: (performance.now() - started) / 1000,
            },
          },
        } satisfies TrainRequest);
      } else if (kind.$case === 'stop') {
        const reason =
          (
            {
              [StopReason.JOB_DONE]: 'job-done',
              [StopReason.SHUTDOWN]: 'shutdown',
              [StopReason.EVICTED]: 'evicted',
              [StopReason.JOB_FAILED]: 'job-failed',
            } as Record<number, WorkerOutcome['reason']>
          )[kind.value.reason] ?? 'shutdown';
        call.end();
        log.info('coordinator stopped this worker', { reason, message: kind.value.message, steps });
        return { workerId, reason, message: kind.value.message, steps };
      }
    }
    throw new ShardlineError(
      'NETWORK',
      `The coordinator at ${options.coordinator} closed the training stream without saying stop.`,
    );
  } catch (error) {
    const code = (error as ServiceError).code;
    if (typeof code === 'number') throw fromGrpcStatus(error as ServiceError);
    throw error;
  } finally {
    if (heartbeat) clearInterval(heartbeat);
    options.signal?.removeEventListener('abort', onAbort);
    model.dispose();
  }
}
