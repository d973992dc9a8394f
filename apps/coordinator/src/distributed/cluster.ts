/**
 * The coordinator's side of the wire: the gRPC service, the group of workers it has admitted,
 * and the membership the synchronous trainer asks for before every step.
 */
import { randomUUID } from 'node:crypto';
import type {
  ServerDuplexStream,
  ServerUnaryCall,
  ServerWritableStream,
  sendUnaryData,
} from '@grpc/grpc-js';
import {
  hasErrorCode,
  type Logger,
  type ParamLayout,
  ShardlineError,
  toShardlineError,
} from '@shardline/core';
import {
  type CoordinatorServiceServer,
  checkProtocolVersion,
  type EpochMetrics as EpochMetricsMessage,
  Exchange,
  type FetchDatasetRequest,
  type FetchDatasetResponse,
  type GetStatusRequest,
  type GetStatusResponse,
  type JobSpec,
  JobState,
  type JoinRequest,
  type JoinResponse,
  type LeaveRequest,
  type LeaveResponse,
  type PluginRequirement,
  PROTOCOL_VERSION,
  type StopReason,
  StopReason as StopReasonEnum,
  type TrainRequest,
  type TrainResponse,
  toGrpcStatus,
  WorkerState,
} from '@shardline/protocol';
import type { Membership, TrainingWorker } from '@shardline/training';
import type { Reporter } from '../reporter.js';
import { type DatasetFile, serveDatasetFile } from './datasetTransfer.js';
import { REJECTION_REFUSALS, type RefusalHook, type RefusalReason } from './refusals.js';
import { createRemoteRingWorker } from './remoteRingWorker.js';
import {
  createRemoteWorker,
  createWeightsEncoder,
  cut,
  type RejectionReason,
  type RemoteWorker,
  type RemoteWorkerInfo,
  type WeightsEncoder,
} from './remoteWorker.js';

/** Options of {@link createCluster}. */
export interface ClusterOptions {
  job: JobSpec;
  layout: ParamLayout;
  /** The dataset's class names: evaluations are checked and merged against them. */
  classNames: readonly string[];
  /** Steps wait until at least this many workers are attached. */
  minWorkers: number;
  /** Joins beyond this many workers are refused (0: no limit). */
  maxWorkers?: number;
  /** How long `members()` waits below the minimum before failing the job (0: forever). */
  waitTimeoutMs?: number;
  /**
   * A worker silent this long is dropped (0: never), idle or evaluating. Workers send an
   * application heartbeat every `heartbeatIntervalMs`; during a step the per-step deadline
   * applies instead, since a worker cannot send anything while its event loop computes.
   */
  workerTimeoutMs?: number;
  /** Told to workers in JoinResponse. Default {@link heartbeatIntervalFor} `workerTimeoutMs`. */
  heartbeatIntervalMs?: number;
  /** The decoded image-folder file FetchDataset sends (jobs on an image folder). */
  datasetFile?: DatasetFile;
  reporter: Reporter;
  logger: Logger;
  /** Hears every join, attach and message refused, by reason (the dashboard's /metrics). */
  onRefusal?: RefusalHook;
}

/** Where the job stands, for GetStatus. */
export interface JobProgress {
  state: JobState;
  epoch: number;
  step: number;
  weightsVersion: number;
  lastEpoch?: EpochMetricsMessage;
}

/** The admitted workers and the service that admits them. */
export interface Cluster extends Membership {
  /** Records the job's progress, which GetStatus reports. */
  setProgress(progress: Partial<JobProgress>): void;
  readonly service: CoordinatorServiceServer;
  /** Workers attached right now, in rank order. */
  attached(): readonly RemoteWorker[];
  /** Tells every worker to stop and waits (briefly) for their streams to close. */
  stopAll(reason: StopReason, message: string): Promise<void>;
  /** Rejects pending and future `members()` calls with `error` (a local worker died, say). */
  abort(error: ShardlineError): void;
  /** Stops the background heartbeat check. */
  close(): void;
  /** Whether a worker of this name has ever attached. */
  hasAttached(name: string): boolean;
  /** Reports refused so far, by reason (summary.json's `rejected_reports`). */
  rejections(): Readonly<Record<RejectionReason, number>>;
}

