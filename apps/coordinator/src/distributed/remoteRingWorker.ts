/**
 * A ring-mode worker in another process, reached through its Train stream (`--exchange ring`).
 * It implements RingTrainingWorker for the synchronous trainer, as remoteWorker.ts implements
 * TrainingWorker for star mode, and translates each call into the Train messages the worker
 * follows: a replica state pushed in chunks, a StepAssignment that names the ring formation, a
 * CommitStep or AbortStep once the trainer has compared every member's checksum, a PullState
 * answered with the replica's chunks, and an Evaluate answered with the weights' checksum.
 *
 * Traffic: the state pushed and pulled counts in the cluster's tensor counters; the ring payload
 * never passes through here, and each member reports what it sent (RingShareReport.sentBytes),
 * which the trainer sums for the epoch's metrics.
 *
 * Every message to the worker goes through one write queue, in call order: a commit must not
 * land in the middle of a state transfer that is still draining, and the worker applies what it
 * receives in order (state, then assignment, then commit), so the coordinator's record of its
 * replica version (`replicaVersion`) is right as soon as the message is queued.
 *
 * Replies to work the trainer gave up on (an aborted step, a deadline that passed) are expected:
 * the worker may already be answering when the abort reaches it. They are recognised and
 * dropped, rather than refused as unsolicited, which would cost a healthy worker its place.
 */
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { formatCount, ShardlineError, toShardlineError } from '@shardline/core';
import type { ClassificationState } from '@shardline/metrics';
import {
  createTensorAssembler,
  DataType,
  decodeTensor,
  type EvaluationResult,
  MAX_OPTIMIZER_SLOTS,
  mapIterable,
  type OptimizerStateHeader,
  type ReplicaStateChunk,
  type RingReport,
  replicaStateChunks,
  replicaStateFromTensor,
  type TrainRequest,
  type TrainResponse,
  writeMessages,
} from '@shardline/protocol';
import {
  checkEvaluationReport,
  checkShareReport,
  type EvalAssignment,
  evaluationTopK,
  type ReplicaEvaluation,
  type ReplicaState,
  type RingShareAssignment,
  type RingShareReport,
  type RingTrainingWorker,
  ringAbortError,
} from '@shardline/training';
import {
  assertNever,
  awaitReply,
  cut,
  firstNonFinite,
  MAX_WORKER_ERROR_CHARS,
  type Pending,
  type RemoteWorker,
  type RemoteWorkerContext,
  type RemoteWorkerInfo,
  refuseAndFail,
  stateFromCounts,
  stopStream,
  workerFailed,
} from './remoteWorker.js';

/** A RingTrainingWorker bound to one open Train stream, with the cluster's view of it. */
export interface RemoteRingWorker extends RemoteWorker, RingTrainingWorker {
  readonly peerAddress: string;
  /** Always known for a remote member: its heartbeats tell the trainer who went quiet. */
  readonly lastSeenMs: number;
}

/** The longest worker id a RingReport may name as the suspect (worker ids are UUIDs). */
export const MAX_SUSPECT_ID_CHARS = 64;

/** Abandoned requests remembered per kind, so their late replies are dropped quietly. */
const ABANDONED_REMEMBERED = 16;

/** CRC-32 as 8 lowercase hex digits, the form every checksum in ring mode travels in. */
const CHECKSUM = /^[0-9a-f]{8}$/;

/** The pending all-reduce of one step in one formation. */
interface PendingReduce extends Pending<RingShareReport> {
  assignment: RingShareAssignment;
  ringId: string;
}

/** A set that forgets its oldest entries beyond `limit`. */
function boundedSet<T>(limit: number): { add(value: T): void; has(value: T): boolean } {
  const values = new Set<T>();
  return {
    add(value) {
      values.add(value);
      if (values.size > limit) values.delete(values.values().next().value as T);
    },
    has: (value) => values.has(value),
  };
}

/** Rejects with `signal.reason` as soon as `signal` aborts, whatever `promise` does after. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * Creates a {@link RemoteRingWorker} over `call`. The worker joined with a peer endpoint
 * (`info.peerAddress`) and the capability "exchange.ring"; cluster.ts has checked both.
 */
