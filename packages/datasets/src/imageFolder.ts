/**
 * loadImageFolder: a folder of images, one subfolder per class (Keras'
 * `image_dataset_from_directory` layout), as two uint8 {@link ImageSet}s.
 *
 * Decoding happens once. The decoded, resized set is written to ONE cache file named by a
 * SHA-256 over every file's relative path and bytes plus the options that change pixels; the
 * next load with the same content reads that file instead (see {@link IMAGE_FOLDER_CACHE_MAGIC}
 * for the format). Sets whose pixels exceed the resident budget (`residentBytes`, a quarter of
 * the machine's memory by default) are not held: they are returned as {@link PagedImages} that
 * read each image from the cache file when a batch needs it.
 *
 * Decoding a folder larger than memory: each decoded image goes straight to its final place
 * in the cache file, so memory holds a few images, never the set. The place of an image depends
 * on the split (train images first, then test, each in file order), and the split depends on
 * which files are readable (the validation split shuffles each class's readable files). So:
 *
 * 1. probe every file (headers only, cheap): files that fail are skipped, as before;
 * 2. fix the split over the probed files, exactly as the in-memory loader did over the decoded
 *    ones, and with it the header, labels and every image's offset;
 * 3. decode a few files at a time (`concurrency`) but append them in file order through a small
 *    reorder window (2 x concurrency images), hashing as they are written: the file is written
 *    once, sequentially, and its SHA-256 trailer needs no second read;
 * 4. a file that probed fine but fails to decode (a truncated PNG whose header is intact) is rare
 *    but changes everything after it: the readable set differs, so the split (its shuffle runs
 *    over the readable files), the counts and the header's skipped list all differ. Its slot is
 *    filled with zeros and decoding goes on; at the end the split is computed again over the
 *    files that did decode, exactly as before this change, and a second file is assembled from
 *    the first, image by image, with nothing decoded twice. Both passes produce the same bytes a
 *    whole-set-in-memory decode produced, so cache files stay byte-identical across versions and
 *    machines (workers compare them).
 *
 * The file is written as a hidden `.partial` next to the cache file, fsynced and renamed into
 * place. Without a cache (`cache: false`) a set that fits the budget is decoded into memory; a
 * larger one goes to a scratch file (in the cache folder, else the system's temporary folder)
 * that is deleted as soon as it is opened, so it disappears with the process.
 *
 * sharp is imported on first use, so `@shardline/datasets` loads without it being touched.
 */
import { createHash, randomBytes } from 'node:crypto';
import { close, createReadStream, open } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { promisify } from 'node:util';
import { formatCount, ShardlineError } from '@shardline/core/errors';
import { type Logger, silentLogger } from '@shardline/core/logger';
import {
  type CachedSets,
  type CacheHeader,
  type CacheLayout,
  CacheWriter,
  cacheLayout,
  commitPartial,
  headerBytes,
  IMAGE_FOLDER_CACHE_VERSION,
  keepsInMemory,
  partialPathFor,
  RESIDENT_BYTES_ENV,
  readCacheFile,
  removeStalePartials,
  resolveResidentBytes,
  type SkippedImage,
  writeCacheFile,
} from './imageFolderCache.js';
import { checkImageSet, closeImageSet, type ImageSet } from './imageSet.js';
import { userCacheDir } from './locations.js';
import { forEachPixelChunk, type PagedImages, pagedSetsOnDescriptor } from './pagedImages.js';
import { type ProgressOptions, progressCallback } from './progress.js';
import { createRng } from './random.js';

const openAsync = promisify(open);
const closeAsync = promisify(close);

export {
  IMAGE_FOLDER_CACHE_MAGIC,
  IMAGE_FOLDER_CACHE_VERSION,
  RESIDENT_BYTES_ENV,
  type SkippedImage,
} from './imageFolderCache.js';

/** `grayscale`: one channel. `rgb`: three channels, alpha dropped. */
export type ColorMode = 'grayscale' | 'rgb';

/** What a decoder learns from an image's header, without decoding its pixels. */
export interface ImageProbe {
  readonly height: number;
  readonly width: number;
  /** True when the image has no colour (one grey channel, with or without alpha). */
  readonly grayscale: boolean;
}

/**
 * Reads images for {@link loadImageFolder}. The default, {@link sharpDecoder}, uses sharp;
 * tests wrap it to count calls. Both methods throw for a file that is not a readable image.
 */
export interface ImageDecoder {
  probe(path: string): Promise<ImageProbe>;
  /** Pixels of `path`, resized to `height` x `width`, HWC, `channels` of 1 or 3. */
  decode(
    path: string,
    target: { height: number; width: number; colorMode: ColorMode },
  ): Promise<Uint8Array>;
}

/** Options for {@link loadImageFolder}. */
export interface ImageFolderOptions extends ProgressOptions {
  /**
   * Size every image is resized to (sharp, `fit: 'fill'`: stretched, aspect ratio not kept, as
   * Keras does by default). Default: the images' own size when all agree, else an error.
   */
  imageSize?: { readonly height: number; readonly width: number };
  /** Default `rgb`, or `grayscale` when every image is greyscale. */
  colorMode?: ColorMode;
  /**
   * Exactly these class folders, in this order (label i is `classNames[i]`). Default: every
   * subfolder, sorted by code point.
   */
  classNames?: readonly string[];
  /**
   * Fraction (0 < f < 1) of each class held out as the test split when the folder has no
   * `train/` and `test/`. The split is stratified (see {@link loadImageFolder}).
   */
  validationSplit?: number;
  /** Seed of the validation split. Default 0. */
  seed?: number;
  /**
   * Folder of the decoded-set cache files. Default `<user cache>/image-folders`, i.e.
   * `$XDG_CACHE_HOME/shardline/image-folders` or `~/.cache/shardline/image-folders`.
   */
  cacheDir?: string;
  /** Skip the cache: always decode, never write a cache file. Default true (use it). */
  cache?: boolean;
  /** Environment for XDG_CACHE_HOME and HOME. Default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Images decoded at the same time. Default 4. */
  concurrency?: number;
  /** Replaces sharp (tests). */
  decoder?: ImageDecoder;
  /** Where the skipped-files warning and "loaded" lines go. Default: nowhere. */
  logger?: Logger;
  /**
   * Most bytes of pixels (train and test together) held in memory. A set within it comes back
   * as `Uint8Array` pixels; a larger one as {@link PagedImages} read from the cache file (or,
   * with `cache: false`, a scratch file) a batch at a time. Default:
   * `$SHARDLINE_RESIDENT_BYTES` (bytes, or with a suffix such as `8G`), else a quarter of
   * `os.totalmem()`. 0 always pages; `Infinity` never does (a split above 4 GiB, the largest
   * buffer Node allocates, is paged regardless).
   */
  residentBytes?: number;
}

