/**
 * Ring mode on a worker (`JobSpec.exchange = EXCHANGE_RING`): the replica it keeps (weights and
 * optimizer state), the gRPC ring link of the formation it currently belongs to, and one step's
 * work: compute the share on the replica's weights, all-reduce it with the other members, stage
 * the average, and say what to report. The Train stream itself stays in session.ts: this module
 * turns coordinator messages into replica changes and step outcomes into report values.
 *
 * Two-phase steps: an all-reduce that succeeds only stages the average; the step is applied when
 * the coordinator commits it with the checksum every member reported, so a step is applied by
 * every member or by none (packages/training's replica enforces it).
 *
 * Blame: when the all-reduce fails, the report names the left neighbour as suspect only when
 * this worker refused something that neighbour sent (bad CRC, wrong step, non-finite values, a
 * chunk too large, a hello for another formation). A stream that broke off or was cancelled
 * names nobody: that is how any member's failure travels round the ring, so every other member
 * sees one, and naming the neighbour would drop an innocent worker.
 */
import { type ChannelCredentials, credentials } from '@grpc/grpc-js';
import {
  formatCount,
  type Logger,
  type OptimizerKind,
  OptimizerKinds,
  type ParamLayout,
  ShardlineError,
  toShardlineError,
} from '@shardline/core';
import {
  type CommitStep,
  createTensorAssembler,
  DEFAULT_CHUNK_BYTES,
  dataTypeToJSON,
  decodeTensor,
  type JobSpec,
  MAX_OPTIMIZER_SLOTS,
  type OptimizerStateHeader,
  type ReplicaStateChunk,
  type RingReport,
  replicaStateChunks,
  replicaStateFromTensor,
  type StepAssignment,
  type TensorAssembler,
} from '@shardline/protocol';
import {
  createReplica,
  type Replica,
  type RingDtype,
  type RingLink,
  type RingMessage,
  ringAllReduce,
  type ShareResult,
  type WeightsSnapshot,
} from '@shardline/training';
import { createGrpcRingLink, type GrpcRingLink } from './peer/grpcRingLink.js';
import type { PeerServer } from './peer/peerServer.js';
import { type PeerTls, peerChannelCredentials } from './peer/peerTls.js';
import { ringDtypeOf } from './peer/ringDtype.js';

/** Options of {@link createRingMember}. */
export interface RingMemberOptions {
  /** The job, whose exchange is ring: its optimizer, chunk size, layout and id. */
  job: JobSpec;
  layout: ParamLayout;
  /** This worker's id from JoinResponse. */
  workerId: string;
  /** This worker's peer endpoint, where the left neighbours' streams arrive. */
  server: PeerServer;
  /** The job's token, sent to the right neighbours' endpoints. */
  token?: string;
  /**
   * Dial the right neighbours with mutual TLS (the worker's channel uses TLS, and its peer
   * endpoint serves TLS too); plaintext when absent.
   */
  peerTls?: PeerTls;
  logger: Logger;
}

/** Computes this worker's share of a step on the given weights (the in-process worker). */
export type ShareComputation = (weights: WeightsSnapshot) => Promise<ShareResult>;

/**
 * How one ring step ended on this member, and what to tell the coordinator:
 * - `reported`: send `report` as TrainRequest.ring_report (a success, with the average staged,
 *   or a failure of the all-reduce, with `failure` and maybe `suspectWorkerId` set);
 * - `failed`: this worker's own part failed (its computation, its replica is at another version,
 *   a malformed formation): send a non-fatal WorkerError for the step;
 * - `aborted`: the coordinator called it off (AbortStep, a newer assignment, stop): send nothing.
 */
export type RingStepOutcome =
  | { kind: 'reported'; report: RingReport }
  | { kind: 'failed'; error: ShardlineError }
  | { kind: 'aborted'; reason: unknown };

