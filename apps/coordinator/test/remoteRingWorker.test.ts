/**
 * The coordinator's side of one ring-mode worker (remoteRingWorker.ts) over a fake Train stream:
 * what it writes for each RingTrainingWorker call, and how it settles each call from what the
 * worker sends back. No sockets and no processes; the e2e tests run the same messages against
 * real worker processes.
 */
import { EventEmitter } from 'node:events';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { hasErrorCode, type OptimizerState, type ParamLayout } from '@shardline/core';
import {
  type ClassificationCounts,
  createTensorAssembler,
  DataType,
  decodeTensor,
  JobSpec,
  MIN_CHUNK_BYTES,
  type OptimizerStateHeader,
  type ReplicaStateChunk,
  type RingReport,
  replicaStateChunks,
  replicaStateFromTensor,
  type TrainRequest,
  type TrainResponse,
} from '@shardline/protocol';
import {
  isRingAbort,
  isRingWorker,
  type ReplicaState,
  type RingShareAssignment,
} from '@shardline/training';
import { describe, expect, it } from 'vitest';
import {
  createRemoteRingWorker,
  MAX_SUSPECT_ID_CHARS,
  type RemoteRingWorker,
} from '../src/distributed/remoteRingWorker.js';
import { createWeightsEncoder, type RejectionReason } from '../src/distributed/remoteWorker.js';

// Big enough that a state with adam's two slots (480,000 bytes) takes two 256 KiB chunks.
const layout: ParamLayout = { slots: [], size: 40_000, fingerprint: '00000000000000bb' };
const job = JobSpec.fromPartial({
  jobId: 'job-ring',
  globalBatchSize: 8,
  epochs: 1,
  gradientDtype: DataType.FLOAT32,
  weightsDtype: DataType.FLOAT32,
  maxChunkBytes: MIN_CHUNK_BYTES,
  layoutFingerprint: layout.fingerprint,
  parameterCount: layout.size,
  optimizer: { kind: 'adam', momentum: 0, weightDecay: 0 },
});
const classNames = ['a', 'b', 'c', 'd'];

/** A message kind the coordinator writes. */
type Kind = NonNullable<TrainResponse['kind']>;
/** Each kind's value type, by kind. */
type KindValue = { [C in Kind['$case']]: Extract<Kind, { $case: C }>['value'] };

/** A Train stream as the server sees it; `write` can report a full buffer to test draining. */
class FakeTrainStream extends EventEmitter {
  readonly written: TrainResponse[] = [];
  writableEnded = false;
  destroyed = false;
  /** Writes that answer false (buffer full) until a `drain` is emitted. */
  fullAfter = Number.POSITIVE_INFINITY;
  status: (Error & { code?: number; details?: string }) | undefined;
  constructor() {
    super();
    // The server's Train handler listens for errors (cluster.ts); without a listener, emit
    // ('error') would throw.
    this.on('error', () => {});
  }
  write(message: TrainResponse): boolean {
    this.written.push(message);
    return this.written.length < this.fullAfter;
  }
  end(): void {
    this.writableEnded = true;
  }
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'error' && this.status === undefined) this.status = args[0] as Error;
    return super.emit(event, ...args);
  }
  kinds(): string[] {
    return this.written.map((m) => m.kind?.$case ?? 'none');
  }
  of<K extends keyof KindValue>(kind: K): KindValue[K][] {
    return this.written.flatMap((m) =>
      m.kind?.$case === kind ? [m.kind.value as KindValue[K]] : [],
    );
  }
}

interface Harness {
  worker: RemoteRingWorker;
  stream: FakeTrainStream;
  traffic: { sent: number; received: number };
  rejected: RejectionReason[];
  send(message: TrainRequest['kind']): void;
}

