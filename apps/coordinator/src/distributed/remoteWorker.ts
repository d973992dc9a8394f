/**
 * A worker in another process, reached through its Train stream. It implements the same
 * TrainingWorker interface as the in-process worker, so the synchronous trainer cannot tell
 * them apart: weights go out when the worker is behind, then the assignment, and the call
 * resolves when the worker's gradient (or evaluation) has fully arrived and checked out.
 */
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { type ParamLayout, ShardlineError, toShardlineError } from '@shardline/core';
import { type ClassificationState, DEFAULT_EPSILON } from '@shardline/metrics';
import {
  type ClassificationCounts,
  createTensorAssembler,
  decodeTensor,
  type EvaluationResult,
  encodeTensor,
  encodeTrainResponseOnce,
  type GradientChunk,
  type JobSpec,
  type TrainRequest,
  type TrainResponse,
  toGrpcStatus,
  weightsMessages,
  writeMessages,
} from '@shardline/protocol';
import {
  checkEvaluationReport,
  checkShareReport,
  type EvalAssignment,
  evaluationTopK,
  type ShareAssignment,
  type ShareNumbers,
  type ShareResult,
  type TrainingWorker,
  type WeightsSnapshot,
} from '@shardline/training';

/** Builds each weights version's messages once, however many workers need them. */
export interface WeightsEncoder {
  /** The Train messages that carry `weights` (chunked, checksummed) and their payload bytes. */
  messages(weights: WeightsSnapshot): { messages: readonly TrainResponse[]; bytes: number };
}

/**
 * Creates a {@link WeightsEncoder} for the job. Every worker gets the very same chunk messages
 * for a version (one transfer id per version), so encoding and the CRC-32 run once per step
 * rather than once per worker.
 */
export function createWeightsEncoder(job: JobSpec, layout: ParamLayout): WeightsEncoder {
  let cached: { version: number; messages: readonly TrainResponse[]; bytes: number } | undefined;
  return {
    messages(weights) {
      if (cached?.version !== weights.version) {
        const bytes = encodeTensor(weights.params, job.weightsDtype);
        const meta = {
          dtype: job.weightsDtype,
          shape: [layout.size],
          elementCount: layout.size,
          layoutFingerprint: layout.fingerprint,
          version: BigInt(weights.version),
          step: BigInt(weights.version),
        };
        // Each chunk is encoded here, once for every worker, into memory of its own: `bytes`
        // may be a view of the master weights, which change in place at the next optimizer
        // step while a slow worker's stream may still be writing these chunks.
        cached = {
          version: weights.version,
          messages: Array.from(
            weightsMessages(meta, bytes, job.maxChunkBytes, {
              transferId: `weights-${weights.version}`,
            }),
            encodeTrainResponseOnce,
          ),
          bytes: bytes.byteLength,
        };
      }
      return cached;
    },
  };
}