/** One worker's part in ring mode; see the module comment. */
export interface RingMember {
  readonly replica: Replica;
  /**
   * The replica's weights as the in-process worker takes them. Its `version` is a counter of
   * replica changes here, not the replica's version: the in-process worker skips rewriting the
   * model when the version is the one it last saw, and a state pushed to a worker can hold the
   * same version with other values (the worker fell out of step).
   */
  weights(): WeightsSnapshot;
  /**
   * Takes one chunk of a replica state pushed by the coordinator; once the state is whole, loads
   * it into the replica (dropping anything staged) and returns its version. Throws a
   * ShardlineError for a chunk or state that breaks the protocol.
   */
  receiveState(message: ReplicaStateChunk): number | undefined;
  /**
   * Runs step `assignment` (which must carry a ring formation): computes the share with
   * `compute`, all-reduces it in the formation and stages the average. Never rejects. `signal`
   * aborts it (the coordinator's AbortStep, a newer assignment, stop).
   */
  runStep(
    assignment: StepAssignment,
    compute: ShareComputation,
    signal: AbortSignal,
  ): Promise<RingStepOutcome>;
  /** Applies the staged step; throws `MISMATCH` when what is staged is not `commit`'s. */
  commit(commit: CommitStep): void;
  /** Drops what is staged for `step`; returns whether anything was. */
  discard(step: number): boolean;
  /** The replica's state as ReplicaStateChunks answering PullState `requestId`. */
  stateChunks(requestId: bigint): Iterable<ReplicaStateChunk>;
  /** Leaves the current formation in good order. Never rejects. */
  close(): Promise<void>;
}

/** Codes of a refusal: the receiver checked something and found it wrong. */
const REFUSAL_CODES: ReadonlySet<string> = new Set([
  'DATA_CORRUPT',
  'NUMERIC',
  'MISMATCH',
  'INVALID_ARGUMENT',
]);

/** The optimizer of a ring job, or a MISMATCH naming what the coordinator sent. */
/**
 * The ring's encoding: the job's gradient dtype (`--gradient-dtype` on the coordinator), which
 * every member reads from the same JobSpec.
 */
function ringDtypeOfJob(job: JobSpec): RingDtype {
  const dtype = ringDtypeOf(job.gradientDtype);
  if (dtype !== undefined) return dtype;
  throw new ShardlineError(
    'MISMATCH',
    `Job ${job.jobId} asks for gradients as ${dataTypeToJSON(job.gradientDtype)}; this worker's ring carries DATA_TYPE_FLOAT32, DATA_TYPE_FLOAT16 or DATA_TYPE_BFLOAT16. Run the same Shardline release on the coordinator and the workers.`,
    { details: { found: job.gradientDtype } },
  );
}

function optimizerOf(job: JobSpec): { kind: OptimizerKind; momentum: number; weightDecay: number } {
  const spec = job.optimizer;
  if (!spec || !(OptimizerKinds as readonly string[]).includes(spec.kind)) {
    throw new ShardlineError(
      'MISMATCH',
      `The coordinator's ring-mode job names the optimizer ${spec ? JSON.stringify(spec.kind) : '(none)'}; this worker runs ${OptimizerKinds.join(', ')}. ` +
        'Run the same Shardline release on every machine.',
    );
  }
  return {
    kind: spec.kind as OptimizerKind,
    momentum: spec.momentum,
    weightDecay: spec.weightDecay,
  };
}

/**
 * Creates the ring-mode state of one Train session: an empty replica (the coordinator pushes
 * the state before the first step) and no formation yet.
 *
 * @example
 * ```ts
 * const member = createRingMember({ job, layout, workerId, server: peer.server, token, logger });
 * member.receiveState(chunk);                       // TrainResponse.state, until loaded
 * const outcome = await member.runStep(assignment, (w) => local.computeShare(share, w), signal);
 * member.commit(commit);                            // TrainResponse.commit
 * ```
 */