/** What {@link loadImageFolder} returns. */
export interface LoadedImageFolder {
  /** In memory, or {@link PagedImages} when the pixels exceed `residentBytes`. */
  readonly train: ImageSet;
  /** In memory or paged, as `train`. */
  readonly test: ImageSet;
  /** Label i is `classNames[i]`. */
  readonly classNames: readonly string[];
  /** Hex SHA-256 of the files and pixel-changing options; names the cache file. */
  readonly fingerprint: string;
  /** The cache file (written or read by this call, unless `cache: false` or writing failed). */
  readonly cachePath: string;
  /** True when the sets came from the cache file and nothing was decoded. */
  readonly fromCache: boolean;
  /** Files left out: unreadable, corrupt or not images. `examples` has the first five. */
  readonly skipped: { readonly count: number; readonly examples: readonly SkippedImage[] };
}

/** Classes are uint8 labels, so at most 256. */
export const MAX_IMAGE_FOLDER_CLASSES = 256;

const DEFAULT_CONCURRENCY = 4;
const SKIPPED_EXAMPLES = 5;

interface FileEntry {
  /** Absolute path. */
  abs: string;
  /** Relative to the root, `/` separated. */
  rel: string;
  size: number;
  classIndex: number;
  /** Split fixed by train/ and test/ folders; undefined when validationSplit decides. */
  split: 'train' | 'test' | undefined;
}

/**
 * Loads an image folder as train and test {@link ImageSet}s (uint8 NHWC pixels, uint8 labels).
 *
 * Layout (Keras' `image_dataset_from_directory`): `dir/<class>/<image>`, class folders sorted
 * by code point unless `classNames` fixes them; images may sit in subfolders of a class folder.
 * When `dir/train` and `dir/test` both exist, they are the splits (the same classes in both).
 * Otherwise `validationSplit` holds out the test part: stratified, per class the files are
 * shuffled with a generator seeded by (`seed`, class index) and `round(n * f)` of them (at
 * most n - 1) go to test, so the same seed and files give the same test set on every machine.
 * Within each split images are ordered by class, then path; `iterateBatches` shuffles.
 *
 * PNG, JPEG, WebP, GIF (first frame), TIFF and AVIF are read by sharp. Files that are not
 * readable images are skipped, counted in `skipped` and named in one `logger` warning; dotfiles
 * (`.DS_Store`) are ignored silently. A class folder whose training part has no images is an
 * error: a class without images cannot be learned.
 *
 * Memory: the sets come back in memory when their pixels fit `residentBytes`, else as
 * {@link PagedImages} on the cache file; decoding holds a few images at a time either way (see
 * the module comment for how a folder larger than memory is decoded).
 *
 * Errors (by `code`): `NOT_FOUND` (no such folder, a `classNames` folder missing),
 * `INVALID_ARGUMENT` (bad options, fewer than two or more than 256 classes, empty class,
 * image sizes differ without `imageSize`, no split given), `DATA_CORRUPT` (no image readable).
 *
 * @example
 * ```ts
 * const { train, test, classNames } = await loadImageFolder('photos', {
 *   imageSize: { height: 64, width: 64 },
 *   validationSplit: 0.2,
 *   seed: 42,
 * });
 * ```
 */
export async function loadImageFolder(
  dir: string,
  options: ImageFolderOptions = {},
): Promise<LoadedImageFolder> {
  checkOptions(options);
  const residentBytes = resolveResidentBytes(options.residentBytes, options.env ?? process.env);
  const root = resolve(dir);
  const logger = (options.logger ?? silentLogger).child({ image_folder: root });
  await requireDirectory(root, 'The image folder');

  const layout = await scanLayout(root, options);
  const { classNames, files } = layout;
  const seed = options.seed ?? 0;

  const fingerprint = await fingerprintFiles(files, {
    format: IMAGE_FOLDER_CACHE_VERSION,
    classNames,
    imageSize: options.imageSize ?? 'auto',
    colorMode: options.colorMode ?? 'auto',
    split: layout.splitFolders ? 'folders' : { validationSplit: options.validationSplit, seed },
  });
  const cachePath = imageFolderCachePath(fingerprint, options);
  const useCache = options.cache ?? true;

  if (useCache) {
    const cached = await readCacheFile(cachePath, fingerprint, logger, residentBytes);
    if (cached) {
      logger.info(
        `loaded image folder from cache (${formatCount(cached.train.count)} train, ${formatCount(cached.test.count)} test images)`,
        { cache: cachePath },
      );
      warnSkipped(logger, cached.skipped);
      return { ...cached, cachePath, fromCache: true };
    }
  }

  const decoded = await decodeFolder(root, files, classNames, options, seed, logger, {
    fingerprint,
    cachePath: useCache ? cachePath : undefined,
    scratchDir: dirname(cachePath),
    residentBytes,
  });
  warnSkipped(logger, decoded.skipped);
  logger.info(
    `decoded image folder: ${formatCount(decoded.train.count)} train, ${formatCount(decoded.test.count)} test images, ${classNames.length} classes`,
  );
  return { ...decoded, classNames, fingerprint, cachePath, fromCache: false };
}