/** A reply the coordinator waits for: a step's gradient or an evaluation. */
export interface Pending<T> {
  key: bigint;
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** Details of a joined worker, for logs and status. */
export interface RemoteWorkerInfo {
  id: string;
  name: string;
  hostname: string;
  pid: number;
  backend: string;
  /** Its peer endpoint (JoinRequest.peer_address), what ring members dial; empty when none. */
  peerAddress: string;
}

/** A TrainingWorker bound to one open Train stream. */
export interface RemoteWorker extends TrainingWorker {
  readonly info: RemoteWorkerInfo;
  /** Its peer endpoint (`info.peerAddress`); empty when it serves none (star jobs need none). */
  readonly peerAddress: string;
  /** Resolves when the stream ends, with why. */
  readonly closed: Promise<string>;
  /** The last step whose gradient arrived (-1: none yet) and when the worker last sent anything. */
  readonly lastStep: number;
  readonly lastSeenMs: number;
  /** Its last accepted share: images and the seconds it reported computing them (the dashboard). */
  readonly lastShare: { samples: number; computeSeconds: number } | undefined;
  /**
   * True while a step's work is outstanding (a share; in ring mode also a reduction or a state
   * transfer): the worker may be computing without a heartbeat, and that call's deadline applies
   * instead of the silence sweep. An evaluation does not count: a worker heartbeats between its
   * evaluation batches, so one that stays silent through an evaluation is gone or stuck.
   */
  readonly busy: boolean;
  /** Feeds a message the worker sent (the server's data handler calls this). */
  receive(message: TrainRequest): void;
  /** Tells the worker to stop and ends the stream. */
  stop(reason: number, message: string): void;
  /** Fails whatever is pending (the stream broke). */
  fail(error: ShardlineError): void;
}

/** Why a worker's report was refused, for counting. */
export type RejectionReason = 'non-finite gradient' | 'report' | 'evaluation';

/** What {@link createRemoteWorker} needs besides the worker and its stream. */
export interface RemoteWorkerContext {
  job: JobSpec;
  layout: ParamLayout;
  encoder: WeightsEncoder;
  /** Tensor bytes sent and received, summed over every worker. */
  traffic: { sent: number; received: number };
  /** The job's class names: an evaluation's confusion matrix has one row and column for each. */
  classNames: readonly string[];
  /** Called for each report refused: a non-finite gradient, or numbers that fail a check. */
  onRejected?: (reason: RejectionReason) => void;
  /**
   * Called for each message refused (after `onRejected`, for a report): the stream ends for it.
   * Not for the worker's own WorkerError, which is a failure it reports, not a refusal.
   */
  onRefused?: () => void;
}

/**
 * Waits for one reply under `signal`: the promise rejects with `signal.reason` as soon as the
 * signal aborts (the step's deadline passed, or the run was cancelled), and `clear` empties the
 * slot, so a late reply is refused as one nobody asked for.
 */
export function awaitReply<T>(
  key: bigint,
  signal: AbortSignal | undefined,
  store: (pending: Pending<T>) => void,
  clear: (pending: Pending<T>) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      clear(pending);
      reject(signal!.reason);
    };
    const pending: Pending<T> = {
      key,
      resolve(value) {
        signal?.removeEventListener('abort', onAbort);
        resolve(value);
      },
      reject(error) {
        signal?.removeEventListener('abort', onAbort);
        reject(error);
      },
    };
    store(pending);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Creates a {@link RemoteWorker} over `call`. */
export function createRemoteWorker(
  info: RemoteWorkerInfo,
  call: ServerDuplexStream<TrainRequest, TrainResponse>,
  context: RemoteWorkerContext,
): RemoteWorker {
  const { job, layout, encoder, traffic } = context;
  let version = -1;
  let lastStep = -1;
  let lastShare: RemoteWorker['lastShare'];
  let lastSeenMs = Date.now();
  let gradient:
    | (Pending<ShareResult> & { assignment: ShareAssignment; numbers?: ShareNumbers })
    | undefined;
  let evaluation: (Pending<ClassificationState> & { slice: EvalAssignment }) | undefined;
  let requestIds = 0n;
  let failure: ShardlineError | undefined;
  let resolveClosed: (why: string) => void = () => {};
  const closed = new Promise<string>((r) => {
    resolveClosed = r;
  });
  const assembler = createTensorAssembler({
    // Refuse oversized transfers before allocating: a gradient is exactly this big.
    maxTensorBytes: layout.size * 4,
    expectedFingerprint: layout.fingerprint,
    expectedElementCount: layout.size,
    expectedDtypes: [job.gradientDtype],
    maxChunkBytes: job.maxChunkBytes,
    label: `gradient from worker ${info.name}`,
    // One buffer per worker, reused step after step: a gradient is averaged before the same
    // worker's next one can arrive (the next step's assignment comes after the average).
    reuseBuffer: true,
  });

  const guard = (signal: AbortSignal | undefined) => {
    if (failure) throw failure;
    signal?.throwIfAborted();
  };
  const sendWeights = async (weights: WeightsSnapshot) => {
    if (version === weights.version) return;
    const { messages, bytes } = encoder.messages(weights);
    await writeMessages(call, messages);
    traffic.sent += bytes;
    version = weights.version;
  };
  /** Sends the weights the worker lacks, then `request`; a failure fails the pending reply. */
  const send = (weights: WeightsSnapshot, request: TrainResponse) => {
    sendWeights(weights)
      .then(() => call.write(request))
      .catch((error: unknown) => worker.fail(toShardlineError(error, 'CONNECTION_LOST')));
  };

  const receiveGradient = (chunk: GradientChunk) => {
    if (!gradient) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${info.name} sent a gradient no step asked for.`,
      );
    }
    if (chunk.result) {
      // Checked as they arrive, with the first chunk: a lie is refused before any tensor bytes
      // are assembled.
      try {
        checkShareReport(chunk.result, gradient.assignment, info.name);
      } catch (error) {
        context.onRejected?.('report');
        throw error;
      }
      gradient.numbers = chunk.result;
    }
    const tensor = assembler.push(chunk.chunk!);
    if (!tensor) return;
    if (tensor.meta.step !== gradient.key) {
      throw new ShardlineError(
        'MISMATCH',
        `Worker ${info.name} sent a gradient for step ${tensor.meta.step}, expected step ${gradient.key}.`,
      );
    }
    const numbers = gradient.numbers;
    if (!numbers) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${info.name} sent a gradient without its sample count and loss.`,
      );
    }
    const values = decodeTensor(tensor.bytes, tensor.meta.dtype);
    const bad = firstNonFinite(values);
    if (bad >= 0) {
      context.onRejected?.('non-finite gradient');
      throw new ShardlineError(
        'NUMERIC',
        `Worker ${info.name} sent a gradient for step ${tensor.meta.step} with ${values[bad]} at index ${bad}: expected finite numbers. ` +
          'The gradient was rejected and the step runs without this worker; check its backend and data, or lower --learning-rate.',
      );
    }
    const done = gradient;
    gradient = undefined;
    traffic.received += tensor.bytes.byteLength;
    lastStep = Number(done.key);
    lastShare = { samples: numbers.sampleCount, computeSeconds: numbers.computeSeconds };
    done.resolve({ ...numbers, gradient: values });
  };

  const receiveEvaluation = (result: EvaluationResult) => {
    if (!evaluation || evaluation.key !== result.requestId) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${info.name} sent an evaluation no request asked for.`,
      );
    }
    let state: ClassificationState;
    try {
      state = stateFromCounts(result.counts, context.classNames, info.name);
      checkEvaluationReport(state, evaluation.slice, info.name, {
        numClasses: context.classNames.length,
        topK: evaluationTopK(context.classNames.length),
      });
    } catch (error) {
      context.onRejected?.('evaluation');
      throw error;
    }
    const done = evaluation;
    evaluation = undefined;
    done.resolve(state);
  };

  const worker: RemoteWorker = {
    id: info.id,
    name: info.name,
    info,
    peerAddress: info.peerAddress,
    closed,
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
      return gradient !== undefined;
    },
    async computeShare(assignment, weights, signal) {
      guard(signal);
      const key = BigInt(assignment.step);
      const result = awaitReply<ShareResult>(
        key,
        signal,
        (p) => {
          gradient = { ...p, assignment };
        },
        (p) => {
          if (gradient?.key === p.key) gradient = undefined;
        },
      );
      const request: TrainResponse = {
        kind: {
          $case: 'assignment',
          value: {
            step: key,
            epoch: assignment.epoch,
            stepInEpoch: assignment.stepInEpoch,
            rank: assignment.rank,
            worldSize: assignment.worldSize,
            globalBatchSize: job.globalBatchSize,
            weightsVersion: BigInt(weights.version),
            ring: undefined,
          },
        },
      };
      send(weights, request);
      return result;
    },
    async evaluate(slice, weights, signal) {
      guard(signal);
      requestIds++;
      const result = awaitReply<ClassificationState>(
        requestIds,
        signal,
        (p) => {
          evaluation = { ...p, slice };
        },
        (p) => {
          if (evaluation?.key === p.key) evaluation = undefined;
        },
      );
      const request: TrainResponse = {
        kind: {
          $case: 'evaluate',
          value: {
            requestId: requestIds,
            start: slice.start,
            end: slice.end,
            weightsVersion: BigInt(weights.version),
          },
        },
      };
      send(weights, request);
      return result;
    },
    receive(message) {
      lastSeenMs = Date.now();
      const kind = message.kind;
      if (!kind) return;
      try {
        switch (kind.$case) {
          case 'gradient':
            return receiveGradient(kind.value);
          case 'evaluation':
            return receiveEvaluation(kind.value);
          case 'error':
            throw workerFailed(info.name, kind.value.message);
          case 'ringReport':
          case 'state':
            throw new ShardlineError(
              'INVALID_ARGUMENT',
              `Worker ${info.name} sent a ring-mode message (${kind.$case}), but this job exchanges gradients through the coordinator (star): expected gradients. Run the same Shardline release on every machine.`,
            );
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
      gradient?.reject(error);
      evaluation?.reject(error);
      gradient = undefined;
      evaluation = undefined;
      resolveClosed(error.message);
    },
  };
  return worker;
}

/** Tells the worker to stop, with why, and ends its stream (nothing when it already ended). */
export function stopStream(
  call: ServerDuplexStream<TrainRequest, TrainResponse>,
  reason: number,
  message: string,
): void {
  if (!call.writableEnded && !call.destroyed) {
    call.write({ kind: { $case: 'stop', value: { reason, message, rejoinAllowed: false } } });
    call.end();
  }
}

/** The error a worker's WorkerError message becomes: its own words, cut to a loggable length. */
export function workerFailed(name: string, message: string): ShardlineError {
  return new ShardlineError(
    'INTERNAL',
    `Worker ${name} failed: ${cut(message, MAX_WORKER_ERROR_CHARS)}`,
  );
}

/**
 * Ends a worker's stream over a message it should not have sent: the worker is told why with a
 * gRPC status, then whatever waits on it fails, so the trainer drops it and carries on without
 * it and the model never sees the bad input.
 */
export function refuseAndFail(
  call: ServerDuplexStream<TrainRequest, TrainResponse>,
  worker: { fail(error: ShardlineError): void },
  error: unknown,
): void {
  const e = toShardlineError(error, 'INVALID_ARGUMENT');
  if (!call.writableEnded && !call.destroyed) call.emit('error', toGrpcStatus(e));
  worker.fail(e);
}

/**
 * An evaluation's typed counts as the mergeable ClassificationState of @shardline/metrics. The
 * class names, top-k list and epsilon are the job's: only the counts and sums travel.
 */
export function stateFromCounts(
  counts: ClassificationCounts | undefined,
  classNames: readonly string[],
  worker: string,
): ClassificationState {
  if (!counts) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Worker ${worker} sent an evaluation without its counts: expected the counts field. Run the same Shardline release on every machine.`,
      { details: { field: 'counts' } },
    );
  }
  const toNumber = (value: bigint, field: string) => {
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${worker} reported ${field} ${value}, expected at most ${Number.MAX_SAFE_INTEGER}. The report was rejected and the work is redone without this worker.`,
        { details: { field, value: String(value) } },
      );
    }
    return Number(value);
  };
  const topK = evaluationTopK(classNames.length);
  if (counts.topK.join() !== topK.join()) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Worker ${worker} reported top_k [${counts.topK.join(', ')}], expected [${topK.join(', ')}]. The report was rejected and the work is redone without this worker.`,
      { details: { field: 'top_k' } },
    );
  }
  return {
    version: 1,
    numClasses: classNames.length,
    classNames: [...classNames],
    topK,
    epsilon: DEFAULT_EPSILON,
    count: toNumber(counts.count, 'count'),
    confusion: counts.confusion.map((v, i) => toNumber(v, `confusion entry ${i}`)),
    lossSum: counts.lossSum,
    topKHits: counts.topKHits.map((v, i) => toNumber(v, `top_k_hits[${i}]`)),
    reportedLossSum: counts.reportedLossSum,
    reportedLossCount: toNumber(counts.reportedLossCount, 'reported_loss_count'),
    // Checked against the slice with the rest of the report (checkEvaluationReport).
    misclassified: counts.misclassified.map((m, i) => ({
      index: toNumber(m.index, `misclassified[${i}].index`),
      label: m.label,
      predicted: m.predicted,
      confidence: m.confidence,
    })),
  };
}

