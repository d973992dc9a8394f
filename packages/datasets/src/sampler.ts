/**
 * Which samples go where: the seeded order of an epoch, DistributedSampler-style shards per
 * rank, and the global batch of each step split among the workers of that step.
 *
 * Two ways to distribute an epoch, for two kinds of trainer:
 *
 * - Per-rank epochs ({@link shardIndices}): like PyTorch's DistributedSampler. Every rank owns a
 *   fixed, disjoint slice of the shuffled epoch and batches it itself. Needs a fixed world size
 *   for the whole epoch.
 * - Coordinated steps ({@link createEpochPlan}, {@link batchShare}): the epoch is a sequence of
 *   global batches that depends only on (count, seed, epoch, batch size); each step's batch is
 *   split among whichever workers are active for that step. Membership may change between
 *   steps without changing which samples the model sees, and a worker needs only
 *   (epoch, step, rank, world size) to find its share.
 */
import { ShardlineError } from '@shardline/core/errors';
import { createRng, RngStreams } from './random.js';

/**
 * The order of `count` samples in `epoch`: a permutation of 0..count-1 from a Fisher-Yates
 * shuffle driven by `createRng(RngStreams.shuffle, seed, epoch)`. Identical for the same
 * (count, seed, epoch) in every process.
 *
 * @example
 * ```ts
 * const order = epochOrder(60_000, 42, 3); // Uint32Array, a permutation of 0..59,999
 * ```
 */