function checkOptions(options: ImageFolderOptions): void {
  const size = options.imageSize;
  if (size !== undefined) {
    for (const key of ['height', 'width'] as const) {
      const n = size[key];
      if (!Number.isSafeInteger(n) || n < 1 || n > 16384) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `imageSize.${key} must be an integer from 1 to 16384 pixels: found ${String(n)}. Pass --image-size HxW, e.g. 64x64.`,
        );
      }
    }
  }
  if (options.colorMode !== undefined && !['grayscale', 'rgb'].includes(options.colorMode)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `colorMode must be 'grayscale' or 'rgb': found ${JSON.stringify(options.colorMode)}.`,
    );
  }
  const f = options.validationSplit;
  if (f !== undefined && !(Number.isFinite(f) && f > 0 && f < 1)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `validationSplit must be a fraction between 0 and 1 (exclusive), e.g. 0.2: found ${String(f)}.`,
    );
  }
  if (options.seed !== undefined && !Number.isSafeInteger(options.seed)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `seed must be an integer: found ${String(options.seed)}.`,
    );
  }
  const c = options.concurrency;
  if (c !== undefined && (!Number.isSafeInteger(c) || c < 1)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `concurrency must be a positive integer: found ${String(c)}.`,
    );
  }
  const names = options.classNames;
  if (names !== undefined) {
    const seen = new Set<string>();
    for (const name of names) {
      if (
        typeof name !== 'string' ||
        name === '' ||
        name.includes('/') ||
        name.includes(sep) ||
        name === '.' ||
        name === '..'
      ) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `classNames must be folder names: found ${JSON.stringify(name)}.`,
        );
      }
      if (seen.has(name)) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `classNames lists ${JSON.stringify(name)} twice; list each class folder once.`,
        );
      }
      seen.add(name);
    }
  }
}

async function requireDirectory(path: string, what: string): Promise<void> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (error) {
    throw new ShardlineError(
      'NOT_FOUND',
      `${what} ${path} does not exist: expected a folder with one subfolder of images per class. Check the path.`,
      { cause: error },
    );
  }
  if (!info.isDirectory()) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${what} ${path} is a file: expected a folder with one subfolder of images per class. Pass the folder that holds the class folders.`,
    );
  }
}

/** Code-point order, the same in every locale (unlike localeCompare). */
function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function subfolders(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort(byCodePoint);
}

async function scanLayout(
  root: string,
  options: ImageFolderOptions,
): Promise<{ classNames: string[]; files: FileEntry[]; splitFolders: boolean }> {
  const top = await subfolders(root);
  const splitFolders = top.includes('train') && top.includes('test');
  if (splitFolders) {
    if (options.validationSplit !== undefined) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${root} has train/ and test/ folders, which already split it, and validationSplit ${options.validationSplit} was given too. Drop --validation-split, or merge the folders.`,
      );
    }
    const trainDir = join(root, 'train');
    const testDir = join(root, 'test');
    const classNames = await resolveClasses(trainDir, options.classNames);
    const testClasses = await resolveClasses(testDir, options.classNames);
    if (options.classNames === undefined && testClasses.join('/') !== classNames.join('/')) {
      const onlyTrain = classNames.filter((c) => !testClasses.includes(c));
      const onlyTest = testClasses.filter((c) => !classNames.includes(c));
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `train/ and test/ of ${root} must have the same class folders: ` +
          `${onlyTrain.length ? `only train/ has ${onlyTrain.join(', ')}` : ''}` +
          `${onlyTrain.length && onlyTest.length ? '; ' : ''}` +
          `${onlyTest.length ? `only test/ has ${onlyTest.join(', ')}` : ''}. Add or remove folders so both list the same classes.`,
      );
    }
    const files = [
      ...(await listClassFiles(root, trainDir, classNames, 'train')),
      ...(await listClassFiles(root, testDir, classNames, 'test')),
    ];
    requireTrainImages(root, classNames, files, 'train/');
    return { classNames, files, splitFolders };
  }
  if (options.validationSplit === undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${root} has no train/ and test/ folders and no validation split was given: expected one of them to decide the test images. Pass --validation-split 0.2 (validationSplit), or make train/ and test/ folders with the same class folders in each.`,
    );
  }
  const classNames = await resolveClasses(root, options.classNames);
  const files = await listClassFiles(root, root, classNames, undefined);
  requireTrainImages(root, classNames, files, '');
  return { classNames, files, splitFolders };
}

async function resolveClasses(
  dir: string,
  wanted: readonly string[] | undefined,
): Promise<string[]> {
  await requireDirectory(dir, 'The image folder');
  const found = await subfolders(dir);
  let classNames: string[];
  if (wanted !== undefined) {
    const missing = wanted.filter((name) => !found.includes(name));
    if (missing.length > 0) {
      throw new ShardlineError(
        'NOT_FOUND',
        `Class folder${missing.length > 1 ? 's' : ''} ${missing.map((m) => JSON.stringify(m)).join(', ')} named in classNames ${missing.length > 1 ? 'are' : 'is'} missing from ${dir}: found ${found.length ? found.join(', ') : 'no folders'}. Create ${missing.length > 1 ? 'them' : 'it'} or fix classNames.`,
      );
    }
    classNames = [...wanted];
  } else {
    classNames = found;
  }
  if (classNames.length < 2) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${dir} has ${classNames.length === 0 ? 'no class folders' : `one class folder (${classNames[0]})`}: expected at least two, one subfolder of images per class (e.g. ${join(dir, 'cats')} and ${join(dir, 'dogs')}).`,
    );
  }
  if (classNames.length > MAX_IMAGE_FOLDER_CLASSES) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${dir} has ${formatCount(classNames.length)} class folders: at most ${MAX_IMAGE_FOLDER_CLASSES} are supported (labels are one byte). Merge classes, or pick at most ${MAX_IMAGE_FOLDER_CLASSES} with classNames.`,
    );
  }
  return classNames;
}

async function listClassFiles(
  root: string,
  splitDir: string,
  classNames: readonly string[],
  split: 'train' | 'test' | undefined,
): Promise<FileEntry[]> {
  const out: FileEntry[] = [];
  for (const [classIndex, name] of classNames.entries()) {
    const walk = async (dir: string): Promise<void> => {
      const entries = await readdir(dir, { withFileTypes: true });
      const sorted = entries
        .filter((e) => !e.name.startsWith('.'))
        .sort((a, b) => byCodePoint(a.name, b.name));
      for (const entry of sorted) {
        const abs = join(dir, entry.name);
        if (entry.isDirectory()) {
          await walk(abs);
        } else if (entry.isFile() || entry.isSymbolicLink()) {
          let size = 0;
          try {
            size = (await stat(abs)).size;
          } catch {
            // Counted as skipped when hashing or decoding fails on it.
          }
          out.push({ abs, rel: relative(root, abs).split(sep).join('/'), size, classIndex, split });
        }
      }
    };
    await walk(join(splitDir, name));
  }
  return out;
}

function requireTrainImages(
  root: string,
  classNames: readonly string[],
  files: readonly FileEntry[],
  prefix: string,
): void {
  const counts = new Array<number>(classNames.length).fill(0);
  for (const f of files) if (f.split !== 'test') counts[f.classIndex]! += 1;
  const empty = classNames.filter((_, i) => counts[i] === 0);
  if (empty.length > 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Class folder${empty.length > 1 ? 's' : ''} ${empty.map((e) => `${prefix}${e}`).join(', ')} in ${root} ${empty.length > 1 ? 'have' : 'has'} no files: expected images in every class, since a class without images cannot be learned. Add images, or leave the class out with classNames.`,
    );
  }
}

