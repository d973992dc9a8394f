/**
 * A ring member that lives in this process: `createLocalWorker`'s computation, a
 * {@link Replica} of the weights and optimizer, and a ring all-reduce over an in-process
 * network. It is what the trainer's ring mode is tested against, and the reference the gRPC
 * ring members (apps/worker) must agree with, as the local worker is for star mode.
 */
import { hasErrorCode, isShardlineError, ShardlineError, toShardlineError } from '@shardline/core';
import type { ClassificationState } from '@shardline/metrics';
import {
  type EvalAssignment,
  type ReplicaEvaluation,
  type ReplicaState,
  type RingShareAssignment,
  type RingShareReport,
  type RingTrainingWorker,
  ringAbortError,
  type ShareResult,
  type WeightsSnapshot,
} from '../contract.js';
import { createLocalWorker, type LocalWorkerOptions } from '../localWorker.js';
import { createMemoryRing, type MemoryRingOptions } from './memoryRing.js';
import { createReplica, type ReplicaOptimizerSpec } from './replica.js';
import { ringAllReduce } from './ringAllReduce.js';
import type { RingDtype, RingLink } from './types.js';

/**
 * Rings inside one process, by formation id: each member asks for its own link, and the members
 * of one formation get the links of one {@link createMemoryRing}.
 */
export interface MemoryRingNetwork {
  /**
   * Rank `rank`'s link in ring `ringId` of `worldSize` members; the ring is made when its first
   * member asks, and asking again gives the same link (a formation serves several steps). Throws
   * INVALID_ARGUMENT when members disagree on the world size or the rank is outside it.
   */
  link(ringId: string, rank: number, worldSize: number): RingLink;
}

/**
 * Creates a {@link MemoryRingNetwork}. Every ring it made is kept for the network's lifetime:
 * a formation id must keep meaning the same ring, and a ring whose members are done holds only
 * empty or closed queues (a few hundred bytes), even after thousands of re-formations.
 *
 * @example
 * ```ts
 * const network = createMemoryRingNetwork();
 * const links = [0, 1, 2].map((rank) => network.link('ring-1', rank, 3));
 * ```
 */
export function createMemoryRingNetwork(options: MemoryRingOptions = {}): MemoryRingNetwork {
  const rings = new Map<string, RingLink[]>();
  return {
    link(ringId, rank, worldSize) {
      let links = rings.get(ringId);
      if (!links) {
        links = createMemoryRing(worldSize, options);
        rings.set(ringId, links);
      }
      if (links.length !== worldSize) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `Ring ${ringId} has ${links.length} members, but a member asked for its link in a ring of ${worldSize}.`,
        );
      }
      const link = Number.isSafeInteger(rank) ? links[rank] : undefined;
      if (!link) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `Ring ${ringId} has ranks 0 to ${worldSize - 1}; found rank ${rank}.`,
        );
      }
      return link;
    },
  };
}

/** Options of {@link createLocalRingWorker}: a local worker's, plus the ring's. */
export interface LocalRingWorkerOptions extends Omit<LocalWorkerOptions, 'id'> {
  /** Unique among the members: the trainer tells replicas apart by id. */
  id: string;
  /** The optimizer its replica runs; the same on every member of a job. */
  optimizer: ReplicaOptimizerSpec;
  /** The network its rings are formed on; the same object for every member. */
  network: MemoryRingNetwork;
  /** Largest payload of one ring message (default 256 KiB, as the gRPC transport's chunks). */
  maxChunkBytes?: number;
  /** Encoding of ring traffic (default float32); the same on every member of a job. */
  dtype?: RingDtype;
}

/** The default ring chunk: big enough that per-message costs vanish, small enough to pipeline. */
const DEFAULT_MAX_CHUNK_BYTES = 256 * 1024;

