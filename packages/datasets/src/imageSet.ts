/**
 * A split as bytes: every image as uint8 (NHWC, row-major), every label as uint8. Fashion-MNIST's
 * training split is 47 MB this way and sits in one buffer; an image folder larger than the memory
 * budget stays in its cache file and is read a batch at a time ({@link PagedImages}). Floats are
 * made per batch either way.
 */
import { formatCount, ShardlineError } from '@shardline/core/errors';
import { concatPagedImages, type PagedImages } from './pagedImages.js';

/**
 * Where a set's pixels are: one in-memory buffer, or a file read on demand. Code that reads
 * pixels goes through `makeBatch` (or branches on `images instanceof Uint8Array`).
 */
export type ImagePixels = Uint8Array | PagedImages;

/**
 * One split of an image classification dataset, kept as bytes.
 *
 * Image `i` occupies `images[i * height * width * channels ...]` in height, width, channel order:
 * in the buffer itself, or at that offset of the pixels of a {@link PagedImages} file. The type
 * parameter narrows it where the form is known: `loadDataset` (IDX files) always gives
 * `ImageSet<Uint8Array>`; `loadImageFolder` and `readImageFolderCache` give either.
 */
export interface ImageSet<Pixels extends ImagePixels = ImagePixels> {
  /**
   * All pixels, `count * height * width * channels` bytes, NHWC: a buffer, or a
   * {@link PagedImages} that reads them from a file when a batch needs them.
   */
  readonly images: Pixels;
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
 * The first `count` images of `set` (used by `limitTrain` / `limitTest`). In-memory pixels are
 * copied so the rest can be garbage-collected; paged pixels become a view of the same file,
 * nothing copied (the view holds its own reference to the file). Returns `set` itself when it
 * has no more than `count` images.
 */
export function takeImages<Pixels extends ImagePixels>(
  set: ImageSet<Pixels>,
  count: number,
): ImageSet<Pixels> {
  if (!Number.isInteger(count) || count < 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `An image limit must be a non-negative integer: found ${String(count)}.`,
    );
  }
  if (count >= set.count) return set;
  // slice() copies a Uint8Array and makes a view of a PagedImages: both what is wanted here.
  const images = (
    set.images instanceof Uint8Array
      ? set.images.slice(0, count * imageSize(set))
      : set.images.slice(0, count)
  ) as Pixels;
  return { ...set, images, labels: set.labels.slice(0, count), count };
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
  if (set.images.byteLength !== expected) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `ImageSet images has ${formatCount(set.images.byteLength)} bytes: expected ${formatCount(expected)} ` +
        `(${formatCount(count)} x ${height} x ${width} x ${channels}).`,
    );
  }
  if (!(set.images instanceof Uint8Array) && set.images.imageBytes !== height * width * channels) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `ImageSet images are paged in images of ${formatCount(set.images.imageBytes)} bytes: expected ${formatCount(height * width * channels)} (${height} x ${width} x ${channels}).`,
    );
  }
  if (set.labels.length !== count) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `ImageSet labels has ${formatCount(set.labels.length)} entries: expected one per image, ${formatCount(count)}.`,
    );
  }
}

/**
 * `a`'s images then `b`'s, as one set of the same shape (labels copied; `numClasses` from `a`).
 * Two in-memory sets are copied into one buffer; when either is paged the result is a
 * {@link PagedImages} view over both, nothing copied, so a set larger than memory stays on disk.
 *
 * @example
 * ```ts
 * const every = concatImageSets(loaded.train, loaded.test);
 * ```
 */
export function concatImageSets(a: ImageSet, b: ImageSet): ImageSet {
  if (a.height !== b.height || a.width !== b.width || a.channels !== b.channels) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Cannot join sets of different image shapes: ${a.height}x${a.width}x${a.channels} and ${b.height}x${b.width}x${b.channels}. Resize one of them.`,
    );
  }
  const labels = new Uint8Array(a.count + b.count);
  labels.set(a.labels, 0);
  labels.set(b.labels, a.count);
  let images: ImagePixels;
  if (a.images instanceof Uint8Array && b.images instanceof Uint8Array) {
    images = new Uint8Array(a.images.length + b.images.length);
    images.set(a.images, 0);
    images.set(b.images, a.images.length);
  } else {
    images = concatPagedImages([a.images, b.images], imageSize(a));
  }
  return { ...a, images, labels, count: a.count + b.count };
}

/**
 * Releases the file behind a paged set (see {@link PagedImages.close}); does nothing for a set in
 * memory. Call it when done with a set that may be paged, e.g. after evaluation.
 */
export function closeImageSet(set: ImageSet): void {
  if (!(set.images instanceof Uint8Array)) set.images.close();
}
