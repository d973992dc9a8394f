/**
 * One worker's life: join the coordinator (retrying while it is not up yet), load the job's
 * dataset and model, then serve the Train stream: take weights, compute the gradient of each
 * assigned share, evaluate test slices, until the coordinator says stop.
 *
 * In ring mode (JobSpec.exchange = EXCHANGE_RING) the worker keeps a replica instead of taking
 * weights, and all-reduces each step's gradient with the other members over its peer endpoint
 * (ringMember.ts). A ring step runs in the background while the stream is still read, so that
 * the coordinator's AbortStep (or a newer assignment, or stop) can call it off; the messages
 * that need its outcome (commit, evaluate, pull_state, state) wait for it to settle first.
 */
import { hostname } from 'node:os';
import { type ClientDuplexStream, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import {
  type BackendPreference,
  describeLayout,
  hasErrorCode,
  type Logger,
  type ParamLayout,
  readWeights,
  ShardlineError,
  selectBackend,
  toShardlineError,
} from '@shardline/core';
import { shareSize } from '@shardline/datasets';
import type { ClassificationState } from '@shardline/metrics';
import { loadPlugin } from '@shardline/models';
import {
  type AbortStep,
  CHANNEL_OPTIONS,
  type ClassificationCounts,
  type CommitStep,
  CoordinatorClient,
  type CoordinatorServiceClient,
  createTensorAssembler,
  DataType,
  decodeTensor,
  type Evaluate,
  Exchange,
  encodeTensor,
  exchangeLogFields,
  fromGrpcStatus,
  gradientMessages,
  type JobSpec,
  type JoinResponse,
  mapIterable,
  PROTOCOL_VERSION,
  type PullState,
  type ReplicaStateChunk,
  type StepAssignment,
  type Stop,
  StopReason,
  type TensorAssembler,
  type TrainRequest,
  type TrainResponse,
  type WeightsChunk,
  writeMessages,
} from '@shardline/protocol';
import {
  createLocalWorker,
  type ShareAssignment,
  type TrainingWorker,
  type WeightsSnapshot,
  warmUp,
} from '@shardline/training';
import type { LayersModel } from '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs';
import { retryWithBackoff } from './backoff.js';
import { loadWorkerJobData, type WorkerJobData } from './jobData.js';
import type { WorkerMonitor } from './metrics/workerMetrics.js';
import { openPeerEndpoint, type PeerEndpointChoice } from './peer/openPeerEndpoint.js';
import type { PeerEndpoint, PeerEndpointSettings } from './peer/peerEndpoint.js';
import { createRingMember, type RingMember } from './ringMember.js';
import { plaintextChannel, tlsFailure, type WorkerChannel } from './security.js';

/** Settings of one worker process. */
export interface WorkerOptions {
  /** host:port of the coordinator. */
  coordinator: string;
  name: string;
  backend: BackendPreference;
  dataDir?: string;
  download: boolean;
  /** Fetch an image-folder dataset from the coordinator when this machine has no copy. Default true. */
  fetchData?: boolean;
  /** The image-folder cache folder. Default: the user cache (`~/.cache/shardline/image-folders`). */
  cacheDir?: string;
  /**
   * Plugin modules (custom layer classes, `--plugin`), loaded before joining. Their SHA-256s go
   * with the Join, where a job whose model needs another plugin refuses this worker.
   */
  plugins?: readonly string[];
  /** How long to keep trying to reach the coordinator before giving up. */
  connectTimeoutMs: number;
  /** TLS and token (security.ts `resolveWorkerChannel`); default: plaintext, no token. */
  channel?: WorkerChannel;
  /**
   * The peer endpoint for ring mode (peer/peerEndpoint.ts): where it listens and what address
   * it advertises; `false` serves none, and the worker then joins without ring mode. Default
   * `{}`: listen on an ephemeral port of the address that reaches the coordinator. When the
   * channel uses TLS it is served with mutual TLS if the channel has a certificate and a CA
   * (`channel.peerTls`), and not at all otherwise (peer/openPeerEndpoint.ts).
   */
  peer?: PeerEndpointSettings | false;
  logger: Logger;
  signal?: AbortSignal;
  /** Hears what the worker does (its metrics: metrics/workerMetrics.ts). */
  monitor?: WorkerMonitor;
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
  plugins: readonly string[],
  peerAddress: string,
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
        // Ring mode needs a peer endpoint the other members can dial.
        capabilities: peerAddress === '' ? ['evaluate'] : ['evaluate', 'exchange.ring'],
        previousWorkerId: '',
        maxReceiveMessageBytes: CHANNEL_OPTIONS['grpc.max_receive_message_length'] as number,
        softwareVersion: '',
        pluginSha256: [...plugins],
        peerAddress,
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
  const pluginSha256: string[] = [];
  for (const path of options.plugins ?? []) {
    const plugin = await loadPlugin(path);
    pluginSha256.push(plugin.sha256);
    logger.info('plugin loaded', {
      plugin: plugin.path,
      sha256: plugin.sha256,
      classes: plugin.registeredClasses.join(',') || '(already registered)',
    });
  }
  const channel = options.channel ?? plaintextChannel();
  const client = new CoordinatorClient(options.coordinator, channel.credentials, {
    ...CHANNEL_OPTIONS,
    ...channel.options,
  });
  const cache: DataCache = {};
  const peerChoice = await openPeerEndpoint({
    peer: options.peer,
    coordinator: options.coordinator,
    channel,
    logger,
  });
  const peer = peerChoice.endpoint;
  try {
    // A worker outlives its coordinator's restarts: when the stream breaks it joins again (with
    // backoff, for up to --connect-timeout) and starts over from the weights it is sent, so it
    // never computes on stale weights.
    for (let session = 0; ; session++) {
      options.monitor?.connection('connecting');
      const joined = await retryWithBackoff(
        () => join(client, options.name, selection.backend, pluginSha256, peer?.advertised ?? ''),
        {
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
        },
      ).catch((e: unknown) => {
        throw isGrpcStatus(e) ? fromGrpcStatus(e) : toShardlineError(e);
      });
      const job = joined.job;
      if (!job)
        throw new ShardlineError('INTERNAL', 'The coordinator accepted the join but sent no job.');
      const log = logger.child({ worker: joined.workerId });
      options.monitor?.joined({
        workerId: joined.workerId,
        backend: selection.backend,
        rejoin: session > 0,
      });
      options.monitor?.connection('connected');
      log.info(session === 0 ? 'joined coordinator' : 'rejoined coordinator', {
        coordinator: options.coordinator,
        job: job.jobId,
        model: job.modelName,
        dataset: job.datasetName,
        ...exchangeLogFields(),
      });
      try {
        return await serve(client, joined.workerId, job, {
          options,
          log,
          cache,
          heartbeatMs: joined.heartbeatIntervalMs,
          peer: peerChoice,
          channel,
        });
      } catch (error) {
        const e = toShardlineError(error);
        if (options.signal?.aborted || !isConnectionLoss(e)) throw e;
        options.monitor?.connection('disconnected');
        log.warn(
          e.details.rejoin === 'replica'
            ? 'left the training stream; rejoining'
            : 'lost the coordinator; rejoining',
          { reason: e.message },
        );
      }
    }
  } finally {
    options.monitor?.connection('stopped');
    client.close();
    await peer?.close();
  }
}

/**
 * Errors that mean the coordinator went away (rather than refused or failed this worker): a
 * broken stream, and a deadline that ran out while reaching it.
 */
function isConnectionLoss(error: ShardlineError): boolean {
  return hasErrorCode(error, 'CONNECTION_LOST') || hasErrorCode(error, 'TIMEOUT');
}

/** Images in the warm-up step: enough to run every kernel, few enough to be quick on a CPU. */
const WARM_UP_BATCH = 32;

/** The dataset of the last job, kept across rejoins when the next job needs the same data. */
interface DataCache {
  key?: string;
  data?: WorkerJobData;
}

/**
 * The job's model, built from the topology the coordinator sent (never from a registry name, so
 * a model from a file needs no copy here). Its initial weights do not matter: the coordinator
 * sends the weights of every step before the step. Layer classes from plugins must be
 * registered first (--plugin), which the coordinator checked at Join.
 */
async function buildJobModel(job: JobSpec): Promise<LayersModel> {
  const json = job.model?.topologyJson;
  if (!json) {
    throw new ShardlineError(
      'MISMATCH',
      'The coordinator sent no model topology (JobSpec.model). Run the same Shardline version on every machine.',
    );
  }
  try {
    return await tf.models.modelFromJSON({
      modelTopology: JSON.parse(json),
    } as Parameters<typeof tf.models.modelFromJSON>[0]);
  } catch (error) {
    const message = (error as Error)?.message ?? String(error);
    const unknown = /Unknown layer: (\w+)/.exec(message)?.[1];
    throw new ShardlineError(
      'MISMATCH',
      unknown === undefined
        ? `This worker could not build the job's model ${job.modelName}: ${message}. Run the same Shardline and TensorFlow.js versions on every machine.`
        : `The job's model ${job.modelName} uses layer class "${unknown}", which no plugin loaded here registers. ` +
            'Start the worker with --plugin <module> for the module that registers it (the coordinator\u2019s --plugin file).',
      { cause: error },
    );
  }
}

/** What a job needs on this worker: its data, its model and an in-process worker over them. */
interface PreparedJob {
  model: LayersModel;
  layout: ParamLayout;
  local: TrainingWorker;
  /** Images in the training set, from which each share's size follows. */
  trainCount: number;
}

/** One Train stream's state, shared by the message handlers below. */
interface Session {
  readonly call: ClientDuplexStream<TrainRequest, TrainResponse>;
  readonly workerId: string;
  readonly job: JobSpec;
  readonly prepared: PreparedJob;
  readonly assembler: TensorAssembler;
  readonly log: Logger;
  weights: WeightsSnapshot;
  steps: number;
  /** Compute seconds of the steps since the last summary line. */
  readonly recent: number[];
  /** Set in ring mode only. */
  readonly ring?: RingSession;
  /** The worker's monitor (WorkerOptions.monitor), when it has one. */
  readonly monitor?: WorkerMonitor;
}

/** A Train session's ring-mode state. */
interface RingSession {
  readonly member: RingMember;
  /** The ring step running in the background, if any. */
  running?: RunningStep;
  /** Set when a background step failed in a way that ends the session. */
  failure?: { error: unknown };
}

/** A ring step in flight: what aborts it, and what settles when it is over. */
interface RunningStep {
  readonly step: number;
  readonly controller: AbortController;
  /** Resolves when the step is over; never rejects (a failure lands in RingSession.failure). */
  done: Promise<void>;
}

/** What {@link serve} needs besides the job. */
interface ServeContext {
  options: WorkerOptions;
  log: Logger;
  cache: DataCache;
  heartbeatMs: number;
  /** The peer endpoint, when this worker serves one, or why it serves none. */
  peer: PeerEndpointChoice;
  channel: WorkerChannel;
}

/** Loads the job's dataset (or reuses the last one), builds its model, checks it, warms up. */
async function prepareJob(
  job: JobSpec,
  workerId: string,
  context: {
    client: CoordinatorServiceClient;
    options: WorkerOptions;
    log: Logger;
    cache: DataCache;
  },
): Promise<PreparedJob> {
  const { options, log, cache } = context;
  const key = JSON.stringify([
    job.datasetName,
    job.dataset?.fingerprint ?? '',
    job.limitTrain,
    job.limitTest,
  ]);
  if (cache.key !== key || !cache.data) {
    // Let the last job's images go before loading the next job's.
    delete cache.data;
    cache.data = await loadWorkerJobData(job, {
      client: context.client,
      workerId,
      options: {
        ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
        download: options.download,
        fetchData: options.fetchData ?? true,
        ...(options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir }),
        ...(options.signal ? { signal: options.signal } : {}),
      },
      log,
    });
    cache.key = key;
  }
  const data = cache.data;
  const model = await buildJobModel(job);
  const layout = describeLayout(model);
  if (layout.fingerprint !== job.layoutFingerprint || layout.size !== job.parameterCount) {
    model.dispose();
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
    classNames: data.classNames,
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
  return { model, layout, local, trainCount: data.train.count };
}

/**
 * Serves one Train stream: attaches, then answers each message the coordinator sends until it
 * says stop. Sends heartbeats between steps.
 */
async function serve(
  client: CoordinatorServiceClient,
  workerId: string,
  job: JobSpec,
  context: ServeContext,
): Promise<WorkerOutcome> {
  const { options, log, cache, heartbeatMs } = context;
  const ringMode = job.exchange === Exchange.RING;
  if (ringMode && context.peer.endpoint === undefined) {
    throw new ShardlineError(
      'MISMATCH',
      `Job ${job.jobId} trains in ring mode, where workers exchange gradients among themselves, but this worker serves no peer endpoint: ${context.peer.why.replace(/\.?$/, '.')} ` +
        'Or start the coordinator with --exchange star.',
    );
  }
  const peer: PeerEndpoint | undefined = context.peer.endpoint;
  const prepared = await prepareJob(job, workerId, { client, options, log, cache });
  const { model, layout } = prepared;
  let ring: RingSession | undefined;
  try {
    ring =
      ringMode && peer
        ? {
            member: createRingMember({
              job,
              layout,
              workerId,
              server: peer.server,
              ...(context.channel.tokenValue === undefined
                ? {}
                : { token: context.channel.tokenValue }),
              ...(context.channel.peerTls === undefined
                ? {}
                : { peerTls: context.channel.peerTls }),
              logger: log,
            }),
          }
        : undefined;
  } catch (error) {
    model.dispose();
    throw error;
  }
  const session: Session = {
    call: client.train(),
    workerId,
    job,
    prepared,
    assembler: createTensorAssembler({
      expectedFingerprint: layout.fingerprint,
      expectedElementCount: layout.size,
      maxChunkBytes: job.maxChunkBytes,
      label: 'weights from the coordinator',
      // Reused: each version is written into the model at the next assignment, before the
      // coordinator sends another version.
      reuseBuffer: true,
    }),
    log,
    weights: { version: -1, params: readWeights(model, layout) },
    steps: 0,
    recent: [],
    ...(ring ? { ring } : {}),
    ...(options.monitor ? { monitor: options.monitor } : {}),
  };
  const { call } = session;
  const heartbeat =
    heartbeatMs > 0 ? setInterval(() => sendHeartbeat(session), heartbeatMs) : undefined;
  const onAbort = () => call.cancel();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    call.write({
      kind: { $case: 'attach', value: { workerId, weightsVersion: undefined } },
    } satisfies TrainRequest);
    for await (const message of call as AsyncIterable<TrainResponse>) {
      const outcome = await handleMessage(session, message);
      if (outcome) return outcome;
    }
    throw new ShardlineError(
      'CONNECTION_LOST',
      `The coordinator at ${options.coordinator} closed the training stream without saying stop.`,
    );
  } catch (error) {
    if (!isGrpcStatus(error)) throw error;
    const e = fromGrpcStatus(error, {
      stream: { cancelledHere: options.signal?.aborted === true },
    });
    // The coordinator no longer knows this worker: its join was forgotten (it took longer than
    // --worker-timeout to attach) or the coordinator restarted. Joining again is the answer.
    if (hasErrorCode(e, 'NOT_FOUND')) {
      throw new ShardlineError(
        'CONNECTION_LOST',
        `The coordinator refused to attach: ${e.message}`,
        {
          cause: e,
        },
      );
    }
    throw e;
  } finally {
    if (heartbeat) clearInterval(heartbeat);
    options.signal?.removeEventListener('abort', onAbort);
    // The stream may still end with an error status after this session left it (a ring
    // worker rejoining after a failed commit); without a listener that would throw.
    call.on('error', () => {});
    if (ring) await endRing(ring);
    model.dispose();
  }
}

