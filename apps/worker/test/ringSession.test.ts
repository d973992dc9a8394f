/**
 * Two real worker sessions (runWorker, each with its own peer endpoint on 127.0.0.1) in ring
 * mode, driven by a small fake coordinator that speaks the Train protocol message by message.
 * What it guards: the replica state a coordinator pushes is what the workers train from; a ring
 * step's average is staged and applied only on commit, bit-identical on both replicas and equal
 * (within float32 rounding of the summation order) to the sample-weighted average applied with
 * the job's optimizer; a formation's link is reused for its later steps and replaced for a new
 * ring id; an AbortStep reaches an all-reduce that is waiting on a neighbour (the stream is read
 * while the step runs) and nothing of it is staged or reported; pull_state sends the replica
 * (weights and optimizer slots); evaluation reports the replica's weights checksum; and a commit
 * that does not match what is staged makes the worker say so (fatal) and join again.
 */
import {
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import {
  createLogger,
  createOptimizer,
  describeLayout,
  readWeights,
  selectBackend,
} from '@shardline/core';
import { loadDataset } from '@shardline/datasets';
import {
  CoordinatorServiceService,
  createTensorAssembler,
  DataType,
  DEFAULT_CHUNK_BYTES,
  decodeTensor,
  Exchange,
  type JobSpec,
  type JoinRequest,
  type JoinResponse,
  MAX_OPTIMIZER_SLOTS,
  type OptimizerStateHeader,
  PROTOCOL_VERSION,
  type ReplicaStateValues,
  type RingReport,
  replicaStateChunks,
  replicaStateFromTensor,
  type StepAssignment,
  StopReason,
  type TrainRequest,
  type TrainResponse,
} from '@shardline/protocol';
import {
  averageGradients,
  createLocalWorker,
  createReplica,
  float32Checksum,
  type ShareResult,
} from '@shardline/training';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runWorker, type WorkerOutcome } from '../src/session.js';

const LIMIT_TRAIN = 64;
const LIMIT_TEST = 40;
const BATCH = 16;
const LEARNING_RATE = 0.05;
const OPTIMIZER = { kind: 'momentum' as const, momentum: 0.9, weightDecay: 1e-4 };

/** A message queue per Train stream, so the test can wait for the next message of a worker. */
class Inbox {
  private readonly items: TrainRequest[] = [];
  private readonly waiters: Array<(m: TrainRequest) => void> = [];
  ended = false;

  push(message: TrainRequest): void {
    // Proof of life only; the coordinator under test here does not time workers out.
    if (message.kind?.$case === 'heartbeat') return;
    const waiter = this.waiters.shift();
    if (waiter) waiter(message);
    else this.items.push(message);
  }