export function epochOrder(count: number, seed: number, epoch: number): Uint32Array {
  checkCount(count, 'count');
  checkIndex(epoch, 'epoch');
  const order = identityOrder(count);
  const rng = createRng(RngStreams.shuffle, seed, epoch);
  for (let i = count - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  return order;
}

/** 0..count-1 in order: the "order" of an unshuffled epoch (evaluation, debugging). */
export function identityOrder(count: number): Uint32Array {
  checkCount(count, 'count');
  const order = new Uint32Array(count);
  for (let i = 0; i < count; i++) order[i] = i;
  return order;
}

/**
 * What to do with the samples left over when `n` is not a multiple of the world size.
 * - `pad` (default, like PyTorch's DistributedSampler with `drop_last=False`): repeat samples
 *   from the start of the order until every rank gets `ceil(n / worldSize)`; a few samples are
 *   seen twice per epoch.
 * - `drop` (`drop_last=True`): drop the tail so every rank gets `floor(n / worldSize)`; a few
 *   samples are skipped this epoch (a different few each epoch, as the order changes).
 */
export type ShardRemainder = 'pad' | 'drop';

/** Options for {@link shardIndices} and {@link shardSize}. */
export interface ShardOptions {
  /** Default `pad`. */
  remainder?: ShardRemainder;
}

/** How many samples each rank gets from {@link shardIndices} for an epoch of `count`. */
export function shardSize(count: number, worldSize: number, options: ShardOptions = {}): number {
  checkCount(count, 'count');
  checkWorldSize(worldSize);
  return (options.remainder ?? 'pad') === 'drop'
    ? Math.floor(count / worldSize)
    : Math.ceil(count / worldSize);
}

/**
 * The shard of `order` that belongs to `rank` of `worldSize`, with DistributedSampler semantics:
 * the order is padded (or cut, see {@link ShardRemainder}) to a multiple of `worldSize`, then
 * rank r takes elements r, r + worldSize, r + 2 * worldSize, ... Shards of one order are
 * disjoint (apart from the padding repeats) and together cover it.
 *
 * @example
 * ```ts
 * const mine = shardIndices(epochOrder(set.count, seed, epoch), rank, worldSize);
 * ```
 */
export function shardIndices(
  order: ArrayLike<number>,
  rank: number,
  worldSize: number,
  options: ShardOptions = {},
): Uint32Array {
  checkRank(rank, worldSize);
  const n = order.length;
  const size = shardSize(n, worldSize, options);
  const shard = new Uint32Array(size);
  // Position p of the padded order is order[p % n]: padding repeats from the start, cycling
  // when the padding is longer than the order itself (n < worldSize), as PyTorch does.
  for (let i = 0; i < size; i++) shard[i] = order[(rank + i * worldSize) % n]!;
  return shard;
}

/** Options for {@link stepsPerEpoch} and {@link createEpochPlan}. */
export interface StepOptions {
  /**
   * Drop the last global batch of an epoch when it is smaller than the batch size (Keras and
   * PyTorch's `drop_last`). Default false: the last step is smaller.
   */
  dropRemainder?: boolean;
}

/** The number of global batches (optimizer steps) in an epoch of `count` samples. */
export function stepsPerEpoch(count: number, batchSize: number, options: StepOptions = {}): number {
  checkCount(count, 'count');
  checkPositive(batchSize, 'batchSize');
  return options.dropRemainder ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/** A half-open range [start, end) of positions. */
export interface IndexRange {
  start: number;
  end: number;
}

/**
 * The positions within a global batch of `batchLength` samples that belong to `rank` of
 * `worldSize`: contiguous, sizes differing by at most one, the first `batchLength % worldSize`
 * ranks taking one more. A rank's share is empty when the batch has fewer samples than workers.
 */
export function shareRange(batchLength: number, rank: number, worldSize: number): IndexRange {
  checkCount(batchLength, 'batchLength');
  checkRank(rank, worldSize);
  const base = Math.floor(batchLength / worldSize);
  const extra = batchLength % worldSize;
  const start = rank * base + Math.min(rank, extra);
  return { start, end: start + base + (rank < extra ? 1 : 0) };
}

/**
 * The number of samples in `rank`'s share of global batch `step` (0-based, within the epoch) of
 * an epoch of `count` samples: what {@link EpochPlan.share} returns the length of, without
 * shuffling anything. The coordinator uses it to check the sample count a worker reports.
 */
export function shareSize(
  count: number,
  batchSize: number,
  step: number,
  rank: number,
  worldSize: number,
): number {
  checkCount(count, 'count');
  checkPositive(batchSize, 'batchSize');
  const batchLength = Math.max(0, Math.min(batchSize, count - step * batchSize));
  const { start, end } = shareRange(batchLength, rank, worldSize);
  return end - start;
}

/** One epoch of coordinated training as a sequence of global batches; see {@link createEpochPlan}. */
export interface EpochPlan {
  /** Samples in the epoch. */
  readonly count: number;
  readonly seed: number;
  readonly epoch: number;
  /** Samples per global batch (the last may be smaller unless `dropRemainder`). */
  readonly batchSize: number;
  /** Global batches (optimizer steps) in this epoch. */
  readonly steps: number;
  /** The epoch's order (see {@link epochOrder}); do not modify. */
  readonly order: Uint32Array;
  /** Sample indices of global batch `step` (a view into `order`). */
  batch(step: number): Uint32Array;
  /** The part of global batch `step` for `rank` of `worldSize` (a view into `order`). */
  share(step: number, rank: number, worldSize: number): Uint32Array;
}

/** Options for {@link createEpochPlan}. */
export interface EpochPlanOptions extends StepOptions {
  /** Samples in the training set. */
  count: number;
  seed: number;
  epoch: number;
  /** Samples per global batch, summed over all workers. */
  batchSize: number;
  /** Default true; false keeps the stored order (for evaluation). */
  shuffle?: boolean;
}

/**
 * The plan of one epoch for coordinated data-parallel training: a sequence of global batches
 * derived from (count, seed, epoch, batchSize) alone. The coordinator tells each worker only
 * "step k, you are rank r of w"; the worker calls `plan.share(k, r, w)` and gets exactly the
 * samples the coordinator meant. Build the plan once per epoch (the shuffle is O(count)).
 *
 * @example
 * ```ts
 * const plan = createEpochPlan({ count: train.count, seed: 42, epoch, batchSize: 256 });
 * for (let step = 0; step < plan.steps; step++) {
 *   const mine = plan.share(step, rank, worldSize);
 *   const batch = makeBatch(train, mine);
 * }
 * ```
 */
export function createEpochPlan(options: EpochPlanOptions): EpochPlan {
  const { count, seed, epoch, batchSize } = options;
  const steps = stepsPerEpoch(count, batchSize, options);
  const order = (options.shuffle ?? true) ? epochOrder(count, seed, epoch) : identityOrder(count);
  const batch = (step: number): Uint32Array => {
    if (!Number.isInteger(step) || step < 0 || step >= steps) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Step ${String(step)} is outside epoch ${epoch}: expected 0 <= step < ${steps}.`,
      );
    }
    return order.subarray(step * batchSize, Math.min(count, (step + 1) * batchSize));
  };
  return {
    count,
    seed,
    epoch,
    batchSize,
    steps,
    order,
    batch,
    share(step, rank, worldSize) {
      const global = batch(step);
      const { start, end } = shareRange(global.length, rank, worldSize);
      return global.subarray(start, end);
    },
  };
}

/** Where one worker's share of one step comes from; see {@link batchShare}. */
export interface BatchShareOptions extends EpochPlanOptions {
  step: number;
  rank: number;
  worldSize: number;
}

/**
 * One worker's share of global batch `step`, computed from scratch. Convenient for a single
 * call; a worker serving many steps should keep a {@link createEpochPlan} per epoch instead.
 */
export function batchShare(options: BatchShareOptions): Uint32Array {
  return createEpochPlan(options).share(options.step, options.rank, options.worldSize).slice();
}

function checkCount(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${what} must be an integer in [0, 2^32): found ${String(n)}.`,
    );
  }
}

function checkIndex(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${what} must be a non-negative integer: found ${String(n)}.`,
    );
  }
}

function checkPositive(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${what} must be a positive integer: found ${String(n)}.`,
    );
  }
}

function checkWorldSize(worldSize: number): void {
  checkPositive(worldSize, 'worldSize');
}

function checkRank(rank: number, worldSize: number): void {
  checkWorldSize(worldSize);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `rank must be an integer in [0, ${worldSize}) for worldSize ${worldSize}: found ${String(rank)}.`,
    );
  }
}
