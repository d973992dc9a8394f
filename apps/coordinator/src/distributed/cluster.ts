/**
 * The coordinator's side of the wire: the gRPC service, the group of workers it has admitted,
 * and the membership the synchronous trainer asks for before every step.
 */
import { randomUUID } from 'node:crypto';
import {
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import { type Logger, type ParamLayout, ShardlineError } from '@shardline/core';
import {
  type CoordinatorServiceServer,
  checkProtocolVersion,
  type EpochMetrics as EpochMetricsMessage,
  type GetStatusRequest,
  type GetStatusResponse,
  type JobSpec,
  JobState,
  type JoinRequest,
  type JoinResponse,
  type LeaveRequest,
  type LeaveResponse,
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
import {
  createRemoteWorker,
  createWeightsEncoder,
  type RemoteWorker,
  type RemoteWorkerInfo,
} from './remoteWorker.js';

/** Options of {@link createCluster}. */
export interface ClusterOptions {
  job: JobSpec;
  layout: ParamLayout;
  /** Steps wait until at least this many workers are attached. */
  minWorkers: number;
  /** Joins beyond this many workers are refused (0: no limit). */
  maxWorkers?: number;
  /** How long `members()` waits below the minimum before failing the job (0: forever). */
  waitTimeoutMs?: number;
  /**
   * An idle worker (no share outstanding) silent this long is dropped (0: never). Workers send
   * an application heartbeat every `heartbeatIntervalMs`; during a step the per-step deadline
   * applies instead, since a worker cannot send anything while its event loop computes.
   */
  workerTimeoutMs?: number;
  /** Told to workers in JoinResponse. Default 2,000 ms. */
  heartbeatIntervalMs?: number;
  reporter: Reporter;
  logger: Logger;
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
}

/** Creates the cluster and its gRPC service implementation. */
export function createCluster(options: ClusterOptions): Cluster {
  const { job, layout, reporter, logger } = options;
  const joined = new Map<string, RemoteWorkerInfo>();
  const attached: RemoteWorker[] = [];
  const encoder = createWeightsEncoder(job, layout);
  const traffic = { sent: 0, received: 0 };
  let rejectedGradients = 0;
  let aborted: ShardlineError | undefined;
  const progress: JobProgress = {
    state: JobState.WAITING_FOR_WORKERS,
    epoch: 0,
    step: 0,
    weightsVersion: 0,
  };
  let waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  const wake = () => {
    const ready = waiters;
    waiters = [];
    for (const w of ready) w.resolve();
  };

  const removed = new Set<string>();
  const everAttached = new Set<string>();
  /** Takes a worker out of the group once, however many ways it left (stream end, drop...). */
  const remove = (w: RemoteWorker, why: string) => {
    if (removed.has(w.id)) return;
    removed.add(w.id);
    const i = attached.indexOf(w);
    if (i >= 0) attached.splice(i, 1);
    joined.delete(w.id);
    w.fail(new ShardlineError('NETWORK', `Worker ${w.name} left: ${why}.`));
    reporter.workerLeft({ worker: w.name, worker_id: w.id, reason: why, workers: attached.length });
  };

  const join = (
    call: ServerUnaryCall<JoinRequest, JoinResponse>,
    callback: sendUnaryData<JoinResponse>,
  ) => {
    const request = call.request;
    try {
      checkProtocolVersion(request.protocolVersion, { role: 'worker', name: request.workerName });
    } catch (error) {
      logger.warn('refused a worker', {
        worker: request.workerName,
        reason: (error as Error).message,
      });
      return callback(toGrpcStatus(error));
    }
    const max = options.maxWorkers ?? 0;
    if (max > 0 && joined.size >= max) {
      logger.warn('refused a worker: the job is full', {
        worker: request.workerName,
        max_workers: max,
      });
      return callback(
        toGrpcStatus(
          new ShardlineError(
            'INVALID_ARGUMENT',
            `The job already has ${joined.size} workers, its maximum (--max-workers ${max}). Start this worker for another job, or raise --max-workers.`,
          ),
        ),
      );
    }
    const info: RemoteWorkerInfo = {
      id: randomUUID(),
      name: request.workerName || `worker-${joined.size + 1}`,
      hostname: request.hostname,
      pid: request.pid,
      backend: request.backend,
    };
    joined.set(info.id, info);
    logger.debug('worker joined', { worker: info.name, id: info.id });
    callback(null, {
      workerId: info.id,
      protocolVersion: PROTOCOL_VERSION,
      job,
      weightsVersion: 0n,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 2000,
    });
  };

  const train = (call: ServerDuplexStream<TrainRequest, TrainResponse>) => {
    let worker: RemoteWorker | undefined;
    const detach = (why: string) => {
      if (!worker) return;
      const w = worker;
      worker = undefined;
      remove(w, why);
    };
    call.on('data', (message: TrainRequest) => {
      if (worker) return worker.receive(message);
      if (message.kind?.$case !== 'attach') {
        call.emit(
          'error',
          toGrpcStatus(
            new ShardlineError(
              'INVALID_ARGUMENT',
              'The first message on a Train stream must be attach.',
            ),
          ),
        );
        return;
      }
      const info = joined.get(message.kind.value.workerId);
      if (!info) {
        // emit('error') ends the call with this status; destroy() would end it with none.
        call.emit(
          'error',
          toGrpcStatus(
            Object.assign(
              new Error(`Unknown worker id ${message.kind.value.workerId}: call Join first.`),
              { code: status.FAILED_PRECONDITION },
            ),
          ),
        );
        return;
      }
      worker = createRemoteWorker(info, call, job, layout, encoder, traffic, () => {
        rejectedGradients++;
        logger.warn('rejected a non-finite gradient', {
          worker: info.name,
          rejected_total: rejectedGradients,
        });
      });
      attached.push(worker);
      everAttached.add(info.name);
      reporter.workerJoined({
        worker: info.name,
        worker_id: info.id,
        hostname: info.hostname,
        pid: info.pid,
        backend: info.backend,
        // The address the stream came from ("10.0.0.2:51234"): which machine a worker is on when
        // several share a hostname, or when a NAT or proxy sits in between.
        peer: call.getPeer(),
        workers: attached.length,
      });
      wake();
    });
    call.on('end', () => {
      detach('it closed its stream');
      call.end();
    });
    call.on('error', (error) => detach(`its stream failed (${error.message})`));
    call.on('cancelled', () => detach('it cancelled its stream'));
  };

  const leave = (
    call: ServerUnaryCall<LeaveRequest, LeaveResponse>,
    callback: sendUnaryData<LeaveResponse>,
  ) => {
    joined.delete(call.request.workerId);
    callback(null, {});
  };

  const getStatus = (
    _call: ServerUnaryCall<GetStatusRequest, GetStatusResponse>,
    callback: sendUnaryData<GetStatusResponse>,
  ) => {
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
    callback(null, {
      protocolVersion: PROTOCOL_VERSION,
      job,
      state: progress.state,
      epoch: progress.epoch,
      step: BigInt(progress.step),
      weightsVersion: BigInt(progress.weightsVersion),
      workers,
      lastEpoch: progress.lastEpoch,
    });
  };

  const silenceMs = options.workerTimeoutMs ?? 0;
  const sweep =
    silenceMs > 0
      ? setInterval(() => {
          const now = Date.now();
          for (const w of [...attached]) {
            if (!w.busy && now - w.lastSeenMs > silenceMs) {
              const reason = `no heartbeat for ${Math.round((now - w.lastSeenMs) / 1000)} s (--worker-timeout ${silenceMs / 1000})`;
              logger.warn('dropping a silent worker', { worker: w.name, reason });
              w.stop(StopReasonEnum.EVICTED, reason);
              remove(w, reason);
            }
          }
        }, 1000)
      : undefined;
  sweep?.unref();

  return {
    hasAttached: (name) => everAttached.has(name),
    close() {
      if (sweep) clearInterval(sweep);
    },
    service: { join, train, leave, getStatus },
    attached: () => attached,
    setProgress(update) {
      Object.assign(progress, update);
    },
    traffic: () => ({ ...traffic }),
    async members(signal?: AbortSignal): Promise<readonly TrainingWorker[]> {
      const waitMs = options.waitTimeoutMs ?? 0;
      const giveUpAt = Date.now() + waitMs;
      let nextNotice = 0;
      for (;;) {
        if (aborted) throw aborted;
        if (signal?.aborted)
          throw new ShardlineError('CANCELLED', 'Training was interrupted before it finished.');
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
          logger.info('waiting for workers', {
            attached: attached.length,
            min_workers: options.minWorkers,
            ...(waitMs > 0 ? { gives_up_in_seconds: Math.ceil(left / 1000) } : {}),
          });
          nextNotice = Date.now() + 5000;
        }
        // Wake on a join, on abort, or in time for the next notice or the deadline.
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(resolve, Math.max(10, Math.min(5000, waitMs > 0 ? left : 5000)));
          waiters.push({
            resolve: () => {
              clearTimeout(timer);
              resolve();
            },
            reject: (e) => {
              clearTimeout(timer);
              reject(e);
            },
          });
          signal?.addEventListener('abort', () => resolve(), { once: true });
        });
      }
    },
    drop(worker, reason) {
      const w = attached.find((a) => a.id === worker.id);
      if (!w) return;
      // Tell it why, close its stream, and give its share to the others from the next try.
      w.stop(StopReasonEnum.EVICTED, reason);
      remove(w, `dropped: ${reason}`);
    },
    async stopAll(reason, message) {
      const closing = attached.map((w) => w.closed);
      for (const w of [...attached]) w.stop(reason, message);
      await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 2000))]);
    },
    abort(error) {
      aborted ??= error;
      const pending = waiters;
      waiters = [];
      for (const w of pending) w.reject(error);
      for (const w of [...attached]) w.fail(error);
    },
  };
}