/**
 * Bounds on what a Join may carry: every string and list in it is only logged or listed, and a
 * worker joining with a 3 MB name would otherwise be kept and echoed in every log line and
 * GetStatus answer. Over a bound the join is refused with INVALID_ARGUMENT.
 */
export const JOIN_LIMITS = {
  workerName: 128,
  hostname: 255,
  backend: 64,
  softwareVersion: 64,
  previousWorkerId: 64,
  capabilities: 32,
  capability: 64,
  supportedDtypes: 8,
  pluginSha256: 64,
  /** host:port: a 253-character DNS name, or a bracketed IPv6 address with a zone, and a port. */
  peerAddress: 272,
} as const;

/**
 * The capability (JoinRequest.capabilities) of a worker that serves a peer endpoint and can
 * train in ring mode; a ring job admits no worker without it.
 */
export const RING_CAPABILITY = 'exchange.ring';

/**
 * Joins that have not attached yet, at most. A join is forgotten when it has not attached within
 * --worker-timeout, but a burst inside that window must not pile up either.
 */
export const MAX_PENDING_JOINS = 256;

/** The cluster's state, shared by the handlers and the membership functions below. */
interface ClusterState {
  readonly options: ClusterOptions;
  /** Workers that called Join, by id, whether attached yet or not. */
  readonly joined: Map<string, RemoteWorkerInfo>;
  /** When each join that has not attached yet arrived (Date.now()). */
  readonly pendingSince: Map<string, number>;
  /**
   * Joins fetching the dataset right now, by id, with how many fetches each has open: they are
   * not forgotten while a transfer runs, however long it takes.
   */
  readonly fetching: Map<string, number>;
  readonly rejections: Record<RejectionReason, number>;
  /** Workers with an open Train stream, in rank order. */
  readonly attached: RemoteWorker[];
  /** Ids already taken out of the group (a worker leaves once, however many ways it left). */
  readonly removed: Set<string>;
  /**
   * Set by stopAll: the workers it told to stop, and why. Their streams close next (a worker
   * told to stop cancels its stream), which is the job ending, not those workers leaving it.
   */
  ended?: { ids: ReadonlySet<string>; reason: string };
  readonly everAttached: Set<string>;
  readonly encoder: WeightsEncoder;
  readonly traffic: { sent: number; received: number };
  readonly progress: JobProgress;
  /** `members()` calls waiting for workers: woken on a join, rejected on abort. */
  waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }>;
  aborted?: ShardlineError;
}

/** Creates the cluster and its gRPC service implementation. */
export function createCluster(options: ClusterOptions): Cluster {
  const state: ClusterState = {
    options,
    joined: new Map(),
    pendingSince: new Map(),
    fetching: new Map(),
    rejections: { 'non-finite gradient': 0, report: 0, evaluation: 0 },
    attached: [],
    removed: new Set(),
    everAttached: new Set(),
    encoder: createWeightsEncoder(options.job, options.layout),
    traffic: { sent: 0, received: 0 },
    progress: { state: JobState.WAITING_FOR_WORKERS, epoch: 0, step: 0, weightsVersion: 0 },
    waiters: [],
  };
  const sweep = startHeartbeatSweep(state);
  return {
    hasAttached: (name) => state.everAttached.has(name),
    rejections: () => ({ ...state.rejections }),
    close() {
      if (sweep) clearInterval(sweep);
    },
    service: {
      join: handleUnary(state, 'Join', join),
      train: (call) => handleTrain(state, call),
      leave: handleUnary(state, 'Leave', leave),
      getStatus: handleUnary(state, 'GetStatus', getStatus),
      fetchDataset: (call) => handleFetchDataset(state, call),
    },
    attached: () => state.attached,
    setProgress(update) {
      Object.assign(state.progress, update);
    },
    traffic: () => ({ ...state.traffic }),
    members: (signal) => waitForMembers(state, signal),
    drop(worker, reason) {
      const w = state.attached.find((a) => a.id === worker.id);
      if (!w) return;
      // Tell it why, close its stream, and give its share to the others from the next try.
      w.stop(StopReasonEnum.EVICTED, reason);
      removeWorker(state, w, `dropped: ${reason}`);
    },
    async stopAll(reason, message) {
      state.ended = {
        ids: new Set(state.attached.map((w) => w.id)),
        reason: `told to stop: ${message.replace(/\.$/, '')}`,
      };
      const closing = state.attached.map((w) => w.closed);
      for (const w of [...state.attached]) w.stop(reason, message);
      await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 2000))]);
    },
    abort(error) {
      state.aborted ??= error;
      const pending = state.waiters;
      state.waiters = [];
      for (const w of pending) w.reject(error);
      for (const w of [...state.attached]) w.fail(error);
    },
  };
}