/** Stops a running ring step (its model is about to be disposed) and leaves the formation. */
async function endRing(ring: RingSession): Promise<void> {
  const running = ring.running;
  if (running) {
    running.controller.abort(
      new ShardlineError('CANCELLED', "This worker's Train session ended during the step."),
    );
    await running.done;
  }
  await ring.member.close();
}

/** True for the status a failed grpc-js call rejects with (its `code` is a number). */
function isGrpcStatus(error: unknown): error is ServiceError {
  return typeof (error as Partial<ServiceError> | undefined)?.code === 'number';
}

/**
 * Proof of life between steps and between evaluation batches (during a step the event loop
 * computes and the coordinator's per-step deadline applies instead; an evaluation has no
 * deadline, so these heartbeats are how the coordinator tells a slow evaluation from a lost one).
 */
function sendHeartbeat(session: Session): void {
  const { call } = session;
  if (call.writableEnded || call.destroyed) return;
  call.write({
    kind: {
      $case: 'heartbeat',
      value: { step: BigInt(Math.max(0, session.steps)), unixTimeMs: BigInt(Date.now()) },
    },
  } satisfies TrainRequest);
}

/** Handles one message from the coordinator; returns the outcome when it says stop. */
async function handleMessage(
  session: Session,
  message: TrainResponse,
): Promise<WorkerOutcome | undefined> {
  const kind = message.kind;
  if (!kind) return undefined;
  switch (kind.$case) {
    case 'weights':
      receiveWeights(session, kind.value);
      return undefined;
    case 'assignment':
      if (kind.value.ring)
        await startRingStep(session, requireRing(session, 'a ring assignment'), kind.value);
      else await computeAssignedShare(session, kind.value);
      return undefined;
    case 'evaluate':
      if (session.ring) await settled(session.ring);
      await evaluateAssignedSlice(session, kind.value);
      return undefined;
    case 'stop':
      if (session.ring) await callOff(session.ring, 'the coordinator stopped this worker');
      return stopped(session, kind.value);
    case 'commit':
      await commitStep(session, requireRing(session, 'commit'), kind.value);
      return undefined;
    case 'pullState':
      await sendReplicaState(session, requireRing(session, 'pull_state'), kind.value);
      return undefined;
    case 'state':
      await receiveReplicaState(session, requireRing(session, 'state'), kind.value);
      return undefined;
    case 'abort':
      await abortRingStep(session, requireRing(session, 'abort'), kind.value);
      return undefined;
    default:
      return assertNever(kind);
  }
}