/** Longest error message from a worker that is logged whole; the rest is cut with a marker. */
export const MAX_WORKER_ERROR_CHARS = 2000;

/** `text` cut to `max` characters with a marker saying how much was left out. */
export function cut(text: string, max: number): string {
  return text.length <= max
    ? text
    : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

/** Compile-time proof that a switch handled every case of a oneof. */
export function assertNever(value: never): never {
  throw new ShardlineError('INTERNAL', `Unhandled message kind: ${JSON.stringify(value)}`);
}

/** Index of the first NaN or infinity in `values`, or -1. */
export function firstNonFinite(values: Float32Array): number {
  // A float32 is NaN or infinite exactly when its 8 exponent bits are all ones. Testing the bits,
  // four values per iteration, takes half the time of a float comparison per value (0.8 ms
  // instead of 1.6 for the seed CNN's 1.4 million), and this runs for every gradient, on the
  // coordinator's critical path.
  const bits = new Int32Array(values.buffer, values.byteOffset, values.length);
  const n = bits.length;
  const E = 0x7f800000;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    if (
      (bits[i]! & E) === E ||
      (bits[i + 1]! & E) === E ||
      (bits[i + 2]! & E) === E ||
      (bits[i + 3]! & E) === E
    ) {
      break; // the loop below finds which of the four
    }
  }
  for (; i < n; i++) if ((bits[i]! & E) === E) return i;
  return -1;
}