/**
 * The one place a unary handler's outcome becomes the RPC's answer: a value, or whatever it
 * threw converted by `toGrpcStatus` (as nice-grpc's server does for every method).
 */
function handleUnary<Req, Res>(
  state: ClusterState,
  method: string,
  handler: (state: ClusterState, request: Req) => Res,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => {
    let response: Res;
    try {
      response = handler(state, call.request);
    } catch (error) {
      const e = toShardlineError(error);
      state.options.logger.debug(`${method} refused`, { code: e.code, reason: e.message });
      callback(toGrpcStatus(e));
      return;
    }
    callback(null, response);
  };
}

/** Takes a worker out of the group once, however many ways it left (stream end, drop...). */
function removeWorker(state: ClusterState, w: RemoteWorker, why: string): void {
  if (state.removed.has(w.id)) return;
  state.removed.add(w.id);
  const i = state.attached.indexOf(w);
  if (i >= 0) state.attached.splice(i, 1);
  state.joined.delete(w.id);
  w.fail(new ShardlineError('CONNECTION_LOST', `Worker ${w.name} left: ${why}.`));
  const ended = state.ended?.ids.has(w.id) ? state.ended : undefined;
  if (ended) {
    // How the stream closed ("it cancelled its stream") is a detail here, not news.
    state.options.logger.debug('worker finished', { worker: w.name, stream: why });
  }
  state.options.reporter.workerLeft({
    worker: w.name,
    worker_id: w.id,
    reason: ended ? ended.reason : why,
    workers: state.attached.length,
    ...(ended ? { job_ended: true } : {}),
  });
}

/** Join: admits a worker of the same protocol version while the job has room for it. */
function join(state: ClusterState, request: JoinRequest): JoinResponse {
  const { options, joined } = state;
  // What a refusal is counted as: the check under way when it threw.
  let check: RefusalReason = 'protocol_version';
  try {
    checkProtocolVersion(request.protocolVersion, { role: 'worker', name: request.workerName });
    check = 'join_limits';
    checkJoinBounds(request);
    check = 'plugins';
    checkPlugins(request, options.job.plugins);
    check = 'ring_member';
    if (options.job.exchange === Exchange.RING) checkRingMember(request);
    check = 'pending_joins';
    if (state.pendingSince.size >= MAX_PENDING_JOINS) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `The coordinator already has ${state.pendingSince.size} joins that have not attached (at most ${MAX_PENDING_JOINS}). ` +
          'Attach the workers that joined (a join that does not attach within --worker-timeout is forgotten), then join again.',
      );
    }
    check = 'max_workers';
    const max = options.maxWorkers ?? 0;
    if (max > 0 && joined.size >= max) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `The job already has ${joined.size} workers, its maximum (--max-workers ${max}). Start this worker for another job, or raise --max-workers.`,
        { details: { max_workers: max } },
      );
    }
  } catch (error) {
    options.logger.warn('refused a worker', {
      worker: cut(request.workerName, JOIN_LIMITS.workerName),
      reason: toShardlineError(error).message,
    });
    options.onRefusal?.(check);
    throw error;
  }
  const info: RemoteWorkerInfo = {
    id: randomUUID(),
    name: request.workerName || `worker-${joined.size + 1}`,
    hostname: request.hostname,
    pid: request.pid,
    backend: request.backend,
    peerAddress: request.peerAddress,
  };
  joined.set(info.id, info);
  state.pendingSince.set(info.id, Date.now());
  options.logger.debug('worker joined', { worker: info.name, id: info.id });
  return {
    workerId: info.id,
    protocolVersion: PROTOCOL_VERSION,
    job: options.job,
    weightsVersion: 0n,
    heartbeatIntervalMs:
      options.heartbeatIntervalMs ?? heartbeatIntervalFor(options.workerTimeoutMs),
  };
}

