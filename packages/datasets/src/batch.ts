/**
 * Batches: uint8 images in, NHWC float32 out, made one batch at a time so the dataset itself
 * stays in bytes.
 */
import { formatCount, ShardlineError } from '@shardline/core/errors';
import {
  type AugmentOptions,
  identityTransform,
  renderTransformed,
  sampleTransform,
} from './augment.js';
import { type ImageSet, imageSize } from './imageSet.js';

/**
 * Per-channel standardisation after scaling to [0, 1]: `x = (pixel / 255 - mean) / std`, as
 * torchvision's `Normalize`. A single number applies to every channel.
 */
export interface NormalizeOptions {
  mean: number | readonly number[];
  std: number | readonly number[];
}

/** Options for {@link makeBatch}. */
export interface BatchOptions {
  /** Default: pixels scaled to [0, 1]. Give mean and std to standardise instead. */
  normalize?: NormalizeOptions;
  /** Also produce one-hot float32 labels in `oneHot`. Default false. */
  oneHot?: boolean;
  /** Classes for one-hot labels. Default: the set's `numClasses`. */
  numClasses?: number;
  /** Seeded augmentation; off by default. Use it for training batches only. */
  augment?: AugmentOptions;
}

/** A batch ready for a model: images as NHWC float32, labels as int32. */
export interface Batch {
  /** `size * height * width * channels` floats, NHWC. */
  readonly xs: Float32Array;
  /** One class index per sample. */
  readonly labels: Int32Array;
  /** `size * numClasses` floats, present when `oneHot` was asked for. */
  readonly oneHot?: Float32Array;
  /** Number of samples. */
  readonly size: number;
  /** `[size, height, width, channels]`. */
  readonly shape: readonly [number, number, number, number];
  /** Classes of `oneHot`, when present. */
  readonly numClasses?: number;
  /** The dataset indices this batch was made from, in batch order. */
  readonly indices: Uint32Array;
}

/**
 * Makes a batch of the samples at `indices` of `set`: images as NHWC float32 in [0, 1] (or
 * standardised, see {@link NormalizeOptions}), labels as Int32Array, optionally one-hot, and
 * optionally augmented. Deterministic: the same arguments always give the same batch.
 *
 * @example
 * ```ts
 * const batch = makeBatch(train, plan.share(step, rank, worldSize), {
 *   augment: { seed: 42, epoch, shift: 2, flip: true },
 * });
 * ```
 */
export function makeBatch(
  set: ImageSet,
  indices: ArrayLike<number>,
  options: BatchOptions = {},
): Batch {
  const { height, width, channels } = set;
  const pixels = imageSize(set);
  const size = indices.length;
  const lut = pixelLut(channels, options.normalize);
  const xs = new Float32Array(size * pixels);
  const labels = new Int32Array(size);
  const picked = new Uint32Array(size);

  const numClasses = options.oneHot ? oneHotClasses(set, options.numClasses) : undefined;
  const oneHot = numClasses === undefined ? undefined : new Float32Array(size * numClasses);

  for (let i = 0; i < size; i++) {
    const index = indices[i]!;
    if (!Number.isInteger(index) || index < 0 || index >= set.count) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Sample index ${String(index)} at batch position ${i} is outside the set: expected 0 <= index < ${formatCount(set.count)}.`,
      );
    }
    picked[i] = index;
    const label = set.labels[index]!;
    labels[i] = label;
    if (oneHot !== undefined && numClasses !== undefined) {
      if (label >= numClasses) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `Sample ${formatCount(index)} has label ${label}, but one-hot labels have ${numClasses} classes (0..${numClasses - 1}). Pass numClasses to match the data.`,
        );
      }
      oneHot[i * numClasses + label] = 1;
    }
  }

  // Paged pixels are read once per batch into scratch bytes (a quarter of xs), in one call so
  // runs of adjacent indices become one read; in-memory pixels are used where they are. Either
  // way image i of the batch is then a subarray of `source`.
  const inMemory = set.images instanceof Uint8Array;
  const source =
    set.images instanceof Uint8Array
      ? set.images
      : set.images.readImages(picked, new Uint8Array(size * pixels));
  for (let i = 0; i < size; i++) {
    const index = picked[i]!;
    const at = (inMemory ? index : i) * pixels;
    const src = source.subarray(at, at + pixels);
    const t = options.augment
      ? sampleTransform(options.augment, index, height, width)
      : identityTransform;
    renderTransformed(src, height, width, channels, t, lut, xs, i * pixels);
  }

  return {
    xs,
    labels,
    ...(oneHot === undefined ? {} : { oneHot }),
    size,
    shape: [size, height, width, channels],
    ...(numClasses === undefined ? {} : { numClasses }),
    indices: picked,
  };
}

function oneHotClasses(set: ImageSet, requested: number | undefined): number {
  const n = requested ?? set.numClasses;
  if (n === undefined || !Number.isInteger(n) || n < 1) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `One-hot labels need a class count: expected a positive integer numClasses (option or ImageSet.numClasses), found ${String(n)}.`,
    );
  }
  return n;
}

/**
 * The float each pixel value becomes, per channel: a 256-entry table per channel, so a batch
 * costs one lookup per pixel and every process computes bit-identical floats.
 */
export function pixelLut(channels: number, normalize?: NormalizeOptions): Float32Array {
  const lut = new Float32Array(channels * 256);
  for (let c = 0; c < channels; c++) {
    const mean = normalize ? perChannel(normalize.mean, c, channels, 'mean') : 0;
    const std = normalize ? perChannel(normalize.std, c, channels, 'std') : 1;
    if (!(std > 0) || !Number.isFinite(mean)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `normalize needs a finite mean and a positive std: found mean ${String(mean)}, std ${String(std)} for channel ${c}.`,
      );
    }
    for (let v = 0; v < 256; v++) lut[c * 256 + v] = (v / 255 - mean) / std;
  }
  return lut;
}

function perChannel(
  value: number | readonly number[],
  channel: number,
  channels: number,
  what: string,
): number {
  if (typeof value === 'number') return value;
  if (value.length !== channels) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `normalize.${what} has ${value.length} values: expected 1 or one per channel (${channels}).`,
    );
  }
  return value[channel]!;
}