export function createRingMember(options: RingMemberOptions): RingMember {
  const { job, layout, logger } = options;
  const replica = createReplica({
    size: layout.size,
    optimizer: optimizerOf(job),
    label: `worker ${options.workerId}'s replica`,
  });
  const maxChunkBytes = job.maxChunkBytes || DEFAULT_CHUNK_BYTES;
  const ringDtype = ringDtypeOfJob(job);
  const stateAssembler: TensorAssembler = createTensorAssembler({
    expectedFingerprint: layout.fingerprint,
    // Weights plus up to the most slots an optimizer may have, all float32.
    maxTensorBytes: layout.size * 4 * (1 + MAX_OPTIMIZER_SLOTS),
    maxChunkBytes,
    label: 'replica state from the coordinator',
  });
  // One credentials object for every formation: TLS exactly when this worker's own endpoint
  // serves TLS, since every member of a job's ring reaches the coordinator the same way.
  const peerCredentials = options.peerTls
    ? peerChannelCredentials(options.peerTls)
    : credentials.createInsecure();
  let stateHeader: OptimizerStateHeader | undefined;
  let generation = 0;
  let current: FormationLink | undefined;

  const drop = (link: FormationLink, reason: unknown) => {
    link.abort(reason);
    if (current === link) current = undefined;
  };

  const linkFor = (a: StepAssignment): FormationLink => {
    const ring = a.ring!;
    if (current?.ringId === ring.ringId) {
      if (current.rank === a.rank && current.worldSize === a.worldSize) return current;
      throw new ShardlineError(
        'MISMATCH',
        `Ring ${ring.ringId} was formed with this worker at rank ${current.rank} of ${current.worldSize}, but step ${a.step} places it at rank ${a.rank} of ${a.worldSize}. ` +
          'A formation never changes; a new one needs a new ring id. This is a bug in the coordinator.',
      );
    }
    // A new formation: the old one is over (its last all-reduce, if any, has settled).
    if (current) {
      const old = current;
      current = undefined;
      void old.close();
    }
    current = new FormationLink(a, {
      ...options,
      peerCredentials,
      logger,
    });
    return current;
  };

  return {
    replica,
    weights: () => ({ version: generation, params: replica.params }),
    receiveState(message) {
      const chunk = message.chunk;
      if (!chunk) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          'A replica state message from the coordinator carried no chunk. Run the same Shardline release on every machine.',
        );
      }
      if (chunk.chunkIndex === 0) stateHeader = message.optimizer;
      const tensor = stateAssembler.push(chunk);
      if (!tensor) return undefined;
      const values = decodeTensor(tensor.bytes, tensor.meta.dtype);
      const state = replicaStateFromTensor(
        stateHeader,
        values,
        Number(tensor.meta.version),
        layout.size,
        'the coordinator',
      );
      stateHeader = undefined;
      replica.load(state);
      generation++;
      return replica.version;
    },
    async runStep(a, compute, signal) {
      const step = Number(a.step);
      let link: FormationLink;
      try {
        link = linkFor(checkFormation(a, options.workerId));
      } catch (error) {
        return { kind: 'failed', error: toShardlineError(error) };
      }
      // Anything that stops this member before its all-reduce must still end the formation,
      // or the neighbours would wait for its stream until the coordinator's deadline.
      const fail = (error: ShardlineError): RingStepOutcome => {
        drop(link, error);
        return { kind: 'failed', error };
      };
      if (Number(a.weightsVersion) !== replica.version || step !== replica.version) {
        return fail(
          new ShardlineError(
            'MISMATCH',
            `Step ${a.step} is assigned at weights version ${a.weightsVersion}, but this worker's replica holds version ${replica.version}` +
              `${replica.version < 0 ? ' (no state yet)' : ''}. The coordinator must push the replica state (TrainResponse.state) first.`,
            { details: { step, expected: Number(a.weightsVersion), found: replica.version } },
          ),
        );
      }
      let share: ShareResult;
      try {
        share = await compute({ version: generation, params: replica.params });
      } catch (error) {
        if (signal.aborted) {
          drop(link, signal.reason);
          return { kind: 'aborted', reason: signal.reason };
        }
        return fail(toShardlineError(error));
      }
      const gradient = share.sampleCount > 0 ? share.gradient : new Float32Array(layout.size);
      const started = performance.now();
      const own = {
        sampleCount: share.sampleCount,
        loss: share.loss,
        correct: share.correct,
        computeSeconds: share.computeSeconds,
      };
      let result: Awaited<ReturnType<typeof ringAllReduce>>;
      try {
        result = await ringAllReduce({
          rank: a.rank,
          worldSize: a.worldSize,
          gradient,
          sampleCount: share.sampleCount,
          link: link.tracked,
          maxChunkBytes,
          step,
          signal,
          dtype: ringDtype,
        });
      } catch (error) {
        // The all-reduce aborted the link already; forget it: the retry comes in a new formation.
        drop(link, error);
        if (signal.aborted) return { kind: 'aborted', reason: signal.reason };
        const e = toShardlineError(error);
        const origin = link.originOf(e);
        if (origin === 'self') return { kind: 'failed', error: e };
        return {
          kind: 'reported',
          report: {
            step: a.step,
            ringId: link.ringId,
            result: own,
            checksum: '',
            totalSamples: 0n,
            exchangeSeconds: (performance.now() - started) / 1000,
            bytesSent: 0n,
            failure: e.message,
            suspectWorkerId: origin === 'left' ? link.leftWorkerId : '',
          },
        };
      }
      replica.stage(step, result.gradient, result.checksum);
      return {
        kind: 'reported',
        report: {
          step: a.step,
          ringId: link.ringId,
          result: own,
          checksum: result.checksum,
          totalSamples: BigInt(result.samples),
          exchangeSeconds: (performance.now() - started) / 1000,
          bytesSent: BigInt(result.sentBytes),
          failure: '',
          suspectWorkerId: '',
        },
      };
    },
    commit(c) {
      replica.commit(Number(c.step), c.learningRate, c.checksum);
      generation++;
    },
    discard(step) {
      if (replica.staged?.step !== step) return false;
      replica.discard();
      return true;
    },
    stateChunks(requestId) {
      if (replica.version < 0) {
        throw new ShardlineError(
          'MISMATCH',
          `The coordinator asked for this worker's replica state (request ${requestId}), but it holds none yet: push a state (TrainResponse.state) before pulling one.`,
        );
      }
      return replicaStateChunks(replica.state(), layout.fingerprint, {
        requestId,
        maxChunkBytes,
      });
    },
    async close() {
      const link = current;
      current = undefined;
      await link?.close();
    },
  };
}