/** The session's ring state, or a MISMATCH: the coordinator sent a ring message in star mode. */
function requireRing(session: Session, what: string): RingSession {
  if (session.ring) return session.ring;
  throw new ShardlineError(
    'MISMATCH',
    `The coordinator sent ${what}, a ring-mode message, but job ${session.job.jobId} trains in star mode (JobSpec.exchange). Run the same Shardline release on every machine.`,
  );
}

/**
 * Waits for the ring step in flight, if any, to be over: what the next message does depends on
 * its outcome. Rethrows a failure that ends the session.
 */
async function settled(ring: RingSession): Promise<void> {
  if (ring.running) await ring.running.done;
  if (ring.failure) throw ring.failure.error;
}

/**
 * Aborts the ring step in flight (only if it is `step`, when given) and waits for it to be
 * over. A step it does not abort is not waited for: a stale AbortStep must not hold up the
 * stream while another step runs.
 */
async function callOff(ring: RingSession, why: string, step?: number): Promise<void> {
  const running = ring.running;
  if (running && step !== undefined && running.step !== step) return;
  running?.controller.abort(
    new ShardlineError('CANCELLED', `Step ${running.step} was called off: ${why}.`),
  );
  await settled(ring);
}

/**
 * A ring step's assignment: calls off a step still in flight (the coordinator has moved on),
 * then runs this one in the background, so the stream is read meanwhile.
 */