/**
 * Creates an in-process {@link RingTrainingWorker}. Its peer address is `memory:<id>`.
 *
 * Failures it reports as ring aborts (`ringAbortError`, blameless: the trainer retries without
 * dropping it): its link broke (a neighbour stopped), the trainer aborted the step, or it refused
 * a message from its left neighbour, whom it then names as `details.suspect`. Failures of its own
 * (its replica is not at the step, its gradient is not finite) reject as they are, so the trainer
 * drops it. It cannot compute star-mode shares: `computeShare` rejects with INVALID_ARGUMENT.
 *
 * @example
 * ```ts
 * const network = createMemoryRingNetwork();
 * const workers = models.map((model, i) =>
 *   createLocalRingWorker({ id: `w${i}`, model, layout, train, test, classNames, seed: 1,
 *     batchSize: 64, augment: false, evalBatchSize: 256, network,
 *     optimizer: { kind: 'momentum', momentum: 0.9, weightDecay: 0 } }),
 * );
 * await runSynchronousTraining({ ...options, exchange: 'ring', membership: fixedMembership(workers) });
 * ```
 */
export function createLocalRingWorker(options: LocalRingWorkerOptions): RingTrainingWorker {
  const { id, network, layout } = options;
  const name = `in-process ${id}`;
  const maxChunkBytes = options.maxChunkBytes ?? DEFAULT_MAX_CHUNK_BYTES;
  const inner = createLocalWorker({ ...options, id });
  const replica = createReplica({ size: layout.size, optimizer: options.optimizer, label: name });
  // The inner worker rewrites the model only when the version it is handed changes. Replica
  // versions can repeat with other weights (a state pushed again), so it gets a generation that
  // changes at every load and commit instead; foreign weights get negative ones.
  let generation = 0;
  let foreign = -1;
  let ring: { id: string; link: RingLink } | undefined;
  let inFlight: { step: number; controller: AbortController } | undefined;

  const replicaWeights = (): WeightsSnapshot => ({ version: generation, params: replica.params });
  const linkFor = (assignment: RingShareAssignment): RingLink => {
    if (ring?.id !== assignment.ring.id) {
      ring = {
        id: assignment.ring.id,
        link: network.link(assignment.ring.id, assignment.rank, assignment.worldSize),
      };
    }
    return ring.link;
  };

  async function reduceShare(
    assignment: RingShareAssignment,
    signal?: AbortSignal,
  ): Promise<RingShareReport> {
    const { step, rank, worldSize } = assignment;
    const controller = new AbortController();
    const flight = { step, controller };
    inFlight = flight;
    const stepSignal = signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
    let link: RingLink | undefined;
    try {
      link = linkFor(assignment);
      stepSignal.throwIfAborted();
      checkAssignment(assignment);
      const share: ShareResult = await inner.computeShare(assignment, replicaWeights(), stepSignal);
      const exchangeStarted = performance.now();
      const result = await ringAllReduce({
        rank,
        worldSize,
        link,
        gradient: share.gradient,
        sampleCount: share.sampleCount,
        step,
        maxChunkBytes,
        signal: stepSignal,
        ...(options.dtype === undefined ? {} : { dtype: options.dtype }),
      });
      // An abort that came after the last chunk: nothing may be staged for an aborted step.
      stepSignal.throwIfAborted();
      replica.stage(step, result.gradient, result.checksum);
      return {
        sampleCount: share.sampleCount,
        loss: share.loss,
        correct: share.correct,
        computeSeconds: share.computeSeconds,
        totalSamples: result.samples,
        checksum: result.checksum,
        exchangeSeconds: (performance.now() - exchangeStarted) / 1000,
        sentBytes: result.sentBytes,
      };
    } catch (error) {
      // A member that fails before its all-reduce started must still stop its ring, or the
      // neighbours wait for it until the trainer's deadline (ringAllReduce does this itself).
      try {
        link?.abort(error);
      } catch {
        // Closing a memory link cannot fail; a failure would say nothing the error does not.
      }
      throw classify(error, assignment, signal, controller.signal);
    } finally {
      if (inFlight === flight) inFlight = undefined;
    }
  }

  function checkAssignment(assignment: RingShareAssignment): void {
    if (replica.version !== assignment.step) {
      throw new ShardlineError(
        'MISMATCH',
        `${name} holds weights version ${replica.version} but was asked for its share of step ` +
          `${assignment.step}: it needs the state of step ${assignment.step} first.`,
        { details: { version: replica.version, step: assignment.step } },
      );
    }
    const me = assignment.ring.members[assignment.rank];
    if (me?.workerId !== id || assignment.ring.members.length !== assignment.worldSize) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Ring ${assignment.ring.id} puts ${me?.workerId ?? 'nobody'} at rank ${assignment.rank} of ` +
          `${assignment.ring.members.length}, but ${name} was given that rank of ${assignment.worldSize}.`,
      );
    }
  }

  /**
   * Blame: the trainer's own signal passes through as it is (the contract's cancellation); a
   * broken link, an aborted step or a refused chunk from the left neighbour is the ring's
   * failure; anything else is this member's.
   */
  function classify(
    error: unknown,
    assignment: RingShareAssignment,
    signal: AbortSignal | undefined,
    aborted: AbortSignal,
  ): unknown {
    if (signal?.aborted && error === signal.reason) return error;
    if (aborted.aborted) {
      return ringAbortError(
        `${name} stopped its all-reduce of step ${assignment.step}: the trainer aborted the step (${toShardlineError(aborted.reason).message}).`,
        error,
      );
    }
    if (!isShardlineError(error)) return error;
    if (typeof error.details.peer === 'number') {
      const suspect = assignment.ring.members[error.details.peer]?.workerId;
      const abort = ringAbortError(error.message, error);
      if (suspect !== undefined) abort.details.suspect = suspect;
      return abort;
    }
    if (hasErrorCode(error, 'CONNECTION_LOST')) return ringAbortError(error.message, error);
    return error;
  }

  return {
    id,
    name,
    peerAddress: `memory:${id}`,
    get replicaVersion() {
      return replica.version;
    },
    async computeShare(): Promise<ShareResult> {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${name} is a ring member: it computes shares with reduceShare, on its own replica. Run the trainer with exchange 'ring'.`,
      );
    },
    async evaluate(
      slice: EvalAssignment,
      weights: WeightsSnapshot,
      signal?: AbortSignal,
    ): Promise<ClassificationState> {
      // The trainer's weights of the version the replica holds may be stale in ring mode (it
      // pulls them only when it needs them): the replica's are the real ones.
      if (weights.version === replica.version)
        return inner.evaluate(slice, replicaWeights(), signal);
      return inner.evaluate(slice, { version: --foreign, params: weights.params }, signal);
    },
    async evaluateReplica(
      slice: EvalAssignment,
      version: number,
      signal?: AbortSignal,
    ): Promise<ReplicaEvaluation> {
      if (replica.version !== version) {
        throw new ShardlineError(
          'MISMATCH',
          `${name} holds weights version ${replica.version} but was asked to evaluate version ${version}.`,
        );
      }
      const state = await inner.evaluate(slice, replicaWeights(), signal);
      return { state, weightsChecksum: replica.checksum() };
    },
    async pushState(state: ReplicaState, signal?: AbortSignal): Promise<void> {
      signal?.throwIfAborted();
      replica.load(state);
      generation++;
    },
    async pullState(signal?: AbortSignal): Promise<ReplicaState> {
      signal?.throwIfAborted();
      return replica.state();
    },
    reduceShare,
    commit(step: number, learningRate: number, checksum: string): void {
      replica.commit(step, learningRate, checksum);
      generation++;
    },
    abortStep(step: number, reason: string): void {
      if (inFlight?.step === step) {
        inFlight.controller.abort(new ShardlineError('CANCELLED', reason));
      }
      if (replica.staged?.step === step) replica.discard();
    },
  };
}
