/**
 * A cluster (distributed/cluster.ts) driven in-process, for the tests of its membership logic:
 * workers join through the unary handler and attach on fake Train streams, with no sockets and
 * no processes, and what the cluster logs and reports about leaving workers is recorded.
 */
import { EventEmitter } from 'node:events';
import type { ServerDuplexStream, ServerUnaryCall } from '@grpc/grpc-js';
import { createLogger, type LogFields, type ParamLayout } from '@shardline/core';
import {
  DataType,
  DEFAULT_CHUNK_BYTES,
  JobSpec,
  JoinRequest,
  type JoinResponse,
  PROTOCOL_VERSION,
  type TrainRequest,
  type TrainResponse,
} from '@shardline/protocol';
import { type Cluster, type ClusterOptions, createCluster } from '../src/distributed/cluster.js';
import type { Reporter, WorkerLeftInfo } from '../src/reporter.js';

/** A four-parameter layout: the membership logic never looks inside the vector. */
export const layout: ParamLayout = { slots: [], size: 4, fingerprint: '00000000000000aa' };

/** The job the harness's cluster runs unless told otherwise: a star job of `layout`. */
export const job = JobSpec.fromPartial({
  jobId: 'job-1',
  modelName: 'mlp',
  datasetName: 'fashion-mnist',
  globalBatchSize: 8,
  epochs: 1,
  gradientDtype: DataType.FLOAT32,
  weightsDtype: DataType.FLOAT32,
  maxChunkBytes: DEFAULT_CHUNK_BYTES,
  layoutFingerprint: layout.fingerprint,
  parameterCount: layout.size,
});

/** How the worker at the other end of a {@link FakeTrainStream} behaves. */
export interface FakeWorkerOptions {
  /**
   * Cancel the stream as soon as the coordinator sends a stop, as shardline-worker does: the
   * streams then close because the job told them to, not because the worker went away.
   */
  cancelOnStop?: boolean;
}

/** A Train stream as the server sees it: records what the coordinator writes and how it ends. */
export class FakeTrainStream extends EventEmitter {
  readonly written: TrainResponse[] = [];
  writableEnded = false;
  destroyed = false;
  status: (Error & { code?: number }) | undefined;
  constructor(private readonly worker: FakeWorkerOptions = {}) {
    super();
  }
  write(message: TrainResponse): boolean {
    this.written.push(message);
    if (this.worker.cancelOnStop && message.kind?.$case === 'stop') {
      // After the write returns, as a real cancellation arrives later from the network.
      queueMicrotask(() => this.emit('cancelled'));
    }
    return true;
  }
  end(): void {
    this.writableEnded = true;
  }
  getPeer(): string {
    return '127.0.0.1:50000';
  }
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    // The server answers a refused stream with emit('error', status): record it as the status.
    if (event === 'error' && this.status === undefined) this.status = args[0] as Error;
    return super.emit(event, ...args);
  }
  /** The worker sends a message. */
  send(message: TrainRequest): void {
    super.emit('data', message);
  }
}

/** A cluster with the means to join and attach workers, and what it logged and reported. */
export interface Harness {
  cluster: Cluster;
  /** Every log record, parsed. */
  logs: LogFields[];
  /** Each worker that left, by name and why, in order. */
  left: Array<{ worker: string; reason: string }>;
  /** The same departures as the reporter received them, with every field. */
  departures: WorkerLeftInfo[];
  /** Joins a worker by name and returns its id. */
  join(name: string, request?: Partial<JoinRequest>): Promise<string>;
  /** Joins and attaches a worker; returns its stream. */
  attach(name: string, request?: Partial<JoinRequest>): Promise<FakeTrainStream>;
}

/** A reporter that says nothing: the harness records departures itself. */
const quietReporter: Reporter = {
  started() {},
  workerJoined() {},
  workerLeft() {},
  progress() {},
  epochEnd() {},
  done() {},
};

/**
 * Creates a cluster for `job` over `layout`, at least one worker, logging JSON at info level
 * into {@link Harness.logs}; `options` override any of that. `options.reporter` (silent when
 * absent) receives every event, departures after the harness has recorded them. Workers that
 * `attach` behave as `worker` says.
 */
export function harness(
  options: Partial<ClusterOptions> = {},
  worker: FakeWorkerOptions = {},
): Harness {
  const logs: LogFields[] = [];
  const left: Array<{ worker: string; reason: string }> = [];
  const departures: WorkerLeftInfo[] = [];
  const base = options.reporter ?? quietReporter;
  const reporter: Reporter = {
    ...base,
    workerLeft(info) {
      left.push({ worker: info.worker, reason: info.reason });
      departures.push(info);
      base.workerLeft(info);
    },
  };
  const cluster = createCluster({
    job,
    layout,
    minWorkers: 1,
    classNames: ['a', 'b', 'c', 'd'],
    logger: createLogger({
      level: 'info',
      format: 'json',
      sink: { write: (line) => logs.push(JSON.parse(line) as LogFields) },
    }),
    ...options,
    reporter,
  });
  const join = (name: string, request: Partial<JoinRequest> = {}) =>
    new Promise<string>((resolve, reject) => {
      const call = {
        request: JoinRequest.fromPartial({
          protocolVersion: PROTOCOL_VERSION,
          workerName: name,
          ...request,
        }),
      } as ServerUnaryCall<JoinRequest, JoinResponse>;
      cluster.service.join(call, (error, response) =>
        error ? reject(error) : resolve(response!.workerId),
      );
    });
  const attach = async (name: string, request: Partial<JoinRequest> = {}) => {
    const workerId = await join(name, request);
    const stream = new FakeTrainStream(worker);
    cluster.service.train(stream as unknown as ServerDuplexStream<TrainRequest, TrainResponse>);
    stream.send({ kind: { $case: 'attach', value: { workerId, weightsVersion: undefined } } });
    return stream;
  };
  return { cluster, logs, left, departures, join, attach };
}