/**
 * Every 2 s, or a quarter of `--worker-timeout` when that is shorter: a worker in the middle of
 * an evaluation batch sends its heartbeat late, and a late one must not read as silence.
 */
export function heartbeatIntervalFor(workerTimeoutMs: number | undefined): number {
  return workerTimeoutMs && workerTimeoutMs > 0 ? Math.min(2000, workerTimeoutMs / 4) : 2000;
}

/** Leave: forgets a worker that joined (it may not have attached). */
function leave(state: ClusterState, request: LeaveRequest): LeaveResponse {
  state.joined.delete(request.workerId);
  state.pendingSince.delete(request.workerId);
  return {};
}

/** GetStatus: the job's progress and every worker, attached or still preparing. */
function getStatus(state: ClusterState, _request: GetStatusRequest): GetStatusResponse {
  const { attached, joined, progress } = state;
  const attachedIds = new Set(attached.map((w) => w.id));
  const describe = (info: RemoteWorkerInfo) => ({
    workerId: info.id,
    workerName: info.name,
    hostname: info.hostname,
    pid: info.pid,
    backend: info.backend,
  });
  const workers = [
    ...attached.map((w, rank) => ({
      ...describe(w.info),
      state: WorkerState.TRAINING,
      rank,
      lastStep: BigInt(Math.max(0, w.lastStep)),
      lastSeenUnixMs: BigInt(w.lastSeenMs),
    })),
    // Joined but not attached yet: still loading data and building the model.
    ...[...joined.values()]
      .filter((info) => !attachedIds.has(info.id))
      .map((info) => ({
        ...describe(info),
        state: WorkerState.JOINED,
        rank: 0,
        lastStep: 0n,
        lastSeenUnixMs: 0n,
      })),
  ];
  return {
    protocolVersion: PROTOCOL_VERSION,
    job: state.options.job,
    state: progress.state,
    epoch: progress.epoch,
    step: BigInt(progress.step),
    weightsVersion: BigInt(progress.weightsVersion),
    workers,
    lastEpoch: progress.lastEpoch,
  };
}

/**
 * Train: the stream's first message attaches a joined worker; every later one goes to it. A
 * stream that ends, fails or is cancelled takes its worker out of the group.
 */
function handleTrain(state: ClusterState, call: ServerDuplexStream<TrainRequest, TrainResponse>) {
  let worker: RemoteWorker | undefined;
  const detach = (why: string) => {
    if (!worker) return;
    const w = worker;
    worker = undefined;
    removeWorker(state, w, why);
  };
  call.on('data', (message: TrainRequest) => {
    if (worker) return worker.receive(message);
    try {
      worker = attachWorker(state, call, message);
    } catch (error) {
      state.options.onRefusal?.(hasErrorCode(error, 'NOT_FOUND') ? 'unknown_worker' : 'bad_attach');
      // emit('error') ends the call with this status; destroy() would end it with none.
      call.emit('error', toGrpcStatus(error));
    }
  });
  call.on('end', () => {
    detach('it closed its stream');
    call.end();
  });
  call.on('error', (error) => detach(`its stream failed (${error.message})`));
  call.on('cancelled', () => detach('it cancelled its stream'));
}