export function createRemoteRingWorker(
  info: RemoteWorkerInfo,
  call: ServerDuplexStream<TrainRequest, TrainResponse>,
  context: RemoteWorkerContext,
): RemoteRingWorker {
  const { job, layout, traffic } = context;
  const name = info.name;
  let replicaVersion = -1;
  let lastStep = -1;
  let lastShare: RemoteWorker['lastShare'];
  let lastSeenMs = Date.now();
  let reduce: PendingReduce | undefined;
  let evaluation: (Pending<ReplicaEvaluation> & { slice: EvalAssignment }) | undefined;
  let pull: (Pending<ReplicaState> & { header: OptimizerStateHeader | undefined }) | undefined;
  let pushing = 0;
  let requestIds = 0n;
  let failure: ShardlineError | undefined;
  let queue: Promise<void> = Promise.resolve();
  const abandonedSteps = boundedSet<string>(ABANDONED_REMEMBERED);
  const abandonedRequests = boundedSet<bigint>(ABANDONED_REMEMBERED);
  let resolveClosed: (why: string) => void = () => {};
  const closed = new Promise<string>((r) => {
    resolveClosed = r;
  });
  const stateAssembler = createTensorAssembler({
    // The weights and at most MAX_OPTIMIZER_SLOTS slots of the same size: refused before any
    // memory is allocated when a worker announces more.
    maxTensorBytes: layout.size * 4 * (1 + MAX_OPTIMIZER_SLOTS),
    expectedFingerprint: layout.fingerprint,
    expectedDtypes: [DataType.FLOAT32],
    maxChunkBytes: job.maxChunkBytes,
    label: `replica state from worker ${name}`,
  });
  const stepKey = (step: bigint | number, ringId: string) => `${step}/${ringId}`;

  const guard = (signal: AbortSignal | undefined) => {
    if (failure) throw failure;
    signal?.throwIfAborted();
  };
  /** Writes `messages` after everything queued before them; a write failure fails the worker. */
  const enqueue = (messages: Iterable<TrainResponse>): Promise<void> => {
    const run = queue.then(() => {
      if (failure) throw failure;
      return writeMessages(call, messages);
    });
    queue = run.catch(() => {});
    return run.catch((error: unknown) => {
      const e = toShardlineError(error, 'CONNECTION_LOST');
      worker.fail(e);
      throw e;
    });
  };
  /** For messages nobody awaits: a failure has already failed the worker (see enqueue). */
  const send = (message: TrainResponse) => {
    enqueue([message]).catch(() => {});
  };

  const receiveRingReport = (report: RingReport) => {
    const pending = reduce;
    if (!pending || pending.key !== report.step || pending.ringId !== report.ringId) {
      if (abandonedSteps.has(stepKey(report.step, report.ringId))) return;
      const expected = pending
        ? `expected step ${pending.key} in ring ${pending.ringId}`
        : 'none was pending';
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${name} sent a ring report for step ${report.step} in ring ${cut(report.ringId, 64)}, which no assignment asked for (${expected}). Run the same Shardline release on every machine.`,
      );
    }
    lastStep = Number(report.step);
    if (report.failure !== '') {
      if (report.suspectWorkerId.length > MAX_SUSPECT_ID_CHARS) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `Worker ${name} named a suspect worker id of ${report.suspectWorkerId.length} characters in its ring report for step ${report.step}: expected a worker id of at most ${MAX_SUSPECT_ID_CHARS}. Run the same Shardline release on every machine.`,
          { details: { field: 'suspect_worker_id' } },
        );
      }
      reduce = undefined;
      const error = ringAbortError(
        `Worker ${name}: ${cut(report.failure, MAX_WORKER_ERROR_CHARS)}`,
      );
      if (report.suspectWorkerId !== '') error.details.suspect = report.suspectWorkerId;
      pending.reject(error);
      return;
    }
    let share: RingShareReport;
    try {
      share = checkRingReport(report, pending.assignment, name, job.globalBatchSize);
    } catch (error) {
      context.onRejected?.('report');
      throw error;
    }
    reduce = undefined;
    lastShare = { samples: share.sampleCount, computeSeconds: share.computeSeconds };
    pending.resolve(share);
  };

  const receiveEvaluation = (result: EvaluationResult) => {
    const pending = evaluation;
    if (!pending || pending.key !== result.requestId) {
      if (abandonedRequests.has(result.requestId)) return;
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${name} sent an evaluation no request asked for.`,
      );
    }
    let state: ClassificationState;
    try {
      state = stateFromCounts(result.counts, context.classNames, name);
      checkEvaluationReport(state, pending.slice, name, {
        numClasses: context.classNames.length,
        topK: evaluationTopK(context.classNames.length),
      });
      if (!CHECKSUM.test(result.weightsChecksum)) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `Worker ${name} reported weights_checksum ${JSON.stringify(cut(result.weightsChecksum, 64))} for test images ${pending.slice.start} to ${pending.slice.end}, expected 8 lowercase hex digits (the CRC-32 of its replica's weights). Run the same Shardline release on every machine.`,
          { details: { field: 'weights_checksum' } },
        );
      }
    } catch (error) {
      context.onRejected?.('evaluation');
      throw error;
    }
    evaluation = undefined;
    pending.resolve({ state, weightsChecksum: result.weightsChecksum });
  };

  const receiveState = (message: ReplicaStateChunk) => {
    const pending = pull;
    if (!pending || pending.key !== message.requestId) {
      if (abandonedRequests.has(message.requestId)) return;
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${name} sent replica state for request ${message.requestId}, which no PullState asked for. Run the same Shardline release on every machine.`,
      );
    }
    if (!message.chunk) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${name} sent a replica state message without its chunk. Run the same Shardline release on every machine.`,
      );
    }
    if (message.chunk.chunkIndex === 0) pending.header = message.optimizer;
    const tensor = stateAssembler.push(message.chunk);
    if (!tensor) return;
    const version = Number(tensor.meta.version);
    if (version !== replicaVersion) {
      throw new ShardlineError(
        'MISMATCH',
        `Worker ${name} sent its replica at weights version ${version}, expected ${replicaVersion} (the steps committed to it). Its replica diverged; it is dropped and the job goes on without it.`,
      );
    }
    if (job.optimizer && pending.header && pending.header.kind !== job.optimizer.kind) {
      throw new ShardlineError(
        'MISMATCH',
        `Worker ${name} sent an optimizer state of kind ${cut(pending.header.kind, 32)}, expected ${job.optimizer.kind} (the job's --optimizer).`,
      );
    }
    const values = decodeTensor(tensor.bytes, tensor.meta.dtype);
    const bad = firstNonFinite(values);
    if (bad >= 0) {
      throw new ShardlineError(
        'NUMERIC',
        `Worker ${name} sent its replica state with ${values[bad]} at index ${bad} of ${formatCount(values.length)}: expected finite numbers. It is dropped; lower --learning-rate if every replica diverges.`,
      );
    }
    const state = replicaStateFromTensor(
      pending.header,
      values,
      version,
      layout.size,
      `worker ${name}`,
    );
    pull = undefined;
    traffic.received += tensor.bytes.byteLength;
    pending.resolve(state);
  };

  /** Empties `reduce` when the trainer stops waiting, remembering it so its report is dropped. */
  const abandonReduce = (step: bigint, ringId: string) => {
    if (reduce?.key !== step || reduce.ringId !== ringId) return;
    abandonedSteps.add(stepKey(step, ringId));
    reduce = undefined;
  };

  const evaluateReplica = (
    slice: EvalAssignment,
    version: number,
    signal?: AbortSignal,
  ): Promise<ReplicaEvaluation> => {
    guard(signal);
    if (evaluation) {
      throw new ShardlineError(
        'INTERNAL',
        `Worker ${name} was asked for a second evaluation while test images ${evaluation.slice.start} to ${evaluation.slice.end} are still being evaluated: expected one at a time.`,
      );
    }
    if (version !== replicaVersion) {
      throw new ShardlineError(
        'MISMATCH',
        `Worker ${name} holds weights version ${replicaVersion}, asked to evaluate version ${version}: push it the state first.`,
      );
    }
    requestIds++;
    const id = requestIds;
    const result = awaitReply<ReplicaEvaluation>(
      id,
      signal,
      (p) => {
        evaluation = { ...p, slice };
      },
      (p) => {
        if (evaluation?.key !== p.key) return;
        abandonedRequests.add(p.key);
        evaluation = undefined;
      },
    );
    send({
      kind: {
        $case: 'evaluate',
        value: {
          requestId: id,
          start: slice.start,
          end: slice.end,
          weightsVersion: BigInt(version),
        },
      },
    });
    return result;
  };

  const worker: RemoteRingWorker = {
    id: info.id,
    name,
    info,
    peerAddress: info.peerAddress,
    closed,
    get replicaVersion() {
      return replicaVersion;
    },
    get lastStep() {
      return lastStep;
    },
    get lastShare() {
      return lastShare;
    },
    get lastSeenMs() {
      return lastSeenMs;
    },
    get busy() {
      return reduce !== undefined || pull !== undefined || pushing > 0;
    },
    async computeShare(assignment) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${name} trains in ring mode and sends no gradient to the coordinator: computeShare (star) was called for step ${assignment.step}, expected reduceShare.`,
      );
    },
    async evaluate(slice, weights, signal) {
      if (weights.version !== replicaVersion) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `Worker ${name} trains in ring mode and evaluates only its own replica (weights version ${replicaVersion}), asked for version ${weights.version}: push it the state first, or call evaluateReplica.`,
        );
      }
      return (await evaluateReplica(slice, weights.version, signal)).state;
    },
    async pushState(state, signal) {
      guard(signal);
      // Chunked (and copied) now, not when the queue reaches them: the caller's arrays may
      // change as soon as this returns.
      const messages = Array.from(
        mapIterable(
          replicaStateChunks(state, layout.fingerprint, { maxChunkBytes: job.maxChunkBytes }),
          (value): TrainResponse => ({ kind: { $case: 'state', value } }),
        ),
      );
      const bytes = messages.reduce(
        (sum, m) =>
          sum + (m.kind?.$case === 'state' ? (m.kind.value.chunk?.data.byteLength ?? 0) : 0),
        0,
      );
      // Everything queued after the state reaches the worker after it, so the version is right
      // from here on.
      replicaVersion = state.version;
      pushing++;
      const written = enqueue(messages).then(
        () => {
          pushing--;
          traffic.sent += bytes;
        },
        (error: unknown) => {
          pushing--;
          throw error;
        },
      );
      return untilAborted(written, signal);
    },
    async reduceShare(assignment, signal) {
      guard(signal);
      if (reduce) {
        throw new ShardlineError(
          'INTERNAL',
          `Worker ${name} was given step ${assignment.step} while step ${reduce.key} (ring ${reduce.ringId}) is still pending: expected one step at a time (commit or abort it first).`,
        );
      }
      if (replicaVersion !== assignment.step) {
        throw new ShardlineError(
          'MISMATCH',
          `Worker ${name} holds weights version ${replicaVersion}, expected ${assignment.step} to compute step ${assignment.step}: push it the state first.`,
        );
      }
      const key = BigInt(assignment.step);
      const ringId = assignment.ring.id;
      const result = awaitReply<RingShareReport>(
        key,
        signal,
        (p) => {
          reduce = { ...p, assignment, ringId };
        },
        (p) => abandonReduce(p.key, ringId),
      );
      send({
        kind: {
          $case: 'assignment',
          value: {
            step: key,
            epoch: assignment.epoch,
            stepInEpoch: assignment.stepInEpoch,
            rank: assignment.rank,
            worldSize: assignment.worldSize,
            globalBatchSize: job.globalBatchSize,
            weightsVersion: key,
            ring: {
              ringId,
              members: assignment.ring.members.map((m) => ({
                workerId: m.workerId,
                peerAddress: m.peerAddress,
              })),
            },
          },
        },
      });
      return result;
    },
    commit(step, learningRate, checksum) {
      send({
        kind: { $case: 'commit', value: { step: BigInt(step), learningRate, checksum } },
      });
      replicaVersion = step + 1;
    },
    abortStep(step, reason) {
      const pending = reduce;
      if (pending && pending.key === BigInt(step)) {
        abandonReduce(pending.key, pending.ringId);
        pending.reject(ringAbortError(`Worker ${name}: step ${step} was aborted (${reason}).`));
      }
      send({
        kind: {
          $case: 'abort',
          value: { step: BigInt(step), reason: cut(reason, MAX_WORKER_ERROR_CHARS) },
        },
      });
    },
    async pullState(signal) {
      guard(signal);
      if (pull) {
        throw new ShardlineError(
          'INTERNAL',
          `Worker ${name} was asked for its replica state while request ${pull.key} is still being answered: expected one pull at a time.`,
        );
      }
      requestIds++;
      const id = requestIds;
      const result = awaitReply<ReplicaState>(
        id,
        signal,
        (p) => {
          pull = { ...p, header: undefined };
        },
        (p) => {
          if (pull?.key !== p.key) return;
          abandonedRequests.add(p.key);
          pull = undefined;
          // A transfer cut off half-way is never resumed; its later chunks are dropped above.
          stateAssembler.reset();
        },
      );
      send({ kind: { $case: 'pullState', value: { requestId: id } } });
      return result;
    },
    evaluateReplica: async (slice, version, signal) => evaluateReplica(slice, version, signal),
    receive(message) {
      lastSeenMs = Date.now();
      const kind = message.kind;
      if (!kind) return;
      try {
        switch (kind.$case) {
          case 'ringReport':
            return receiveRingReport(kind.value);
          case 'state':
            return receiveState(kind.value);
          case 'evaluation':
            return receiveEvaluation(kind.value);
          case 'gradient':
            throw new ShardlineError(
              'INVALID_ARGUMENT',
              `Worker ${name} sent a gradient to the coordinator, but this job exchanges gradients in a ring among the workers: expected ring reports. Run the same Shardline release on every machine.`,
            );
          case 'error':
            throw workerFailed(name, kind.value.message);
          // Proof of life (recorded above), and the attach that opened this stream.
          case 'heartbeat':
          case 'attach':
            return;
          default:
            return assertNever(kind);
        }
      } catch (error) {
        if (kind.$case !== 'error') context.onRefused?.();
        refuseAndFail(call, worker, error);
      }
    },
    stop(reason, message) {
      stopStream(call, reason, message);
    },
    fail(error) {
      failure ??= error;
      reduce?.reject(error);
      evaluation?.reject(error);
      pull?.reject(error);
      reduce = undefined;
      evaluation = undefined;
      pull = undefined;
      resolveClosed(error.message);
    },
  };
  return worker;
}

/**
 * Checks a successful RingReport against the member's assignment and turns it into the
 * trainer's RingShareReport: the share's numbers as in star mode (checkShareReport), a checksum
 * of 8 lowercase hex digits, a total that covers at least this share and at most the global
 * batch, and finite, non-negative timings and counts.
 */
export function checkRingReport(
  report: RingReport,
  assignment: RingShareAssignment,
  worker: string,
  globalBatchSize: number,
): RingShareReport {
  const refuse = (field: string, value: unknown, expected: string) =>
    new ShardlineError(
      'INVALID_ARGUMENT',
      `Worker ${worker} reported ${field} ${String(value)} for step ${assignment.step}, expected ${expected}. The report was rejected and the work is redone without this worker.`,
      { details: { field, value: String(value) } },
    );
  const result = report.result;
  if (!result) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Worker ${worker} sent a ring report for step ${assignment.step} without its result: expected sample count, loss, correct and compute seconds. Run the same Shardline release on every machine.`,
      { details: { field: 'result' } },
    );
  }
  checkShareReport(result, assignment, worker);
  if (!CHECKSUM.test(report.checksum)) {
    throw refuse(
      'checksum',
      JSON.stringify(cut(report.checksum, 64)),
      '8 lowercase hex digits (the CRC-32 of the averaged gradient)',
    );
  }
  const total = report.totalSamples;
  if (total < BigInt(result.sampleCount) || total > BigInt(globalBatchSize)) {
    throw refuse(
      'total_samples',
      total,
      `from ${result.sampleCount} (its own share) to ${globalBatchSize} (the global batch)`,
    );
  }
  if (!Number.isFinite(report.exchangeSeconds) || report.exchangeSeconds < 0) {
    throw refuse(
      'exchange_seconds',
      report.exchangeSeconds,
      'a finite number of seconds, 0 or more',
    );
  }
  if (report.bytesSent > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw refuse('bytes_sent', report.bytesSent, `at most ${Number.MAX_SAFE_INTEGER}`);
  }
  return {
    sampleCount: result.sampleCount,
    loss: result.loss,
    correct: result.correct,
    computeSeconds: result.computeSeconds,
    totalSamples: Number(total),
    checksum: report.checksum,
    exchangeSeconds: report.exchangeSeconds,
    sentBytes: Number(report.bytesSent),
  };
}