async function startRingStep(
  session: Session,
  ring: RingSession,
  a: StepAssignment,
): Promise<void> {
  await callOff(ring, `step ${a.step} was assigned`);
  const controller = new AbortController();
  const running: RunningStep = { step: Number(a.step), controller, done: Promise.resolve() };
  running.done = runRingStep(session, ring, a, controller.signal)
    .catch((error: unknown) => {
      ring.failure ??= { error };
    })
    .finally(() => {
      if (ring.running === running) delete ring.running;
    });
  ring.running = running;
}

/** One ring step, from the share to the report; see ringMember.ts. */
async function runRingStep(
  session: Session,
  ring: RingSession,
  a: StepAssignment,
  signal: AbortSignal,
): Promise<void> {
  const { prepared, log } = session;
  const outcome = await ring.member.runStep(
    a,
    (weights) => prepared.local.computeShare(shareOf(session, a), weights, signal),
    signal,
  );
  const step = Number(a.step);
  switch (outcome.kind) {
    case 'reported': {
      const report = outcome.report;
      if (!writable(session)) return;
      session.call.write({
        kind: { $case: 'ringReport', value: report },
      } satisfies TrainRequest);
      if (report.failure !== '') {
        session.monitor?.ringAllReduce({
          seconds: report.exchangeSeconds,
          sentBytes: Number(report.bytesSent),
          failed: true,
        });
        log.info('ring all-reduce failed', {
          step,
          ring_id: report.ringId,
          suspect: report.suspectWorkerId || undefined,
          reason: report.failure,
        });
        return;
      }
      countStep(session, a, report.result!.sampleCount, report.result!.computeSeconds);
      session.monitor?.ringAllReduce({
        seconds: report.exchangeSeconds,
        sentBytes: Number(report.bytesSent),
        failed: false,
      });
      if (log.enabled('debug'))
        log.debug('ring step reduced', {
          step,
          ring_id: report.ringId,
          rank: a.rank,
          samples: report.result!.sampleCount,
          total_samples: Number(report.totalSamples),
          exchange_seconds: report.exchangeSeconds,
          checksum: report.checksum,
        });
      return;
    }
    case 'failed':
      log.warn('ring step failed on this worker', {
        step,
        code: outcome.error.code,
        reason: outcome.error.message,
      });
      sendWorkerError(session, outcome.error, a.step, false);
      return;
    case 'aborted':
      log.debug('ring step called off', {
        step,
        reason: String((outcome.reason as Error)?.message ?? outcome.reason),
      });
      return;
  }
}