/** Binds the worker named by an attach message to its stream and wakes waiting steps. */
function attachWorker(
  state: ClusterState,
  call: ServerDuplexStream<TrainRequest, TrainResponse>,
  message: TrainRequest,
): RemoteWorker {
  const { options } = state;
  if (message.kind?.$case !== 'attach') {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'The first message on a Train stream must be attach.',
    );
  }
  const workerId = message.kind.value.workerId;
  const info = state.pendingSince.has(workerId) ? state.joined.get(workerId) : undefined;
  if (!info) {
    // NOT_FOUND tells a real worker to join again: its join may have been forgotten because it
    // took longer than --worker-timeout to attach (or this coordinator restarted).
    throw new ShardlineError(
      'NOT_FOUND',
      `Unknown worker id ${cut(workerId, JOIN_LIMITS.previousWorkerId)}: call Join first (a join that does not attach within --worker-timeout is forgotten).`,
    );
  }
  state.pendingSince.delete(workerId);
  // The rejected report, if any, behind the message refused next (onRejected comes first).
  let rejection: RejectionReason | undefined;
  const context = {
    job: options.job,
    layout: options.layout,
    encoder: state.encoder,
    traffic: state.traffic,
    classNames: options.classNames,
    onRejected: (reason: RejectionReason) => {
      rejection = reason;
      state.rejections[reason]++;
      options.logger.warn('rejected a report', {
        worker: info.name,
        reason,
        rejected_total: Object.values(state.rejections).reduce((a, b) => a + b, 0),
      });
    },
    onRefused: () => {
      options.onRefusal?.(rejection ? REJECTION_REFUSALS[rejection] : 'unexpected_message');
      rejection = undefined;
    },
  };
  const worker =
    options.job.exchange === Exchange.RING
      ? createRemoteRingWorker(info, call, context)
      : createRemoteWorker(info, call, context);
  state.attached.push(worker);
  state.everAttached.add(info.name);
  options.reporter.workerJoined({
    worker: info.name,
    worker_id: info.id,
    hostname: info.hostname,
    pid: info.pid,
    backend: info.backend,
    // The address the stream came from ("10.0.0.2:51234"): which machine a worker is on when
    // several share a hostname, or when a NAT or proxy sits in between.
    peer: call.getPeer(),
    workers: state.attached.length,
  });
  const ready = state.waiters;
  state.waiters = [];
  for (const w of ready) w.resolve();
  return worker;
}

/**
 * Drops workers that sent nothing for `workerTimeoutMs`, checking every second, unless they are
 * busy with a step: a computing worker's event loop cannot send heartbeats, and the step's own
 * deadline applies instead. Evaluations have no deadline of their own (their length depends on
 * the test set and the model), so this sweep is what ends one a worker will never answer.
 */
function startHeartbeatSweep(state: ClusterState): NodeJS.Timeout | undefined {
  const silenceMs = state.options.workerTimeoutMs ?? 0;
  if (silenceMs <= 0) return undefined;
  const sweep = setInterval(() => {
    const now = Date.now();
    forgetStaleJoins(state, now, silenceMs);
    for (const w of [...state.attached]) {
      if (w.busy || now - w.lastSeenMs <= silenceMs) continue;
      const reason = `no heartbeat for ${Math.round((now - w.lastSeenMs) / 1000)} s (--worker-timeout ${silenceMs / 1000})`;
      state.options.logger.warn('dropping a silent worker', { worker: w.name, reason });
      w.stop(StopReasonEnum.EVICTED, reason);
      removeWorker(state, w, reason);
    }
  }, 1000);
  sweep.unref();
  return sweep;
}

/** Forgets joins that have not attached within `ms`: a worker that comes later joins again. */
function forgetStaleJoins(state: ClusterState, now: number, ms: number): void {
  let forgotten = 0;
  for (const [id, since] of state.pendingSince) {
    if (now - since <= ms || state.fetching.has(id)) continue;
    state.pendingSince.delete(id);
    state.joined.delete(id);
    forgotten++;
  }
  if (forgotten > 0) {
    state.options.logger.info('forgot joins that never attached', {
      joins: forgotten,
      worker_timeout_seconds: ms / 1000,
    });
  }
}