/** The assignment, once its formation is one this worker can take part in. */
function checkFormation(a: StepAssignment, workerId: string): StepAssignment {
  const ring = a.ring;
  const members = ring?.members ?? [];
  const problem = !ring
    ? 'it carries no ring formation'
    : ring.ringId === ''
      ? 'its ring id is empty'
      : members.length !== a.worldSize
        ? `its formation lists ${formatCount(members.length)} members for a world size of ${a.worldSize}`
        : a.rank >= members.length
          ? `rank ${a.rank} is not in a formation of ${members.length}`
          : members[a.rank]!.workerId !== workerId
            ? `rank ${a.rank} of the formation is worker ${JSON.stringify(members[a.rank]!.workerId)}, not this worker (${JSON.stringify(workerId)})`
            : members.some((m) => m.peerAddress === '')
              ? 'a member has no peer address'
              : undefined;
  if (problem === undefined) return a;
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `The ring-mode assignment of step ${a.step} cannot be run: ${problem}. This is a bug in the coordinator; report it with both logs.`,
  );
}

/**
 * The link of one formation, with what it needs to assign blame: which errors came out of its
 * inbound side (refusals of what the left neighbour sent), and who that neighbour is.
 */
class FormationLink {
  readonly ringId: string;
  readonly rank: number;
  readonly worldSize: number;
  readonly leftRank: number;
  readonly leftWorkerId: string;
  /** The link the all-reduce uses: the gRPC link, recording what its inbound side rejected. */
  readonly tracked: RingLink;
  private readonly link: GrpcRingLink;
  private readonly inboundErrors = new WeakSet<object>();

  constructor(
    a: StepAssignment,
    options: RingMemberOptions & { peerCredentials: ChannelCredentials },
  ) {
    const members = a.ring!.members;
    this.ringId = a.ring!.ringId;
    this.rank = a.rank;
    this.worldSize = a.worldSize;
    this.leftRank = (a.rank - 1 + a.worldSize) % a.worldSize;
    this.leftWorkerId = members[this.leftRank]!.workerId;
    const right = members[(a.rank + 1) % a.worldSize]!;
    this.link = createGrpcRingLink({
      server: options.server,
      ringId: this.ringId,
      jobId: options.job.jobId,
      rank: a.rank,
      worldSize: a.worldSize,
      workerId: options.workerId,
      right: {
        address: right.peerAddress,
        credentials: options.peerCredentials,
        ...(options.token === undefined ? {} : { token: options.token }),
      },
      logger: options.logger,
    });
    const link = this.link;
    const inboundErrors = this.inboundErrors;
    this.tracked = {
      send: (message: RingMessage, signal?: AbortSignal) => link.send(message, signal),
      async next(signal?: AbortSignal) {
        try {
          return await link.next(signal);
        } catch (error) {
          if (typeof error === 'object' && error !== null) inboundErrors.add(error);
          throw error;
        }
      },
      abort: (reason: unknown) => link.abort(reason),
    };
  }

  /**
   * Where a failed all-reduce's error began: `left` when this member refused what its left
   * neighbour sent (the peer endpoint's checks, which reach the all-reduce through `next`, or
   * the all-reduce's own checks of each message, which name the sender's rank); `self` when a
   * check failed on this member's own values (its gradient was not finite, its sum overflowed);
   * `ring` for everything that only travelled here (a broken or cancelled stream, a neighbour
   * that left).
   */
  originOf(error: ShardlineError): 'left' | 'self' | 'ring' {
    if (!REFUSAL_CODES.has(error.code)) return 'ring';
    if (this.inboundErrors.has(error)) return 'left';
    // The link's own failures carry the ring id; the all-reduce's refusals of a message carry
    // the sender's rank and no ring id (with two members, left and right are the same rank).
    if (error.details.peer === this.leftRank && error.details.ringId === undefined) return 'left';
    return 'self';
  }

  abort(reason: unknown): void {
    this.link.abort(reason);
  }

  close(): Promise<void> {
    return this.link.close();
  }
}