/** SHA-256 over the options, then every file's relative path, length and bytes, streamed. */
async function fingerprintFiles(files: readonly FileEntry[], params: unknown): Promise<string> {
  const hash = createHash('sha256');
  hash.update(`shardline-image-folder\n${JSON.stringify(params)}\n`);
  for (const file of files) {
    hash.update(`${file.split ?? '-'}\u0000${file.classIndex}\u0000${file.rel}\u0000`);
    try {
      let length = 0;
      for await (const chunk of createReadStream(file.abs)) {
        hash.update(chunk as Buffer);
        length += (chunk as Buffer).length;
      }
      hash.update(`\u0000${length}\n`);
    } catch {
      // Unreadable now: skipped when decoding, and a different fingerprint once it is readable.
      hash.update('\u0000unreadable\n');
    }
  }
  return hash.digest('hex');
}

/**
 * Writes in-memory train and test sets to the image-folder cache as if they had been decoded
 * from a folder, under a fingerprint of their content (shapes, class names, labels, pixels).
 * The file is then what {@link readImageFolderCache} reads and what a coordinator sends workers
 * that have no copy, so data built in code can be trained on by worker processes too. Sets of
 * 1 or 3 channels only, as the cache format holds.
 *
 * @example
 * ```ts
 * const cached = await cacheImageSets({ train, test, classNames: ['cat', 'dog'] });
 * cached.fingerprint; // names the file, as a folder's fingerprint does
 * ```
 */
export async function cacheImageSets(
  sets: {
    readonly train: ImageSet;
    readonly test: ImageSet;
    readonly classNames: readonly string[];
  },
  options: Pick<ImageFolderOptions, 'cacheDir' | 'env' | 'logger'> = {},
): Promise<LoadedImageFolder> {
  const { train, test, classNames } = sets;
  checkImageSet(train);
  checkImageSet(test);
  if (
    train.height !== test.height ||
    train.width !== test.width ||
    train.channels !== test.channels ||
    (train.channels !== 1 && train.channels !== 3)
  ) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The train and test sets must share one image shape of 1 or 3 channels: found train ${train.height}x${train.width}x${train.channels}, ` +
        `test ${test.height}x${test.width}x${test.channels}. Resize or convert one of them.`,
    );
  }
  if (classNames.length < 2 || classNames.length > MAX_IMAGE_FOLDER_CLASSES) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Expected 2 to ${MAX_IMAGE_FOLDER_CLASSES} class names; found ${classNames.length}. Name every class the labels use.`,
    );
  }
  for (const [name, set] of [
    ['train', train],
    ['test', test],
  ] as const) {
    for (const label of set.labels) {
      if (label >= classNames.length) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `The ${name} set has label ${label}, but there are only ${classNames.length} class names: give one name per class.`,
        );
      }
    }
  }
  const hash = createHash('sha256');
  hash.update(
    JSON.stringify({
      format: IMAGE_FOLDER_CACHE_VERSION,
      inMemory: true,
      classNames,
      shape: [train.height, train.width, train.channels],
      counts: [train.count, test.count],
    }),
  );
  hash.update(train.labels);
  hash.update(test.labels);
  // Paged sets are hashed a chunk at a time, so sets larger than memory can be cached too.
  const imageBytes = train.height * train.width * train.channels;
  for (const set of [train, test]) {
    await forEachPixelChunk(set.images, imageBytes, 8 * 1024 * 1024, (chunk) => {
      hash.update(chunk);
    });
  }
  const fingerprint = hash.digest('hex');
  const cachePath = imageFolderCachePath(fingerprint, options);
  const logger = options.logger ?? silentLogger;
  const result = {
    train,
    test,
    classNames: [...classNames],
    fingerprint,
    skipped: { count: 0, examples: [] },
  };
  // Only whether a valid file exists matters here: residentBytes 0 keeps its pixels on disk.
  const existing = await readCacheFile(cachePath, fingerprint, logger, 0);
  if (existing) {
    closeImageSet(existing.train);
    closeImageSet(existing.test);
  } else {
    await mkdir(dirname(cachePath), { recursive: true });
    await writeCacheFile(cachePath, result, logger);
  }
  return { ...result, cachePath, fromCache: existing !== undefined };
}