/** Refuses a Join whose strings or lists are longer than {@link JOIN_LIMITS}. */
function checkJoinBounds(request: JoinRequest): void {
  const over = (field: string, found: number, limit: number, unit: string) =>
    new ShardlineError(
      'INVALID_ARGUMENT',
      `The join's ${field} has ${found} ${unit}, expected at most ${limit}. Shorten it (a worker's --name, for instance) and join again.`,
      { details: { field, found, limit } },
    );
  const strings: Array<[string, string, number]> = [
    ['worker_name', request.workerName, JOIN_LIMITS.workerName],
    ['hostname', request.hostname, JOIN_LIMITS.hostname],
    ['backend', request.backend, JOIN_LIMITS.backend],
    ['software_version', request.softwareVersion, JOIN_LIMITS.softwareVersion],
    ['previous_worker_id', request.previousWorkerId, JOIN_LIMITS.previousWorkerId],
    ['peer_address', request.peerAddress, JOIN_LIMITS.peerAddress],
  ];
  for (const [field, value, limit] of strings) {
    if (value.length > limit) throw over(field, value.length, limit, 'characters');
  }
  if (request.capabilities.length > JOIN_LIMITS.capabilities) {
    throw over('capabilities', request.capabilities.length, JOIN_LIMITS.capabilities, 'entries');
  }
  for (const capability of request.capabilities) {
    if (capability.length > JOIN_LIMITS.capability) {
      throw over('capability', capability.length, JOIN_LIMITS.capability, 'characters');
    }
  }
  if (request.pluginSha256.length > JOIN_LIMITS.pluginSha256) {
    throw over('plugin_sha256', request.pluginSha256.length, JOIN_LIMITS.pluginSha256, 'entries');
  }
  if (request.supportedDtypes.length > JOIN_LIMITS.supportedDtypes) {
    throw over(
      'supported_dtypes',
      request.supportedDtypes.length,
      JOIN_LIMITS.supportedDtypes,
      'entries',
    );
  }
}

/**
 * Refuses, in a ring job, a worker that cannot be a ring member: one without a peer endpoint or
 * without the capability, or whose endpoint is not an address its peers could dial.
 */
function checkRingMember(request: JoinRequest): void {
  const hasCapability = request.capabilities.includes(RING_CAPABILITY);
  if (!hasCapability || request.peerAddress === '') {
    const found = !hasCapability
      ? `it did not announce the capability "${RING_CAPABILITY}"${request.peerAddress === '' ? ' and serves no peer endpoint' : ''}`
      : 'it serves no peer endpoint (its join carries no peer_address)';
    throw new ShardlineError(
      'MISMATCH',
      `This job exchanges gradients in a ring among the workers (--exchange ring), so every worker must serve a peer endpoint, but ${found}. ` +
        'Start the worker with --peer-listen host:port (and --peer-advertise host:port when its peers must dial another address, behind NAT or in a container), ' +
        'with a Shardline release that supports ring mode; a worker using TLS serves one only with --tls-cert, --tls-key and --tls-ca (a certificate allowing server and client authentication that lists its peer address). Or run the coordinator with --exchange star.',
      { details: { field: 'peer_address' } },
    );
  }
  checkPeerAddress(request.peerAddress);
}

/** Port 1 to 65535 after a DNS name, an IPv4 address or a bracketed IPv6 address. */
const PEER_ADDRESS = /^(\[[0-9A-Fa-f:.]+(%[\w.-]+)?\]|[A-Za-z0-9_.-]+):(\d{1,5})$/;

/**
 * Refuses a peer address other workers could not dial: not host:port, port 0 or above 65535, or
 * the unspecified address (0.0.0.0 or [::], which a worker may listen on but no peer can reach).
 */
export function checkPeerAddress(address: string): void {
  const match = PEER_ADDRESS.exec(address);
  const port = match ? Number(match[3]) : 0;
  const refuse = (problem: string) =>
    new ShardlineError(
      'INVALID_ARGUMENT',
      `The join's peer_address ${JSON.stringify(cut(address, JOIN_LIMITS.peerAddress))} ${problem}. ` +
        'Give the worker --peer-advertise host:port, the address its peers can dial.',
      { details: { field: 'peer_address' } },
    );
  if (!match) throw refuse('is not host:port (a name or IPv4 address, or [IPv6], then :port)');
  if (port < 1 || port > 65535) throw refuse(`has port ${match[3]}, expected 1 to 65535`);
  const host = match[1]!;
  if (host === '0.0.0.0' || /^\[(0*:)+0*\]$/.test(host)) {
    throw refuse('is the unspecified address, which its peers cannot dial');
  }
}

/**
 * Refuses a worker that has not loaded every plugin the job's model needs, by content: the same
 * layer class name from another file could compute something else, and replicas must agree.
 */