function harness(): Harness {
  const stream = new FakeTrainStream();
  const traffic = { sent: 0, received: 0 };
  const rejected: RejectionReason[] = [];
  const worker = createRemoteRingWorker(
    { id: 'w-1', name: 'alpha', hostname: 'h', pid: 1, backend: 'cpu', peerAddress: 'h:7000' },
    stream as unknown as ServerDuplexStream<TrainRequest, TrainResponse>,
    {
      job,
      layout,
      encoder: createWeightsEncoder(job, layout),
      traffic,
      classNames,
      onRejected: (reason) => rejected.push(reason),
    },
  );
  return {
    worker,
    stream,
    traffic,
    rejected,
    send: (kind) => worker.receive({ kind }),
  };
}

/** A replica state of `version` with adam's two slots, every value distinct. */
function replicaState(version: number): ReplicaState {
  const values = (offset: number) =>
    Float32Array.from({ length: layout.size }, (_, i) => offset + i / 1024);
  const optimizer: OptimizerState = {
    kind: 'adam',
    step: version,
    config: { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weightDecay: 0, decoupled: false },
    slots: { m: values(1), v: values(2) },
  };
  return { version, params: values(0), optimizer };
}

/** Reassembles the state chunks the coordinator wrote, as a worker would. */
function stateFromWritten(chunks: readonly ReplicaStateChunk[]): ReplicaState {
  const assembler = createTensorAssembler({ expectedFingerprint: layout.fingerprint });
  let header: OptimizerStateHeader | undefined;
  for (const chunk of chunks) {
    if (chunk.chunk!.chunkIndex === 0) header = chunk.optimizer;
    const tensor = assembler.push(chunk.chunk!);
    if (tensor) {
      const values = decodeTensor(tensor.bytes, tensor.meta.dtype);
      return replicaStateFromTensor(
        header,
        values,
        Number(tensor.meta.version),
        layout.size,
        'test',
      );
    }
  }
  throw new Error('the state transfer did not complete');
}

function assignment(step: number, rank = 0): RingShareAssignment {
  return {
    epoch: 0,
    step,
    stepInEpoch: step,
    rank,
    worldSize: 2,
    samples: 4,
    ring: {
      id: `ring-${step}`,
      members: [
        { workerId: 'w-1', peerAddress: 'h:7000' },
        { workerId: 'w-2', peerAddress: 'h:7001' },
      ],
    },
  };
}

function report(step: number, over: Partial<RingReport> = {}): TrainRequest['kind'] {
  return {
    $case: 'ringReport',
    value: {
      step: BigInt(step),
      ringId: `ring-${step}`,
      result: { sampleCount: 4, loss: 0.5, correct: 3, computeSeconds: 0.01 },
      checksum: '0a1b2c3d',
      totalSamples: 8n,
      exchangeSeconds: 0.002,
      bytesSent: 160_000n,
      failure: '',
      suspectWorkerId: '',
      ...over,
    },
  };
}

/** A worker whose replica is at `version` (pushed, then nothing else written yet). */
async function atVersion(version: number): Promise<Harness> {
  const h = harness();
  await h.worker.pushState(replicaState(version));
  h.stream.written.length = 0;
  return h;
}

const counts = (over: Partial<ClassificationCounts> = {}): ClassificationCounts => ({
  count: 4n,
  confusion: [1n, 0n, 0n, 0n, 0n, 1n, 0n, 0n, 0n, 0n, 1n, 0n, 0n, 0n, 0n, 1n],
  topK: [1, 3],
  topKHits: [4n, 4n],
  lossSum: 1.5,
  reportedLossSum: 0,
  reportedLossCount: 0n,
  misclassified: [],
  ...over,
});