/**
 * Where {@link loadImageFolder} keeps the decoded set with this fingerprint: `<cacheDir>/<fingerprint>.bin`,
 * with the same default folder. A worker that was given a job's fingerprint looks here first.
 *
 * @example
 * ```ts
 * const path = imageFolderCachePath(job.fingerprint, { cacheDir: '/var/cache/shardline' });
 * ```
 */
export function imageFolderCachePath(
  fingerprint: string,
  options: Pick<ImageFolderOptions, 'cacheDir' | 'env'> = {},
): string {
  if (!/^[0-9a-f]{64}$/.test(fingerprint)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `An image folder fingerprint is 64 lowercase hex digits (a SHA-256); found ${JSON.stringify(fingerprint).slice(0, 80)}.`,
    );
  }
  const cacheDir = resolve(
    options.cacheDir ?? join(userCacheDir('image-folders', options.env ?? process.env)),
  );
  return join(cacheDir, `${fingerprint}.bin`);
}

/**
 * Reads a decoded set written by {@link loadImageFolder} (or fetched from a coordinator) without
 * its folder. Returns undefined when the file is missing or fails any check (magic, version,
 * header, `fingerprint`, length, labels, SHA-256); a damaged file is logged as a warning.
 *
 * The file is verified by reading it once in chunks, never whole. Pixels that fit
 * `residentBytes` (default: a quarter of the machine's memory, see
 * {@link ImageFolderOptions.residentBytes}) are kept in memory during that read; larger sets
 * come back as {@link PagedImages} on the verified file, read a batch at a time.
 *
 * @example
 * ```ts
 * const loaded = await readImageFolderCache(imageFolderCachePath(fingerprint), fingerprint);
 * if (loaded) train(loaded.train);
 * ```
 */
export async function readImageFolderCache(
  path: string,
  fingerprint: string,
  options: ReadImageFolderCacheOptions = {},
): Promise<LoadedImageFolder | undefined> {
  const residentBytes = resolveResidentBytes(options.residentBytes, options.env ?? process.env);
  const cached = await readCacheFile(
    path,
    fingerprint,
    options.logger ?? silentLogger,
    residentBytes,
  );
  return cached ? { ...cached, cachePath: path, fromCache: true } : undefined;
}

/** Options for {@link readImageFolderCache}. */
export interface ReadImageFolderCacheOptions {
  /** Where a damaged file is reported (a warning) and paging is mentioned. Default: nowhere. */
  logger?: Logger;
  /** Pixel budget, as {@link ImageFolderOptions.residentBytes}: above it the sets are paged. */
  residentBytes?: number;
  /** Environment for `SHARDLINE_RESIDENT_BYTES`. Default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** The default {@link ImageDecoder}: sharp, imported on first use. */
export const sharpDecoder: ImageDecoder = {
  async probe(path) {
    const sharp = await loadSharp();
    const meta = await sharp(path, { failOn: 'error' }).metadata();
    if (!meta.width || !meta.height) throw new Error('the image has no size');
    const grayscale = meta.space === 'b-w' || meta.space === 'grey16' || (meta.channels ?? 3) <= 2;
    return { height: meta.height, width: meta.width, grayscale };
  },
  async decode(path, { height, width, colorMode }) {
    const sharp = await loadSharp();
    let image = sharp(path, { failOn: 'error' });
    const meta = await image.metadata();
    if (meta.width !== width || meta.height !== height) {
      // fill: stretch to the exact size, as Keras' image_dataset_from_directory does.
      image = image.resize(width, height, { fit: 'fill' });
    }
    image =
      colorMode === 'grayscale'
        ? image.greyscale().removeAlpha().toColourspace('b-w')
        : image.removeAlpha().toColourspace('srgb');
    const { data, info } = await image
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    const channels = colorMode === 'grayscale' ? 1 : 3;
    if (info.width !== width || info.height !== height || info.channels !== channels) {
      throw new Error(
        `decoded to ${info.width}x${info.height}x${info.channels}, expected ${width}x${height}x${channels}`,
      );
    }
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  },
};

type SharpFactory = typeof import('sharp')['default'];
let sharpModule: Promise<SharpFactory> | undefined;
function loadSharp(): Promise<SharpFactory> {
  sharpModule ??= import('sharp').then((m) => m.default);
  return sharpModule;
}

/** Runs `task` over 0..n-1, at most `limit` at a time. */
async function pool(n: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
}

function reasonOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0]!.slice(0, 200);
}

/** Where {@link decodeFolder} puts what it decodes. */
interface DecodeTarget {
  readonly fingerprint: string;
  /** Write the cache file here; undefined for `cache: false`. */
  readonly cachePath: string | undefined;
  /** First choice for a scratch file (the cache folder), before the system's temporary one. */
  readonly scratchDir: string;
  readonly residentBytes: number;
}

/** The shape every image is decoded to. */
interface DecodeShape {
  readonly height: number;
  readonly width: number;
  readonly channels: 1 | 3;
  readonly colorMode: ColorMode;
}

/** Which files go where: the split, and with it the whole cache file but its pixels. */
interface DecodePlan {
  /** File indices of the train images, in file order. */
  readonly train: readonly number[];
  /** File indices of the test images, in file order. */
  readonly test: readonly number[];
  readonly header: CacheHeader;
  readonly headerBytes: Buffer;
  readonly layout: CacheLayout;
}

