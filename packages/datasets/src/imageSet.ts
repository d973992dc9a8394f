/**
 * The in-memory form of a split: every image as uint8 in one buffer (NHWC, row-major), every
 * label as uint8. Fashion-MNIST's training split is 47 MB this way; floats are made per batch.
 */
import { formatCount, ShardlineError } from '@shardline/core/errors';

/**
 * One split of an image classification dataset, kept as bytes.
 *
 * Image `i` occupies `images[i * height * width * channels ...]` in height, width, channel order.
 */
export interface ImageSet {
  /** All pixels, `count * height * width * channels` bytes, NHWC. */
  readonly images: Uint8Array;
  /** One class index per image. */
  readonly labels: Uint8Array;
  /** Number of images. */
  readonly count: number;
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  /** Number of classes, when known (used for one-hot labels). */
  readonly numClasses?: number;
}

/** Bytes per image of `set`. */
export function imageSize(set: Pick<ImageSet, 'height' | 'width' | 'channels'>): number {
  return set.height * set.width * set.channels;
}

/**
 * The first `count` images of `set`, copied so the rest can be garbage-collected (used by
 * `limitTrain` / `limitTest`). Returns `set` itself when it has no more than `count` images.
 */
export function takeImages(set: ImageSet, count: number): ImageSet {
  if (!Number.isInteger(count) || count < 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `An image limit must be a non-negative integer: found ${String(count)}.`,
    );
  }
  if (count >= set.count) return set;
  return {
    ...set,
    images: set.images.slice(0, count * imageSize(set)),
    labels: set.labels.slice(0, count),
    count,
  };
}

/**
 * Checks that the buffers of `set` agree with its count and shape, and (when `numClasses` is
 * known) that every label is a valid class. Throws `INVALID_ARGUMENT` naming what is off.
 */
export function checkImageSet(set: ImageSet): void {
  const { count, height, width, channels } = set;
  for (const [what, n] of [
    ['count', count],
    ['height', height],
    ['width', width],
    ['channels', channels],
  ] as const) {
    if (!Number.isInteger(n) || n < (what === 'count' ? 0 : 1)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `ImageSet ${what} must be a ${what === 'count' ? 'non-negative' : 'positive'} integer: found ${String(n)}.`,
      );
    }
  }
  const expected = count * height * width * channels;
  if (set.images.length !== expected) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `ImageSet images has ${formatCount(set.images.length)} bytes: expected ${formatCount(expected)} ` +
        `(${formatCount(count)} x ${height} x ${width} x ${channels}).`,
    );
  }
  if (set.labels.length !== count) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `ImageSet labels has ${formatCount(set.labels.length)} entries: expected one per image, ${formatCount(count)}.`,
    );
  }
}