describe('createRemoteRingWorker: the replica state', () => {
  it('pushes the state as request-0 state chunks that reassemble to it, and takes its version', async () => {
    const h = harness();
    expect(isRingWorker(h.worker)).toBe(true);
    expect(h.worker.peerAddress).toBe('h:7000');
    expect(h.worker.replicaVersion).toBe(-1);
    const state = replicaState(5);
    await h.worker.pushState(state);
    const chunks = h.stream.of('state');
    expect(h.stream.kinds()).toEqual(['state', 'state']);
    expect(chunks.every((c) => c.requestId === 0n)).toBe(true);
    expect(chunks[0]!.optimizer).toMatchObject({ kind: 'adam', step: 5n, slotNames: ['m', 'v'] });
    expect(chunks[1]!.optimizer).toBeUndefined();
    const received = stateFromWritten(chunks);
    expect(received.version).toBe(5);
    expect(received.params).toEqual(state.params);
    expect(received.optimizer).toEqual(state.optimizer);
    expect(h.worker.replicaVersion).toBe(5);
    expect(h.traffic.sent).toBe(layout.size * 4 * 3);
  });

  it('copies the state when called: changing the arrays afterwards changes nothing sent', async () => {
    const h = harness();
    const state = replicaState(1);
    const pushed = h.worker.pushState(state);
    state.params.fill(7);
    await pushed;
    expect(stateFromWritten(h.stream.of('state')).params[0]).toBe(0);
  });

  it('writes in call order: a commit waits behind a state transfer that is still draining', async () => {
    const h = harness();
    h.stream.fullAfter = 1; // the first chunk fills the buffer
    const pushed = h.worker.pushState(replicaState(0));
    h.worker.commit(0, 0.1, '0a1b2c3d');
    await Promise.resolve();
    expect(h.stream.kinds()).toEqual(['state']);
    h.stream.fullAfter = Number.POSITIVE_INFINITY;
    h.stream.emit('drain');
    await pushed;
    await new Promise((r) => setImmediate(r));
    expect(h.stream.kinds()).toEqual(['state', 'state', 'commit']);
  });

  it('pulls the state: PullState, then the chunks the worker answers with, checked', async () => {
    const h = await atVersion(3);
    const pulled = h.worker.pullState();
    expect(h.worker.busy).toBe(true);
    await new Promise((r) => setImmediate(r));
    const [request] = h.stream.of('pullState');
    expect(request).toEqual({ requestId: expect.any(BigInt) });
    const state = replicaState(3);
    for (const value of replicaStateChunks(state, layout.fingerprint, {
      requestId: request!.requestId,
      maxChunkBytes: job.maxChunkBytes,
    })) {
      h.send({ $case: 'state', value });
    }
    const got = await pulled;
    expect(got.version).toBe(3);
    expect(got.params).toEqual(state.params);
    expect(got.optimizer).toEqual(state.optimizer);
    expect(h.traffic.received).toBe(layout.size * 4 * 3);
    expect(h.worker.busy).toBe(false);
  });

  it('refuses a pulled state of another version than the steps committed to the worker', async () => {
    const h = await atVersion(3);
    const pulled = h.worker.pullState().catch((e: unknown) => e);
    await new Promise((r) => setImmediate(r));
    const [request] = h.stream.of('pullState');
    for (const value of replicaStateChunks(replicaState(2), layout.fingerprint, {
      requestId: request!.requestId,
      maxChunkBytes: job.maxChunkBytes,
    })) {
      h.send({ $case: 'state', value });
    }
    const error = await pulled;
    expect(hasErrorCode(error, 'MISMATCH')).toBe(true);
    expect((error as Error).message).toContain('at weights version 2, expected 3');
    expect(h.stream.status).toMatchObject({ code: status.FAILED_PRECONDITION });
  });
});