async function decodeFolder(
  root: string,
  files: readonly FileEntry[],
  classNames: readonly string[],
  options: ImageFolderOptions,
  seed: number,
  logger: Logger,
  target: DecodeTarget,
): Promise<Pick<LoadedImageFolder, 'train' | 'test' | 'skipped'>> {
  const decoder = options.decoder ?? sharpDecoder;
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;

  // Headers only: sizes and colour decide the defaults, and readability the split, before any
  // pixel is decoded.
  const probes: (ImageProbe | undefined)[] = new Array(files.length);
  const probeErrors: (string | undefined)[] = new Array(files.length);
  await pool(files.length, concurrency, async (i) => {
    try {
      probes[i] = await decoder.probe(files[i]!.abs);
    } catch (error) {
      probeErrors[i] = `not a readable image: ${reasonOf(error)}`;
    }
  });
  const shape = chooseShape(root, files, probes, options);
  const decodeErrors: (string | undefined)[] = new Array(files.length);
  const usable = Uint8Array.from(probes, (p) => (p === undefined ? 0 : 1));
  const planFor = () => {
    const skipped = skippedFiles(files, probeErrors, decodeErrors);
    const split = splitFiles(root, files, classNames, usable, skipped, options, seed);
    return makePlan(split, classNames, shape, skipped, target.fingerprint);
  };

  let plan = planFor();
  let output = await DecodeOutput.open(plan, files, target, logger);
  try {
    await decodeInPlace(root, files, plan, output, shape, decoder, concurrency, decodeErrors, {
      options,
      logger,
      totalBytes: files.reduce((sum, f, i) => sum + (usable[i] ? f.size : 0), 0),
    });
    const failed = decodeErrors.flatMap((e, i) => (e === undefined ? [] : [i]));
    if (failed.length > 0) {
      for (const i of failed) usable[i] = 0;
      logger.info(
        `${formatCount(failed.length)} file${failed.length === 1 ? '' : 's'} with a readable header could not be decoded; placing the other images again (no decoding)`,
      );
      const replanned = planFor();
      const second = await DecodeOutput.open(replanned, files, target, logger);
      try {
        await copyPlaced(output, second);
      } catch (error) {
        await second.abort();
        throw error;
      }
      await output.abort();
      output = second;
      plan = replanned;
    }
    const sets = await output.finish();
    return { ...sets, skipped: plan.header.skipped };
  } catch (error) {
    await output.abort();
    throw error;
  }
}

/** Size and colour mode of the decoded images, from the options or the probes. */
function chooseShape(
  root: string,
  files: readonly FileEntry[],
  probes: readonly (ImageProbe | undefined)[],
  options: ImageFolderOptions,
): DecodeShape {
  let size = options.imageSize;
  if (size === undefined) {
    let first: { file: FileEntry; probe: ImageProbe } | undefined;
    for (const [i, probe] of probes.entries()) {
      if (!probe) continue;
      const file = files[i]!;
      if (!first) {
        first = { file, probe };
      } else if (probe.height !== first.probe.height || probe.width !== first.probe.width) {
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `Images in ${root} have different sizes: ${first.file.rel} is ${first.probe.height}x${first.probe.width} (HxW), ${file.rel} is ${probe.height}x${probe.width}. Pass --image-size HxW (imageSize) to resize them all, e.g. --image-size ${first.probe.height}x${first.probe.width}.`,
        );
      }
    }
    if (first) size = { height: first.probe.height, width: first.probe.width };
  }
  const colorMode: ColorMode =
    options.colorMode ??
    (probes.some((p) => p !== undefined && !p.grayscale) ? 'rgb' : 'grayscale');
  // Without a size no file was readable, and splitFiles reports that before anything is decoded.
  return {
    height: size?.height ?? 1,
    width: size?.width ?? 1,
    channels: colorMode === 'grayscale' ? 1 : 3,
    colorMode,
  };
}

/** Skipped files in file order, so the examples are the same on every run. */
function skippedFiles(
  files: readonly FileEntry[],
  probeErrors: readonly (string | undefined)[],
  decodeErrors: readonly (string | undefined)[],
): CacheHeader['skipped'] {
  const examples: SkippedImage[] = [];
  let count = 0;
  for (const [i, file] of files.entries()) {
    const reason = probeErrors[i] ?? decodeErrors[i];
    if (reason === undefined) continue;
    count += 1;
    if (examples.length < SKIPPED_EXAMPLES) examples.push({ path: file.rel, reason });
  }
  return { count, examples };
}

/**
 * The train and test files among the `usable` ones (see {@link loadImageFolder} for the rule).
 * A pure function of the usable files, the options and the seed: the decode pass and its
 * fallback both call it, and it is the split the in-memory loader made.
 */
