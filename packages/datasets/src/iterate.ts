/**
 * Per-rank batch iteration with DistributedSampler semantics, for trainers where each rank runs
 * its own epoch (and for single-process training: rank 0 of 1).
 */
import { ShardlineError } from '@shardline/core/errors';
import { type Batch, type BatchOptions, makeBatch } from './batch.js';
import type { ImageSet } from './imageSet.js';
import { epochOrder, identityOrder, type ShardOptions, shardIndices } from './sampler.js';

/** Options for {@link iterateBatches}. */
export interface IterateBatchesOptions extends BatchOptions, ShardOptions {
  /** Samples per batch on this rank. */
  batchSize: number;
  /** Shuffle seed; every rank must use the same one. */
  seed: number;
  /** Epoch number; changes the order (and the augmentation, unless `augment.epoch` is set). */
  epoch: number;
  /** This process's rank. Default 0. */
  rank?: number;
  /** Number of ranks. Default 1. */
  worldSize?: number;
  /** Default true; false keeps the stored order (evaluation). */
  shuffle?: boolean;
  /** Skip this rank's last batch when it is smaller than `batchSize`. Default false. */
  dropRemainder?: boolean;
}

/**
 * The batches of one epoch for one rank: the epoch order from (seed, epoch), this rank's shard
 * of it (see {@link shardIndices}), cut into batches of `batchSize` and made with
 * {@link makeBatch}. Lazy: one batch of floats exists at a time.
 *
 * @example
 * ```ts
 * for (const batch of iterateBatches(train, { batchSize: 64, seed: 1, epoch, rank: 0, worldSize: 2 })) {
 *   // batch.xs: Float32Array [64, 28, 28, 1], batch.labels: Int32Array [64]
 * }
 * ```
 */
export function* iterateBatches(set: ImageSet, options: IterateBatchesOptions): Generator<Batch> {
  const { batchSize, seed, epoch } = options;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `batchSize must be a positive integer: found ${String(batchSize)}.`,
    );
  }
  const order =
    (options.shuffle ?? true) ? epochOrder(set.count, seed, epoch) : identityOrder(set.count);
  const mine = shardIndices(order, options.rank ?? 0, options.worldSize ?? 1, options);
  const batchOptions: BatchOptions = {
    ...options,
    ...(options.augment
      ? { augment: { ...options.augment, epoch: options.augment.epoch ?? epoch } }
      : {}),
  };
  for (let start = 0; start < mine.length; start += batchSize) {
    const end = Math.min(mine.length, start + batchSize);
    if (end - start < batchSize && options.dropRemainder) return;
    yield makeBatch(set, mine.subarray(start, end), batchOptions);
  }
}