describe('createRemoteRingWorker: a step', () => {
  it('assigns the share with its ring and resolves with the checked report', async () => {
    const h = await atVersion(4);
    const reduced = h.worker.reduceShare(assignment(4, 1));
    await new Promise((r) => setImmediate(r));
    expect(h.stream.of('assignment')).toEqual([
      {
        step: 4n,
        epoch: 0,
        stepInEpoch: 4,
        rank: 1,
        worldSize: 2,
        globalBatchSize: 8,
        weightsVersion: 4n,
        ring: {
          ringId: 'ring-4',
          members: [
            { workerId: 'w-1', peerAddress: 'h:7000' },
            { workerId: 'w-2', peerAddress: 'h:7001' },
          ],
        },
      },
    ]);
    expect(h.worker.busy).toBe(true);
    h.send(report(4));
    expect(await reduced).toEqual({
      sampleCount: 4,
      loss: 0.5,
      correct: 3,
      computeSeconds: 0.01,
      totalSamples: 8,
      checksum: '0a1b2c3d',
      exchangeSeconds: 0.002,
      sentBytes: 160_000,
    });
    expect(h.worker.lastStep).toBe(4);
    expect(h.worker.busy).toBe(false);
    h.worker.commit(4, 0.01, '0a1b2c3d');
    await new Promise((r) => setImmediate(r));
    expect(h.stream.of('commit')).toEqual([{ step: 4n, learningRate: 0.01, checksum: '0a1b2c3d' }]);
    expect(h.worker.replicaVersion).toBe(5);
  });

  it('rejects a failed all-reduce as a ring abort naming the suspect, and without one when none is named', async () => {
    const h = await atVersion(0);
    const reduced = h.worker.reduceShare(assignment(0)).catch((e: unknown) => e);
    h.send(report(0, { failure: 'chunk 3 from w-2 fails its CRC', suspectWorkerId: 'w-2' }));
    const error = await reduced;
    expect(isRingAbort(error)).toBe(true);
    expect((error as Error).message).toBe('Worker alpha: chunk 3 from w-2 fails its CRC');
    expect((error as { details: Record<string, unknown> }).details.suspect).toBe('w-2');

    const again = h.worker.reduceShare({
      ...assignment(0),
      ring: { ...assignment(0).ring, id: 'ring-0b' },
    });
    h.send(report(0, { ringId: 'ring-0b', failure: 'left neighbour went away' }));
    const second = await again.catch((e: unknown) => e);
    expect(isRingAbort(second)).toBe(true);
    expect((second as { details: Record<string, unknown> }).details).not.toHaveProperty('suspect');
    // A ring abort is not the worker's fault: it stays usable.
    expect(h.stream.status).toBeUndefined();
  });

  it('rejects a WorkerError as a normal failure (not an abort) and ends the stream', async () => {
    const h = await atVersion(0);
    const reduced = h.worker.reduceShare(assignment(0)).catch((e: unknown) => e);
    h.send({
      $case: 'error',
      value: { message: 'out of memory', code: 'INTERNAL', step: 0n, fatal: false },
    });
    const error = await reduced;
    expect(isRingAbort(error)).toBe(false);
    expect(hasErrorCode(error, 'INTERNAL')).toBe(true);
    expect((error as Error).message).toBe('Worker alpha failed: out of memory');
    expect(h.stream.status).toMatchObject({ code: status.INTERNAL });
    // Everything after fails at once, as a promise.
    expect(hasErrorCode(await h.worker.pullState().catch((e: unknown) => e), 'INTERNAL')).toBe(
      true,
    );
  });

  it('rejects a broken stream as a normal failure', async () => {
    const h = await atVersion(0);
    const reduced = h.worker.reduceShare(assignment(0)).catch((e: unknown) => e);
    const { ShardlineError } = await import('@shardline/core');
    h.worker.fail(new ShardlineError('CONNECTION_LOST', 'Worker alpha left: its stream failed.'));
    const error = await reduced;
    expect(isRingAbort(error)).toBe(false);
    expect((error as Error).message).toBe('Worker alpha left: its stream failed.');
    expect(await h.worker.closed).toBe('Worker alpha left: its stream failed.');
  });

  it('refuses, counts and does not treat as an abort a report whose numbers fail a check', async () => {
    const cases: Array<[Partial<RingReport>, RegExp]> = [
      [
        { checksum: 'ABCDEF01' },
        /reported checksum "ABCDEF01" for step 0, expected 8 lowercase hex digits/,
      ],
      [{ checksum: '123' }, /checksum "123"/],
      [{ totalSamples: 9n }, /total_samples 9 for step 0, expected from 4 \(its own share\) to 8/],
      [{ totalSamples: 3n }, /total_samples 3/],
      [{ exchangeSeconds: Number.NaN }, /exchange_seconds NaN/],
      [
        { result: { sampleCount: 5, loss: 0.5, correct: 3, computeSeconds: 0.01 } },
        /sample_count 5 for step 0, expected 4/,
      ],
      [{ result: undefined }, /without its result/],
    ];
    for (const [over, message] of cases) {
      const h = await atVersion(0);
      const reduced = h.worker.reduceShare(assignment(0)).catch((e: unknown) => e);
      h.send(report(0, over));
      const error = await reduced;
      expect(isRingAbort(error)).toBe(false);
      expect(hasErrorCode(error, 'INVALID_ARGUMENT')).toBe(true);
      expect((error as Error).message).toMatch(message);
      expect(h.rejected).toEqual(['report']);
      expect(h.stream.status).toMatchObject({ code: status.INVALID_ARGUMENT });
    }
  });

  it('aborts: writes AbortStep, rejects the pending reduce as a ring abort, and drops its late report', async () => {
    const h = await atVersion(2);
    const reduced = h.worker.reduceShare(assignment(2)).catch((e: unknown) => e);
    h.worker.abortStep(2, 'worker beta failed');
    const error = await reduced;
    expect(isRingAbort(error)).toBe(true);
    expect((error as Error).message).toBe('Worker alpha: step 2 was aborted (worker beta failed).');
    await new Promise((r) => setImmediate(r));
    expect(h.stream.of('abort')).toEqual([{ step: 2n, reason: 'worker beta failed' }]);
    // The report the worker was already sending is expected, not a protocol violation.
    h.send(report(2));
    expect(h.stream.status).toBeUndefined();
    expect(h.worker.replicaVersion).toBe(2);
    // The step is retried in a new formation.
    const retried = h.worker.reduceShare({
      ...assignment(2),
      ring: { ...assignment(2).ring, id: 'ring-2b' },
    });
    h.send(report(2, { ringId: 'ring-2b' }));
    expect((await retried).checksum).toBe('0a1b2c3d');
  });

  it('refuses a failure report whose suspect is no worker id, as a normal failure', async () => {
    const h = await atVersion(0);
    const reduced = h.worker.reduceShare(assignment(0)).catch((e: unknown) => e);
    h.send(
      report(0, { failure: 'bad chunk', suspectWorkerId: 'x'.repeat(MAX_SUSPECT_ID_CHARS + 1) }),
    );
    const error = await reduced;
    expect(isRingAbort(error)).toBe(false);
    expect((error as Error).message).toMatch(
      `named a suspect worker id of ${MAX_SUSPECT_ID_CHARS + 1} characters in its ring report for step 0`,
    );
  });

  it('refuses a report that no assignment asked for', async () => {
    const h = await atVersion(0);
    h.send(report(7));
    expect(h.stream.status).toMatchObject({
      code: status.INVALID_ARGUMENT,
      details: expect.stringContaining(
        'ring report for step 7 in ring ring-7, which no assignment asked for (none was pending)',
      ),
    });
  });

  it('honours the signal: rejects with its reason at once and drops the late report', async () => {
    const h = await atVersion(0);
    const controller = new AbortController();
    const reduced = h.worker.reduceShare(assignment(0), controller.signal).catch((e: unknown) => e);
    const reason = new DOMException('step deadline', 'TimeoutError');
    controller.abort(reason);
    expect(await reduced).toBe(reason);
    expect(h.worker.busy).toBe(false);
    h.send(report(0));
    expect(h.stream.status).toBeUndefined();
    // An aborted signal refuses new work before anything is written.
    h.stream.written.length = 0;
    expect(await h.worker.pullState(controller.signal).catch((e: unknown) => e)).toBe(reason);
    expect(
      await h.worker
        .evaluateReplica({ start: 0, end: 4 }, 0, controller.signal)
        .catch((e: unknown) => e),
    ).toBe(reason);
    expect(h.stream.written).toEqual([]);
  });

  it('refuses a step on a replica of another version, and the star-mode calls', async () => {
    const h = await atVersion(3);
    const early = await h.worker.reduceShare(assignment(4)).catch((e: unknown) => e);
    expect(hasErrorCode(early, 'MISMATCH')).toBe(true);
    expect((early as Error).message).toBe(
      'Worker alpha holds weights version 3, expected 4 to compute step 4: push it the state first.',
    );
    const star = await h.worker
      .computeShare(assignment(3), { version: 3, params: new Float32Array(layout.size) })
      .catch((e: unknown) => e);
    expect(hasErrorCode(star, 'INVALID_ARGUMENT')).toBe(true);
    expect((star as Error).message).toMatch(
      /computeShare \(star\) was called for step 3, expected reduceShare/,
    );
    const stale = await h.worker
      .evaluate({ start: 0, end: 4 }, { version: 2, params: new Float32Array(layout.size) })
      .catch((e: unknown) => e);
    expect(hasErrorCode(stale, 'INVALID_ARGUMENT')).toBe(true);
    expect(h.stream.written).toEqual([]);
  });

  it('ends the stream of a ring worker that sends a gradient to the coordinator', async () => {
    const h = await atVersion(0);
    h.send({ $case: 'gradient', value: { result: undefined, chunk: undefined } });
    expect(h.stream.status).toMatchObject({
      code: status.INVALID_ARGUMENT,
      details: expect.stringContaining('this job exchanges gradients in a ring among the workers'),
    });
  });
});