function splitFiles(
  root: string,
  files: readonly FileEntry[],
  classNames: readonly string[],
  usable: Uint8Array,
  skipped: CacheHeader['skipped'],
  options: ImageFolderOptions,
  seed: number,
): { train: number[]; test: number[] } {
  const good = files.map((_, i) => i).filter((i) => usable[i] === 1);
  if (good.length === 0) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `No file in ${root} could be read as an image (${formatCount(files.length)} tried; ${skipped.examples.map((s) => `${s.path}: ${s.reason}`).join('; ')}). Expected PNG, JPEG, WebP or GIF files in the class folders.`,
    );
  }
  const isTest = new Uint8Array(files.length);
  const fraction = options.validationSplit;
  for (const [classIndex, name] of classNames.entries()) {
    const inClass = good.filter((i) => files[i]!.classIndex === classIndex);
    const train = inClass.filter((i) => files[i]!.split !== 'test');
    if (train.length === 0) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Class ${name} in ${root} has no readable training images (every file was skipped; see the warning): expected at least one. Replace the damaged files, or leave the class out with classNames.`,
      );
    }
    for (const i of inClass) if (files[i]!.split === 'test') isTest[i] = 1;
    if (fraction !== undefined && files[inClass[0]!]!.split === undefined) {
      const order = [...inClass];
      const rng = createRng(seed, classIndex, 0x5350_4c54);
      for (let k = order.length - 1; k > 0; k--) {
        const j = rng.nextInt(k + 1);
        [order[k], order[j]] = [order[j]!, order[k]!];
      }
      const held = Math.min(Math.round(order.length * fraction), order.length - 1);
      for (const i of order.slice(0, held)) isTest[i] = 1;
    }
  }
  const test = good.filter((i) => isTest[i] === 1);
  if (test.length === 0 && fraction !== undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `validationSplit ${fraction} of ${formatCount(good.length)} images in ${root} holds out no test image. Pass a larger --validation-split.`,
    );
  }
  return { train: good.filter((i) => isTest[i] !== 1), test };
}

function makePlan(
  split: { train: number[]; test: number[] },
  classNames: readonly string[],
  shape: DecodeShape,
  skipped: CacheHeader['skipped'],
  fingerprint: string,
): DecodePlan {
  // Key order is the file format: the same as the in-memory writer always used.
  const header: CacheHeader = {
    fingerprint,
    classNames: [...classNames],
    height: shape.height,
    width: shape.width,
    channels: shape.channels,
    trainCount: split.train.length,
    testCount: split.test.length,
    skipped,
  };
  const bytes = headerBytes(header);
  return { ...split, header, headerBytes: bytes, layout: cacheLayout(header, bytes.length) };
}

/**
 * Where one plan's file goes: the cache (a `.partial` renamed into place), a scratch file
 * (deleted once open) or memory alone; pixels within the budget are kept in memory as well.
 */
class DecodeOutput {
  private constructor(
    readonly plan: DecodePlan,
    /** Train labels then test labels, as in the file. */
    private readonly labels: Uint8Array,
    readonly writer: CacheWriter,
    private readonly kind: 'cache' | 'scratch' | 'memory',
    private readonly cachePath: string | undefined,
    private readonly pixels: { train: Uint8Array; test: Uint8Array } | undefined,
    private readonly logger: Logger,
  ) {}

  static async open(
    plan: DecodePlan,
    files: readonly FileEntry[],
    target: DecodeTarget,
    logger: Logger,
  ): Promise<DecodeOutput> {
    const { layout, header } = plan;
    const labels = Uint8Array.from([...plan.train, ...plan.test], (i) => files[i]!.classIndex);
    const trainBytes = header.trainCount * layout.imageBytes;
    const testBytes = header.testCount * layout.imageBytes;
    const pixels = keepsInMemory(target.residentBytes, trainBytes, testBytes)
      ? { train: new Uint8Array(trainBytes), test: new Uint8Array(testBytes) }
      : undefined;
    const keep = pixels
      ? [
          { at: layout.trainPixelsAt, into: pixels.train },
          { at: layout.testPixelsAt, into: pixels.test },
        ]
      : [];
    const make = (writer: CacheWriter, kind: 'cache' | 'scratch' | 'memory') =>
      new DecodeOutput(plan, labels, writer, kind, target.cachePath, pixels, logger);

    if (target.cachePath !== undefined) {
      try {
        await mkdir(dirname(target.cachePath), { recursive: true });
        await removeStalePartials(dirname(target.cachePath));
        const partial = partialPathFor(target.cachePath);
        return make(await CacheWriter.open({ partial, keep, logger }), 'cache');
      } catch (error) {
        // A read-only or full cache costs a re-decode next time, never this load.
        logger.warn(
          `could not write the image folder cache ${target.cachePath}; the next load decodes again`,
          { error: (error as Error).message },
        );
      }
    }
    if (pixels) return make(await CacheWriter.open({ keep, logger }), 'memory');
    // Larger than the budget and no cache: a scratch file, unlinked as soon as it is open.
    const dirs = [target.scratchDir, tmpdir()];
    const errors: string[] = [];
    for (const dir of dirs) {
      try {
        await mkdir(dir, { recursive: true });
        const partial = join(
          dir,
          `.shardline-scratch-${target.fingerprint.slice(0, 16)}.${process.pid}.${randomBytes(4).toString('hex')}.partial`,
        );
        return make(await CacheWriter.open({ partial, logger }), 'scratch');
      } catch (error) {
        errors.push(`${dir}: ${(error as Error).message}`);
      }
    }
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The decoded images (${formatCount(trainBytes + testBytes)} bytes) exceed the resident budget of ${formatCount(target.residentBytes)} bytes and no file could be created to hold them (${errors.join('; ')}). Free disk space or make the cache folder writable, or raise residentBytes (${RESIDENT_BYTES_ENV}) if the memory is there.`,
    );
  }

  /** Offset of image k of a split in the file. */
  offsetOf(split: 'train' | 'test', k: number): number {
    const { layout } = this.plan;
    return (split === 'train' ? layout.trainPixelsAt : layout.testPixelsAt) + k * layout.imageBytes;
  }

  /** Header and labels: everything before the pixels, known from the plan alone. */
  async writeHead(): Promise<void> {
    await this.writer.write(this.plan.headerBytes);
    await this.writer.write(this.labels);
  }

  /** Commits the file and returns the sets: in memory, or paged on the file. */
  async finish(): Promise<Pick<CachedSets, 'train' | 'test'>> {
    const { plan, writer, pixels } = this;
    const { header, layout } = plan;
    const partial = await writer.finish();
    const base = (count: number, labelBytes: Uint8Array) => ({
      labels: labelBytes,
      count,
      height: header.height,
      width: header.width,
      channels: header.channels,
      numClasses: header.classNames.length,
    });
    const trainLabels = this.labels.subarray(0, header.trainCount);
    const testLabels = this.labels.subarray(header.trainCount);
    if (pixels) {
      if (partial !== undefined && this.kind === 'cache' && this.cachePath !== undefined) {
        try {
          await commitPartial(partial, this.cachePath);
          this.logger.debug('wrote image folder cache', { cache: this.cachePath });
        } catch (error) {
          await rm(partial, { force: true });
          this.logger.warn(
            `could not write the image folder cache ${this.cachePath}; the next load decodes again`,
            { error: (error as Error).message },
          );
        }
      }
      return {
        train: { ...base(header.trainCount, trainLabels), images: pixels.train },
        test: { ...base(header.testCount, testLabels), images: pixels.test },
      };
    }
    if (partial === undefined) {
      throw new ShardlineError('INTERNAL', 'A paged image folder has no file behind it.');
    }
    const fd = await openAsync(partial, 'r');
    let source = partial;
    try {
      if (this.kind === 'cache' && this.cachePath !== undefined) {
        try {
          await commitPartial(partial, this.cachePath);
          source = this.cachePath;
        } catch (error) {
          // Page from the open scratch copy: this load goes on, the next decodes again.
          this.logger.warn(
            `could not write the image folder cache ${this.cachePath}; the next load decodes again`,
            { error: (error as Error).message },
          );
          await rm(partial, { force: true });
        }
      } else {
        // Unlinked while open: the pixels live until the last set is closed or collected.
        await rm(partial, { force: true });
      }
    } catch (error) {
      await closeAsync(fd).catch(() => {});
      throw error;
    }
    const [trainImages, testImages] = pagedSetsOnDescriptor(fd, source, [
      { offset: layout.trainPixelsAt, count: header.trainCount, imageBytes: layout.imageBytes },
      { offset: layout.testPixelsAt, count: header.testCount, imageBytes: layout.imageBytes },
    ]);
    return {
      train: { ...base(header.trainCount, trainLabels), images: trainImages! },
      test: { ...base(header.testCount, testLabels), images: testImages! },
    };
  }

  async abort(): Promise<void> {
    await this.writer.abort();
  }
}