/** Whether the Train stream still takes messages from this worker. */
function writable(session: Session): boolean {
  return !session.call.writableEnded && !session.call.destroyed;
}

/** Tells the coordinator that this worker could not do what it asked. */
function sendWorkerError(
  session: Session,
  error: ShardlineError,
  step: bigint,
  fatal: boolean,
): void {
  if (!writable(session)) return;
  session.call.write({
    kind: { $case: 'error', value: { code: error.code, message: error.message, step, fatal } },
  } satisfies TrainRequest);
}

/**
 * CommitStep: applies the staged average. A replica whose staged step differs from what every
 * other member reported must not guess: it says so (fatal), leaves the stream and joins again,
 * and the coordinator pushes it the state of the others.
 */
async function commitStep(session: Session, ring: RingSession, c: CommitStep): Promise<void> {
  await settled(ring);
  try {
    ring.member.commit(c);
  } catch (error) {
    const e = toShardlineError(error);
    if (e.code !== 'MISMATCH') throw e;
    session.log.warn('cannot commit the step; rejoining for the replica state', {
      step: Number(c.step),
      reason: e.message,
    });
    sendWorkerError(session, e, c.step, true);
    await endStream(session.call);
    throw new ShardlineError(
      'CONNECTION_LOST',
      `This worker could not commit step ${c.step} (${e.message}); it left the Train stream to join again and be sent the replica state.`,
      { cause: e, details: { rejoin: 'replica' } },
    );
  }
  if (session.log.enabled('debug'))
    session.log.debug('step committed', {
      step: Number(c.step),
      learning_rate: c.learningRate,
      checksum: c.checksum,
    });
}