describe('createRemoteRingWorker: evaluation', () => {
  it('evaluates the replica at its version and resolves with the metrics and the weights checksum', async () => {
    const h = await atVersion(6);
    const evaluated = h.worker.evaluateReplica({ start: 0, end: 4 }, 6);
    await new Promise((r) => setImmediate(r));
    // Not busy while evaluating: the worker heartbeats between its batches, so the cluster's
    // silence sweep (not a step deadline) is what ends an evaluation it never answers.
    expect(h.worker.busy).toBe(false);
    const [request] = h.stream.of('evaluate');
    expect(request).toEqual({
      requestId: expect.any(BigInt),
      start: 0,
      end: 4,
      weightsVersion: 6n,
    });
    h.send({
      $case: 'evaluation',
      value: {
        requestId: request!.requestId,
        computeSeconds: 0.1,
        counts: counts(),
        weightsChecksum: 'deadbeef',
      },
    });
    const result = await evaluated;
    expect(result.weightsChecksum).toBe('deadbeef');
    expect(result.state).toMatchObject({ count: 4, numClasses: 4, lossSum: 1.5, topKHits: [4, 4] });
  });

  it('lets evaluate() on the replica version delegate, and refuses an answer without a checksum', async () => {
    const h = await atVersion(6);
    const evaluated = h.worker
      .evaluate({ start: 0, end: 4 }, { version: 6, params: new Float32Array(0) })
      .catch((e: unknown) => e);
    await new Promise((r) => setImmediate(r));
    const [request] = h.stream.of('evaluate');
    h.send({
      $case: 'evaluation',
      value: {
        requestId: request!.requestId,
        computeSeconds: 0.1,
        counts: counts(),
        weightsChecksum: '',
      },
    });
    const error = await evaluated;
    expect(hasErrorCode(error, 'INVALID_ARGUMENT')).toBe(true);
    expect((error as Error).message).toMatch(
      /weights_checksum "" for test images 0 to 4, expected 8 lowercase hex digits/,
    );
    expect(h.rejected).toEqual(['evaluation']);
  });

  it('refuses to evaluate a version the replica does not hold', async () => {
    const h = await atVersion(6);
    const error = await h.worker.evaluateReplica({ start: 0, end: 4 }, 5).catch((e: unknown) => e);
    expect(hasErrorCode(error, 'MISMATCH')).toBe(true);
    expect(h.stream.written).toEqual([]);
  });
});