function checkPlugins(request: JoinRequest, plugins: readonly PluginRequirement[]): void {
  const loaded = new Set(request.pluginSha256);
  const missing = plugins.filter((p) => !loaded.has(p.sha256));
  if (missing.length === 0) return;
  const list = missing
    .map((p) => {
      const classes = p.classNames.length > 0 ? `, registering ${p.classNames.join(', ')}` : '';
      return `${p.name} (sha256 ${p.sha256.slice(0, 12)}...${classes})`;
    })
    .join('; ');
  const other =
    request.pluginSha256.length > 0
      ? ` It loaded ${request.pluginSha256.length} other plugin file(s): a different version of a file counts as another plugin.`
      : '';
  throw new ShardlineError(
    'MISMATCH',
    `This job's model needs the plugin ${list}, which this worker has not loaded.${other} ` +
      `Start the worker with ${missing.map((p) => `--plugin <path to ${p.name}>`).join(' ')}, using the coordinator's file.`,
    { details: { missing: missing.map((p) => p.sha256) } },
  );
}

/**
 * FetchDataset: sends the decoded dataset to a joined worker. The join is kept (not forgotten
 * after --worker-timeout) while the transfer runs, and its clock restarts when it ends, so a
 * large dataset on a slow link does not cost the worker its place.
 */
async function handleFetchDataset(
  state: ClusterState,
  call: ServerWritableStream<FetchDatasetRequest, FetchDatasetResponse>,
): Promise<void> {
  const id = call.request.workerId;
  const known = state.joined.has(id);
  if (known) state.fetching.set(id, (state.fetching.get(id) ?? 0) + 1);
  try {
    await serveDatasetFile(call, {
      file: state.options.datasetFile,
      isJoined: (workerId) => state.joined.has(workerId),
      maxChunkBytes: state.options.job.maxChunkBytes,
      logger: state.options.logger,
    });
  } finally {
    if (known) {
      const open = (state.fetching.get(id) ?? 1) - 1;
      if (open > 0) state.fetching.set(id, open);
      else state.fetching.delete(id);
      if (state.pendingSince.has(id)) state.pendingSince.set(id, Date.now());
    }
  }
}

/**
 * The attached workers once there are at least `minWorkers`, waiting for joins until then (and
 * failing the job after `waitTimeoutMs`). Logs a notice every 5 s while it waits.
 */
async function waitForMembers(
  state: ClusterState,
  signal: AbortSignal | undefined,
): Promise<readonly TrainingWorker[]> {
  const { options, attached } = state;
  const waitMs = options.waitTimeoutMs ?? 0;
  const giveUpAt = Date.now() + waitMs;
  let nextNotice = 0;
  for (;;) {
    if (state.aborted) throw state.aborted;
    if (signal?.aborted) {
      throw new ShardlineError('CANCELLED', 'Training was interrupted before it finished.');
    }
    if (attached.length >= options.minWorkers) return [...attached];
    const left = giveUpAt - Date.now();
    if (waitMs > 0 && left <= 0) {
      throw new ShardlineError(
        'TIMEOUT',
        `Waited ${waitMs / 1000} s for ${options.minWorkers} workers (--min-workers), but only ${attached.length} attached. ` +
          'Start more shardline-worker processes pointing at this coordinator, or lower --min-workers; raise --wait-timeout to wait longer.',
      );
    }
    if (Date.now() >= nextNotice) {
      options.logger.info('waiting for workers', {
        attached: attached.length,
        min_workers: options.minWorkers,
        ...(waitMs > 0 ? { gives_up_in_seconds: Math.ceil(left / 1000) } : {}),
      });
      nextNotice = Date.now() + 5000;
    }
    // Wake on a join, on abort, or in time for the next notice or the deadline.
    await nextWake(state, Math.max(10, Math.min(5000, waitMs > 0 ? left : 5000)), signal);
  }
}

/** Resolves on the next attach, after `ms`, or on `signal`; rejects when the cluster aborts. */
function nextWake(state: ClusterState, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    state.waiters.push({
      resolve: done,
      reject: (e) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        reject(e);
      },
    });
  });
}
