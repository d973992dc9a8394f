/**
 * `/api/test-images/<index>.png`: one image of the run's own test set, as a PNG, for the page's
 * grid of misclassified test images (an `epoch_end` names them by test-set index). The
 * coordinator encodes it from the set it loaded (jobData.ts `testSet`); it never reads a path
 * or a file name from the request, only an index, checked against the set's size.
 *
 * sharp (libvips) encodes; it is imported on first use, so a run whose page never asks for an
 * image does not load it. A 28x28 grey image is about 300 bytes of PNG and takes well under a
 * millisecond; the last {@link CACHED_IMAGES} are kept, since every epoch's grid repeats most of
 * the previous one's.
 */
import type { ImageSet } from '@shardline/datasets';

/** Encoded images kept in memory (32 per epoch's grid; a few epochs' worth). */
export const CACHED_IMAGES = 256;

/** Why an image cannot be served, for the 404's text. */
export type MissingImage =
  | { why: 'no-set' }
  | { why: 'out-of-range'; index: number; count: number }
  | { why: 'bad-path'; path: string };

/** The run's test images; see the module comment. */
export interface TestImages {
  /** Serves images from `set` from now on (the run's data is loaded after the server opens). */
  use(set: ImageSet | undefined): void;
  /** Images in the set; undefined before {@link TestImages.use} or without a set. */
  readonly count: number | undefined;
  /**
   * The PNG of `/api/test-images/<index>.png` (`pathname` is the whole path), or why there is
   * none.
   */
  png(pathname: string): Promise<Buffer | MissingImage>;
}

/** The route's prefix, and the only paths under it that name an image. */
export const TEST_IMAGES_PREFIX = '/api/test-images/';
const IMAGE_PATH = /^\/api\/test-images\/(0|[1-9][0-9]{0,8})\.png$/;

type SharpFactory = typeof import('sharp')['default'];
let sharpModule: Promise<SharpFactory> | undefined;
function loadSharp(): Promise<SharpFactory> {
  sharpModule ??= import('sharp').then((m) => m.default);
  return sharpModule;
}

/** The pixels of image `index` of `set` (HWC bytes), copied out of its buffer or its file. */
function pixelsOf(set: ImageSet, index: number): Uint8Array {
  const bytes = set.height * set.width * set.channels;
  if (set.images instanceof Uint8Array) {
    return set.images.subarray(index * bytes, (index + 1) * bytes);
  }
  const target = new Uint8Array(bytes);
  set.images.readImage(index, target);
  return target;
}

/**
 * Creates the test images of one run, empty until {@link TestImages.use}.
 *
 * @example
 * ```ts
 * const images = createTestImages();
 * images.use(data.testSet);
 * const png = await images.png('/api/test-images/7.png'); // a Buffer, or why not
 * ```
 */
export function createTestImages(): TestImages {
  let set: ImageSet | undefined;
  const cache = new Map<number, Buffer>();
  return {
    use(next) {
      set = next;
      cache.clear();
    },
    get count() {
      return set?.count;
    },
    async png(pathname) {
      const match = IMAGE_PATH.exec(pathname);
      if (!match) return { why: 'bad-path', path: pathname };
      if (!set) return { why: 'no-set' };
      const index = Number(match[1]);
      if (index >= set.count) return { why: 'out-of-range', index, count: set.count };
      const cached = cache.get(index);
      if (cached) {
        // Map order is insertion order: re-inserting makes it the most recently used.
        cache.delete(index);
        cache.set(index, cached);
        return cached;
      }
      const { width, height, channels } = set;
      const sharp = await loadSharp();
      let image = sharp(pixelsOf(set, index), {
        raw: { width, height, channels: channels as 1 | 2 | 3 | 4 },
      });
      // Without it sharp writes one grey channel as RGB: three times the pixels for nothing.
      if (channels <= 2) image = image.toColourspace('b-w');
      const png = await image.png().toBuffer();
      cache.set(index, png);
      if (cache.size > CACHED_IMAGES) cache.delete(cache.keys().next().value as number);
      return png;
    },
  };
}

/** The 404 text for `missing`: what was asked, what there is, and what to do. */
export function missingImageText(missing: MissingImage): string {
  switch (missing.why) {
    case 'bad-path':
      return `No test image at ${missing.path}: expected ${TEST_IMAGES_PREFIX}<index>.png with a test-set index (0, 1, 2, ...).\n`;
    case 'out-of-range':
      return `No test image ${missing.index}: this run's test set has ${missing.count} images, indices 0 to ${missing.count - 1}.\n`;
    case 'no-set':
      return "This coordinator holds no copy of the run's test images (a distributed run of a built-in dataset with no local copy, see --data-dir), or has not loaded them yet: the page shows the labels without images.\n";
  }
}