/** How long a worker leaving its stream waits for what it wrote to be handed to gRPC. */
const END_STREAM_WAIT_MS = 5_000;

/** Half-closes the stream and waits until everything written before is on its way. */
async function endStream(call: ClientDuplexStream<TrainRequest, TrainResponse>): Promise<void> {
  if (call.writableFinished || call.destroyed) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      call.off('finish', done);
      call.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, END_STREAM_WAIT_MS);
    call.on('finish', done);
    call.on('close', done);
    if (!call.writableEnded) call.end();
  });
}

/** AbortStep: calls off the step if it is still in flight, and drops what it staged. */
async function abortRingStep(session: Session, ring: RingSession, a: AbortStep): Promise<void> {
  const step = Number(a.step);
  await callOff(ring, `the coordinator aborted it (${a.reason})`, step);
  const dropped = ring.member.discard(step);
  session.log.info('step aborted by the coordinator', {
    step,
    reason: a.reason,
    dropped_staged: dropped,
  });
}

/** PullState: sends the replica's weights and optimizer state. */
async function sendReplicaState(session: Session, ring: RingSession, p: PullState): Promise<void> {
  await settled(ring);
  let chunks: Iterable<ReplicaStateChunk>;
  try {
    chunks = ring.member.stateChunks(p.requestId);
  } catch (error) {
    sendWorkerError(
      session,
      toShardlineError(error),
      BigInt(Math.max(0, ring.member.replica.version)),
      false,
    );
    return;
  }
  await writeMessages(
    session.call,
    mapIterable(chunks, (value): TrainRequest => {
      session.monitor?.tensorBytes('out', value.chunk?.data.byteLength ?? 0);
      return { kind: { $case: 'state', value } };
    }),
  );
  session.log.debug('replica state sent', {
    request_id: Number(p.requestId),
    version: ring.member.replica.version,
  });
}