  next(timeoutMs = 20_000): Promise<TrainRequest> {
    const item = this.items.shift();
    if (item) return Promise.resolve(item);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no message from the worker within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push((m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
  }

  /** The messages already queued, without waiting. */
  get pending(): readonly TrainRequest[] {
    return this.items;
  }
}

/** One attached worker as the fake coordinator sees it. */
interface Attached {
  workerId: string;
  join: JoinRequest;
  call: ServerDuplexStream<TrainRequest, TrainResponse>;
  inbox: Inbox;
}

/** Just enough of a coordinator: Join answers with the job, Train streams are the test's. */
class FakeCoordinator {
  readonly server = new Server();
  address = '';
  readonly joins: JoinRequest[] = [];
  private readonly attachWaiters: Array<(a: Attached) => void> = [];
  private readonly attachedQueue: Attached[] = [];

  constructor(private readonly job: JobSpec) {}

  async start(): Promise<void> {
    const unimplemented = (_call: unknown, callback: sendUnaryData<never>) =>
      callback({ code: status.UNIMPLEMENTED, details: 'not in this test' });
    this.server.addService(CoordinatorServiceService, {
      join: (
        call: ServerUnaryCall<JoinRequest, JoinResponse>,
        callback: sendUnaryData<JoinResponse>,
      ) => {
        this.joins.push(call.request);
        callback(null, {
          workerId: `w${this.joins.length}`,
          protocolVersion: PROTOCOL_VERSION,
          job: this.job,
          weightsVersion: 0n,
          heartbeatIntervalMs: 0,
        });
      },
      train: (call: ServerDuplexStream<TrainRequest, TrainResponse>) => {
        let attached: Attached | undefined;
        call.on('data', (message: TrainRequest) => {
          if (attached) {
            attached.inbox.push(message);
            return;
          }
          if (message.kind?.$case !== 'attach') throw new Error('expected attach first');
          const workerId = message.kind.value.workerId;
          const index = Number(workerId.slice(1)) - 1;
          attached = { workerId, join: this.joins[index]!, call, inbox: new Inbox() };
          const waiter = this.attachWaiters.shift();
          if (waiter) waiter(attached);
          else this.attachedQueue.push(attached);
        });
        call.on('end', () => {
          if (attached) attached.inbox.ended = true;
          call.end();
        });
        call.on('error', () => {});
      },
      leave: unimplemented,
      getStatus: unimplemented,
      fetchDataset: (call: { destroy(): void }) => call.destroy(),
    });
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    this.address = `127.0.0.1:${port}`;
  }

  /** The next worker to attach a Train stream. */
  nextAttached(timeoutMs = 60_000): Promise<Attached> {
    const queued = this.attachedQueue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no worker attached')), timeoutMs);
      this.attachWaiters.push((a) => {
        clearTimeout(timer);
        resolve(a);
      });
    });
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

function send(worker: Attached, kind: TrainResponse['kind']): void {
  worker.call.write({ kind } as TrainResponse);
}

function pushState(worker: Attached, state: ReplicaStateValues, fingerprint: string): void {
  for (const value of replicaStateChunks(state, fingerprint, {
    maxChunkBytes: DEFAULT_CHUNK_BYTES,
  }))
    send(worker, { $case: 'state', value });
}

/** Each TrainRequest kind's value type, by its $case. */
type RequestValues = {
  [K in NonNullable<TrainRequest['kind']> as K['$case']]: K['value'];
};

/** The worker's next message, which must be of kind `$case`. */
async function nextOf<C extends keyof RequestValues>(
  worker: Attached,
  $case: C,
): Promise<RequestValues[C]> {
  const message = await worker.inbox.next();
  const kind = message.kind;
  if (kind?.$case !== $case) {
    throw new Error(
      `expected ${$case} from ${worker.workerId}, got ${JSON.stringify(kind, bigints)}`,
    );
  }
  return kind.value as RequestValues[C];
}

function bigints(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/** Pulls a replica's state the way a coordinator would: chunks until the tensor is whole. */
async function pullState(
  worker: Attached,
  requestId: bigint,
  layout: { fingerprint: string; size: number },
): Promise<ReplicaStateValues> {
  send(worker, { $case: 'pullState', value: { requestId } });
  const assembler = createTensorAssembler({
    expectedFingerprint: layout.fingerprint,
    maxTensorBytes: layout.size * 4 * (1 + MAX_OPTIMIZER_SLOTS),
    label: 'replica state',
  });
  let header: OptimizerStateHeader | undefined;
  for (;;) {
    const chunk = await nextOf(worker, 'state');
    expect(chunk.requestId).toBe(requestId);
    if (chunk.chunk?.chunkIndex === 0) header = chunk.optimizer;
    const tensor = assembler.push(chunk.chunk!);
    if (!tensor) continue;
    return replicaStateFromTensor(
      header,
      decodeTensor(tensor.bytes, tensor.meta.dtype),
      Number(tensor.meta.version),
      layout.size,
      worker.workerId,
    );
  }
}

function assignment(
  step: number,
  rank: number,
  ringId: string,
  members: readonly Attached[],
): StepAssignment {
  return {
    step: BigInt(step),
    epoch: 0,
    stepInEpoch: step,
    rank,
    worldSize: members.length,
    globalBatchSize: BATCH,
    weightsVersion: BigInt(step),
    ring: {
      ringId,
      members: members.map((m) => ({ workerId: m.workerId, peerAddress: m.join.peerAddress })),
    },
  };
}

/** Runs one ring step on `members` (in rank order) and returns their reports. */
async function ringStep(
  step: number,
  ringId: string,
  members: readonly Attached[],
): Promise<RingReport[]> {
  members.forEach((m, rank) => {
    send(m, { $case: 'assignment', value: assignment(step, rank, ringId, members) });
  });
  return Promise.all(members.map((m) => nextOf(m, 'ringReport')));
}

function commit(members: readonly Attached[], step: number, checksum: string): void {
  for (const m of members)
    send(m, {
      $case: 'commit',
      value: { step: BigInt(step), learningRate: LEARNING_RATE, checksum },
    });
}

describe('ring mode on real worker sessions', () => {
  const logs: string[] = [];
  const logger = createLogger({
    level: 'debug',
    format: 'text',
    sink: { write: (line: string) => logs.push(line) },
  });
  let coordinator: FakeCoordinator;
  let job: JobSpec;
  let layout: ReturnType<typeof describeLayout>;
  let initial: ReplicaStateValues;
  let topology: string;
  const abort = new AbortController();

  beforeAll(async () => {
    await selectBackend('cpu', { logger: createLogger({ level: 'silent' }) });
    const model = tf.sequential({
      layers: [
        tf.layers.flatten({ inputShape: [28, 28, 1] }),
        tf.layers.dense({
          units: 8,
          activation: 'relu',
          kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
        }),
        tf.layers.dense({
          units: 10,
          activation: 'softmax',
          kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
        }),
      ],
    });
    layout = describeLayout(model);
    topology = JSON.stringify(model.toJSON(null, false));
    initial = {
      version: 0,
      params: readWeights(model, layout),
      optimizer: createOptimizer({ ...OPTIMIZER, size: layout.size }).getState(),
    };
    model.dispose();
    job = {
      jobId: 'job-ring-session',
      modelName: 'tiny-mlp',
      datasetName: 'fashion-mnist',
      seed: 7,
      globalBatchSize: BATCH,
      epochs: 1,
      gradientDtype: DataType.FLOAT32,
      weightsDtype: DataType.FLOAT32,
      maxChunkBytes: 262_144,
      layoutFingerprint: layout.fingerprint,
      parameterCount: layout.size,
      limitTrain: LIMIT_TRAIN,
      limitTest: LIMIT_TEST,
      augment: false,
      evalBatchSize: 20,
      hyperparameters: {},
      model: { topologyJson: topology, source: 'builtin' },
      plugins: [],
      dataset: undefined,
      exchange: Exchange.RING,
      optimizer: OPTIMIZER,
    };
    coordinator = new FakeCoordinator(job);
    await coordinator.start();
  }, 60_000);

  afterAll(() => {
    abort.abort();
    coordinator?.stop();
    if (process.env.SHARDLINE_TEST_LOGS) process.stderr.write(logs.join(''));
  });

  it('stages, commits, aborts, pulls and evaluates so that both replicas stay bit-identical and follow the averaged gradient', async () => {
    const start = (name: string): Promise<WorkerOutcome> =>
      runWorker({
        coordinator: coordinator.address,
        name,
        backend: 'cpu',
        download: false,
        connectTimeoutMs: 20_000,
        logger: logger.child({ test_worker: name }),
        signal: abort.signal,
      });
    const outcomes = [start('a'), start('b')];
    const first = await coordinator.nextAttached();
    const second = await coordinator.nextAttached();
    const [a, b] = [first, second].sort((x, y) => x.workerId.localeCompare(y.workerId)) as [
      Attached,
      Attached,
    ];
    for (const w of [a, b]) {
      expect(w.join.capabilities).toEqual(['evaluate', 'exchange.ring']);
      expect(w.join.peerAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    }
    expect(a.join.peerAddress).not.toBe(b.join.peerAddress);

    // The state the coordinator pushes is what the replicas start from.
    pushState(a, initial, layout.fingerprint);
    pushState(b, initial, layout.fingerprint);

    // Two steps in one formation (its link is reused), committed with the reported checksum.
    const checksums: string[] = [];
    for (const step of [0, 1]) {
      const reports = await ringStep(step, 'r1', [a, b]);
      for (const r of reports) {
        expect(r.failure).toBe('');
        expect(r.ringId).toBe('r1');
        expect(r.totalSamples).toBe(BigInt(BATCH));
        expect(r.bytesSent).toBeGreaterThan(0n);
      }
      expect(reports[0]!.checksum).toMatch(/^[0-9a-f]{8}$/);
      expect(reports[1]!.checksum).toBe(reports[0]!.checksum);
      expect(reports.reduce((n, r) => n + r.result!.sampleCount, 0)).toBe(BATCH);
      checksums.push(reports[0]!.checksum);
      commit([a, b], step, reports[0]!.checksum);
    }

    // Step 2 reaches only a: its all-reduce waits for b, which never joins formation r2. The
    // AbortStep must reach it while it waits, and a reports nothing for it.
    send(a, { $case: 'assignment', value: assignment(2, 0, 'r2', [a, b]) });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(a.inbox.pending).toEqual([]);
    send(a, { $case: 'abort', value: { step: 2n, reason: 'test: b never came' } });

    // The retry, in a new formation with the ranks swapped.
    const retry = await ringStep(2, 'r3', [b, a]);
    for (const r of retry) {
      expect(r.ringId).toBe('r3');
      expect(r.failure).toBe('');
    }
    expect(retry[1]!.checksum).toBe(retry[0]!.checksum);
    commit([a, b], 2, retry[0]!.checksum);

    // Both replicas, pulled: the same bits, weights and optimizer slots alike.
    const stateA = await pullState(a, 7n, layout);
    const stateB = await pullState(b, 8n, layout);
    expect(stateA.version).toBe(3);
    expect(stateB.version).toBe(3);
    expect(Buffer.from(stateA.params.buffer).equals(Buffer.from(stateB.params.buffer))).toBe(true);
    expect(stateA.optimizer.step).toBe(3);
    const velocityA = stateA.optimizer.slots.velocity!;
    expect(
      Buffer.from(velocityA.buffer).equals(Buffer.from(stateB.optimizer.slots.velocity!.buffer)),
    ).toBe(true);

    // And what they hold is the average of the shares, applied with the job's optimizer.
    const expected = await expectedReplica(topology, layout.size, initial, 3);
    let worst = 0;
    for (let i = 0; i < layout.size; i++)
      worst = Math.max(worst, Math.abs(stateA.params[i]! - expected.params[i]!));
    // The ring sums in another order than averageGradients: a few float32 roundings per step.
    expect(worst).toBeLessThan(1e-6);
    expect(float32Checksum(stateA.params)).not.toBe(float32Checksum(initial.params));

    // Evaluation on the replica, with its checksum.
    for (const [w, requestId] of [
      [a, 9n],
      [b, 10n],
    ] as const) {
      send(w, {
        $case: 'evaluate',
        value: { requestId, start: 0, end: LIMIT_TEST / 2, weightsVersion: 3n },
      });
      const result = await nextOf(w, 'evaluation');
      expect(result.requestId).toBe(requestId);
      expect(result.counts!.count).toBe(BigInt(LIMIT_TEST / 2));
      expect(result.weightsChecksum).toBe(float32Checksum(stateA.params));
    }

    // A commit that does not match what b staged (nothing): b says so, fatally, leaves its
    // stream and joins again, to be sent the state.
    send(b, {
      $case: 'commit',
      value: { step: 3n, learningRate: LEARNING_RATE, checksum: 'deadbeef' },
    });
    const error = await nextOf(b, 'error');
    expect(error).toMatchObject({ code: 'MISMATCH', fatal: true, step: 3n });
    expect(error.message).toMatch(/commit step 3 with checksum deadbeef but holds nothing staged/);
    const again = await coordinator.nextAttached();
    expect(again.workerId).toBe('w3');
    expect(again.join.peerAddress).toBe(b.join.peerAddress);
    expect(b.inbox.ended).toBe(true);

    for (const w of [a, again])
      send(w, {
        $case: 'stop',
        value: { reason: StopReason.JOB_DONE, message: 'done', rejoinAllowed: false },
      });
    const [outA, outB] = await Promise.all(outcomes);
    expect(outA).toMatchObject({ reason: 'job-done', workerId: a.workerId, steps: 3 });
    expect(outB).toMatchObject({ reason: 'job-done', workerId: 'w3', steps: 0 });
    expect(logs.join('')).toMatch(/step aborted by the coordinator/);
  }, 120_000);
});

/**
 * The replica the two workers should hold after `steps` steps: each step's shares computed in
 * this process on the same data and weights, averaged by averageGradients (the star mode's
 * average) and applied with a replica of the job's optimizer.
 */
async function expectedReplica(
  topology: string,
  size: number,
  initial: ReplicaStateValues,
  steps: number,
): Promise<ReplicaStateValues> {
  const model = await tf.models.modelFromJSON({
    modelTopology: JSON.parse(topology),
  } as Parameters<typeof tf.models.modelFromJSON>[0]);
  const layout = describeLayout(model);
  const data = await loadDataset('fashion-mnist', {
    limitTrain: LIMIT_TRAIN,
    limitTest: LIMIT_TEST,
    download: false,
  });
  const local = createLocalWorker({
    model,
    layout,
    train: data.train,
    test: data.test,
    classNames: data.descriptor.classNames,
    seed: 7,
    batchSize: BATCH,
    augment: false,
    evalBatchSize: 20,
  });
  const replica = createReplica({ size, optimizer: OPTIMIZER });
  replica.load(initial);
  for (let step = 0; step < steps; step++) {
    const shares: ShareResult[] = [];
    for (let rank = 0; rank < 2; rank++) {
      const share = await local.computeShare(
        { epoch: 0, step, stepInEpoch: step, rank, worldSize: 2, samples: BATCH / 2 },
        { version: step, params: replica.params },
      );
      // The local worker reuses its gradient buffer from one share to the next.
      shares.push({ ...share, gradient: share.gradient.slice() });
    }
    const { gradient } = averageGradients(shares, size);
    replica.stage(step, gradient, 'expected');
    replica.commit(step, LEARNING_RATE, 'expected');
  }
  model.dispose();
  return replica.state();
}