/**
 * Decodes the plan's files into `output` in file order (train, then test), `concurrency` at a
 * time. A file that fails to decode is recorded in `decodeErrors` and its slot zero-filled, so
 * every other image still lands at its planned offset.
 */
async function decodeInPlace(
  root: string,
  files: readonly FileEntry[],
  plan: DecodePlan,
  output: DecodeOutput,
  shape: DecodeShape,
  decoder: ImageDecoder,
  concurrency: number,
  decodeErrors: (string | undefined)[],
  progress: { options: ImageFolderOptions; logger: Logger; totalBytes: number },
): Promise<void> {
  const order = [...plan.train, ...plan.test];
  const bytesPerImage = plan.layout.imageBytes;
  const { height, width, colorMode } = shape;
  const onProgress = progressCallback(progress.options, progress.logger);
  const label = `the images of ${basename(root)}`;
  const report = (receivedBytes: number, done: boolean) =>
    onProgress({
      file: label,
      url: root,
      receivedBytes,
      totalBytes: progress.totalBytes,
      done,
      activity: 'decode',
    });
  let doneBytes = 0;
  report(0, false);
  await output.writeHead();
  const zeros = new Uint8Array(bytesPerImage);
  await decodeInOrder(
    order.length,
    concurrency,
    async (p) => {
      const i = order[p]!;
      const file = files[i]!;
      let data: Uint8Array = zeros;
      try {
        data = await decoder.decode(file.abs, { height, width, colorMode });
        if (data.length !== bytesPerImage) {
          throw new Error(`decoded to ${data.length} bytes, expected ${bytesPerImage}`);
        }
      } catch (error) {
        decodeErrors[i] = `could not decode: ${reasonOf(error)}`;
        data = zeros;
      }
      doneBytes += file.size;
      report(doneBytes, false);
      return data;
    },
    (bytes) => output.writer.write(bytes),
  );
  report(doneBytes, true);
}

/**
 * Runs `produce` over 0..n-1, at most `concurrency` at a time, and hands the results to
 * `consume` in index order. At most 2 x concurrency results wait for their turn, so memory is
 * bounded by the window, not by n; a slow item holds the others back by at most that much.
 */
async function decodeInOrder(
  n: number,
  concurrency: number,
  produce: (index: number) => Promise<Uint8Array>,
  consume: (bytes: Uint8Array) => Promise<void>,
): Promise<void> {
  const window = Math.max(2, concurrency * 2);
  const ready = new Map<number, Uint8Array>();
  let nextStart = 0;
  let nextWrite = 0;
  let draining = false;
  let failed = false;
  let waiting: (() => void)[] = [];
  const wake = () => {
    const woken = waiting;
    waiting = [];
    for (const resolve of woken) resolve();
  };
  // One drainer at a time keeps the writes in order; a result that arrives mid-drain is taken
  // by the running drainer, which re-checks after every write.
  const drain = async () => {
    if (draining) return;
    draining = true;
    try {
      while (!failed && ready.has(nextWrite)) {
        const bytes = ready.get(nextWrite)!;
        ready.delete(nextWrite);
        await consume(bytes);
        nextWrite += 1;
        wake();
      }
    } finally {
      draining = false;
    }
  };
  const worker = async () => {
    try {
      while (!failed && nextStart < n) {
        if (nextStart - nextWrite >= window) {
          await new Promise<void>((resolve) => waiting.push(resolve));
          continue;
        }
        const index = nextStart++;
        ready.set(index, await produce(index));
        await drain();
      }
    } catch (error) {
      failed = true;
      wake();
      throw error;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  if (nextWrite !== n) {
    throw new ShardlineError(
      'INTERNAL',
      `Decoding wrote ${formatCount(nextWrite)} of ${formatCount(n)} images in order.`,
    );
  }
}

/**
 * Fills `to` (a plan over fewer files) from `from` (the first pass's file or memory), image by
 * image in `to`'s order: the fallback after a decode failure, with nothing decoded again.
 */
async function copyPlaced(from: DecodeOutput, to: DecodeOutput): Promise<void> {
  const where = new Map<number, number>();
  for (const [k, i] of from.plan.train.entries()) where.set(i, from.offsetOf('train', k));
  for (const [k, i] of from.plan.test.entries()) where.set(i, from.offsetOf('test', k));
  await to.writeHead();
  const image = new Uint8Array(from.plan.layout.imageBytes);
  for (const i of [...to.plan.train, ...to.plan.test]) {
    await from.writer.readBack(where.get(i)!, image);
    await to.writer.write(image);
  }
}

function warnSkipped(logger: Logger, skipped: LoadedImageFolder['skipped']): void {
  if (skipped.count === 0) return;
  logger.warn(
    `skipped ${formatCount(skipped.count)} file${skipped.count === 1 ? '' : 's'} that are not readable images: ${skipped.examples.map((s) => `${s.path} (${s.reason})`).join('; ')}${skipped.count > skipped.examples.length ? '; ...' : ''}`,
    { skipped: skipped.count },
  );
}