/** A chunk of a replica state pushed by the coordinator: loaded once whole. */
async function receiveReplicaState(
  session: Session,
  ring: RingSession,
  chunk: ReplicaStateChunk,
): Promise<void> {
  await settled(ring);
  session.monitor?.tensorBytes('in', chunk.chunk?.data.byteLength ?? 0);
  const version = ring.member.receiveState(chunk);
  if (version !== undefined) {
    session.log.info('replica state loaded', {
      version,
      checksum: ring.member.replica.checksum(),
    });
  }
}

/** A weights chunk: once a whole version has arrived, it is the version to compute with. */
function receiveWeights(session: Session, chunk: WeightsChunk): void {
  const tensor = session.assembler.push(chunk.chunk!);
  if (!tensor) return;
  session.monitor?.tensorBytes('in', tensor.bytes.byteLength);
  session.weights = {
    version: Number(tensor.meta.version),
    params: decodeTensor(tensor.bytes, tensor.meta.dtype),
  };
}

/** A step's assignment: computes this worker's share and sends the gradient with its numbers. */
async function computeAssignedShare(session: Session, a: StepAssignment): Promise<void> {
  const { job, weights, prepared, log } = session;
  const { layout } = prepared;
  if (Number(a.weightsVersion) !== weights.version) {
    throw new ShardlineError(
      'INTERNAL',
      `Assigned step ${a.step} at weights version ${a.weightsVersion}, but this worker holds version ${weights.version}.`,
    );
  }
  const result = await prepared.local.computeShare(shareOf(session, a), weights);
  const gradient = result.sampleCount > 0 ? result.gradient : new Float32Array(layout.size);
  const meta = {
    dtype: job.gradientDtype,
    shape: [layout.size],
    elementCount: layout.size,
    layoutFingerprint: layout.fingerprint,
    version: BigInt(weights.version),
    step: a.step,
  };
  const encoded = encodeTensor(gradient, job.gradientDtype);
  await writeMessages(
    session.call,
    gradientMessages(
      meta,
      encoded,
      {
        sampleCount: result.sampleCount,
        loss: result.loss,
        correct: result.correct,
        computeSeconds: result.computeSeconds,
      },
      job.maxChunkBytes,
    ),
  );
  session.monitor?.tensorBytes('out', encoded.byteLength);
  countStep(session, a, result.sampleCount, result.computeSeconds);
  if (log.enabled('debug'))
    log.debug('step done', {
      step: Number(a.step),
      rank: a.rank,
      samples: result.sampleCount,
      computeSeconds: result.computeSeconds,
    });
}

/** The share of step `a` this worker computes, as the in-process worker takes it. */
function shareOf(session: Session, a: StepAssignment): ShareAssignment {
  const { prepared, job } = session;
  return {
    epoch: a.epoch,
    step: Number(a.step),
    stepInEpoch: a.stepInEpoch,
    rank: a.rank,
    worldSize: a.worldSize,
    samples: shareSize(
      prepared.trainCount,
      job.globalBatchSize,
      a.stepInEpoch,
      a.rank,
      a.worldSize,
    ),
  };
}

/** Counts a finished step, with an info line of mean compute time every STEP_LOG_EVERY steps. */
function countStep(
  session: Session,
  a: StepAssignment,
  sampleCount: number,
  computeSeconds: number,
): void {
  session.steps++;
  session.monitor?.stepComputed(computeSeconds, sampleCount);
  session.recent.push(computeSeconds);
  if (session.recent.length === STEP_LOG_EVERY) {
    session.log.info('steps computed', {
      steps: session.steps,
      share: sampleCount,
      rank: a.rank,
      world_size: a.worldSize,
      mean_compute_seconds: session.recent.reduce((x, y) => x + y, 0) / session.recent.length,
    });
    session.recent.length = 0;
  }
}

/**
 * An evaluation request: evaluates the slice and sends the mergeable metrics state. In ring
 * mode it evaluates the replica, which must be at the version asked for, and sends the weights'
 * checksum along, so the coordinator can tell that every replica holds the same bits.
 */
async function evaluateAssignedSlice(session: Session, e: Evaluate): Promise<void> {
  const ring = session.ring;
  if (ring && Number(e.weightsVersion) !== ring.member.replica.version) {
    const version = ring.member.replica.version;
    sendWorkerError(
      session,
      new ShardlineError(
        'MISMATCH',
        `Evaluation ${e.requestId} is asked at weights version ${e.weightsVersion}, but this worker's replica holds version ${version}. ` +
          'Commit the pending step or push the replica state first.',
      ),
      BigInt(Math.max(0, version)),
      false,
    );
    return;
  }
  const started = performance.now();
  const state = await session.prepared.local.evaluate(
    { start: e.start, end: e.end },
    ring ? ring.member.weights() : session.weights,
  );
  session.call.write({
    kind: {
      $case: 'evaluation',
      value: {
        requestId: e.requestId,
        counts: countsOf(state),
        computeSeconds: (performance.now() - started) / 1000,
        weightsChecksum: ring ? ring.member.replica.checksum() : '',
      },
    },
  } satisfies TrainRequest);
  session.monitor?.evaluated((performance.now() - started) / 1000);
}

/**
 * The wire form of an evaluation state. The class count, names, top-k list and epsilon stay
 * behind: the coordinator assigned the job and knows them.
 */
function countsOf(state: ClassificationState): ClassificationCounts {
  return {
    count: countOf('count', state.count),
    confusion: state.confusion.map((n, i) => countOf(`confusion[${i}]`, n)),
    topK: [...state.topK],
    topKHits: state.topKHits.map((n, i) => countOf(`topKHits[${i}]`, n)),
    lossSum: state.lossSum,
    reportedLossSum: state.reportedLossSum,
    reportedLossCount: countOf('reportedLossCount', state.reportedLossCount),
    misclassified: (state.misclassified ?? []).map((m) => ({
      index: countOf('misclassified index', m.index),
      label: m.label,
      predicted: m.predicted,
      confidence: m.confidence,
    })),
  };
}

/** A uint64 count for the wire; anything but a non-negative safe integer is a bug here. */
function countOf(name: string, value: number): bigint {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new ShardlineError(
      'INTERNAL',
      `The evaluation's ${name} is ${value}, expected a non-negative integer up to 2^53 - 1. ` +
        'This is a bug in the worker: report it with the worker log.',
    );
  }
  return BigInt(value);
}

const STOP_REASONS: Readonly<Record<number, WorkerOutcome['reason']>> = {
  [StopReason.JOB_DONE]: 'job-done',
  [StopReason.SHUTDOWN]: 'shutdown',
  [StopReason.EVICTED]: 'evicted',
  [StopReason.JOB_FAILED]: 'job-failed',
};

/** The coordinator said stop: ends the stream and reports why. */
function stopped(session: Session, stop: Stop): WorkerOutcome {
  const reason = STOP_REASONS[stop.reason] ?? 'shutdown';
  session.call.end();
  session.log.info('coordinator stopped this worker', {
    reason,
    message: stop.message,
    steps: session.steps,
  });
  return { workerId: session.workerId, reason, message: stop.message, steps: session.steps };
}

/** Compile-time proof that a switch handled every case of a oneof. */
function assertNever(value: never): never {
  throw new ShardlineError('INTERNAL', `Unhandled message kind: ${JSON.stringify(value)}`);
}
