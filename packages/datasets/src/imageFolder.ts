/**
 * loadImageFolder: a folder of images, one subfolder per class (Keras'
 * `image_dataset_from_directory` layout), as two uint8 {@link ImageSet}s.
 *
 * Decoding happens once. The decoded, resized set is written to ONE cache file named by a
 * SHA-256 over every file's relative path and bytes plus the options that change pixels; the
 * next load with the same content reads that file instead (see {@link IMAGE_FOLDER_CACHE_MAGIC}
 * for the format). Files are hashed one at a time as streams and decoded a few at a time, so
 * memory holds the decoded pixels and little else.
 *
 * sharp is imported on first use, so `@shardline/datasets` loads without it being touched.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { writeFileAtomic } from '@shardline/core/atomicFile';
import { formatCount, ShardlineError, toShardlineError } from '@shardline/core/errors';
import { type Logger, silentLogger } from '@shardline/core/logger';
import { checkImageSet, type ImageSet } from './imageSet.js';
import { userCacheDir } from './locations.js';
import { type ProgressOptions, progressCallback } from './progress.js';
import { createRng } from './random.js';

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
}

/** One file that was left out, and why. */
export interface SkippedImage {
  /** Path relative to the folder given to {@link loadImageFolder}, with `/` separators. */
  readonly path: string;
  readonly reason: string;
}

/** What {@link loadImageFolder} returns. */
export interface LoadedImageFolder {
  readonly train: ImageSet;
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

/**
 * First 8 bytes of a cache file. Layout, all integers little-endian:
 *
 * | bytes | content |
 * | ----- | ------- |
 * | 8     | magic `SLIMGFLD` |
 * | 4     | format version, uint32 (1) |
 * | 4     | header length H, uint32 |
 * | H     | header, UTF-8 JSON: fingerprint, classNames, height, width, channels, trainCount, testCount, skipped |
 * | T     | train labels, uint8, T = trainCount |
 * | E     | test labels, uint8, E = testCount |
 * | T*S   | train pixels, uint8 NHWC, S = height*width*channels |
 * | E*S   | test pixels |
 * | 32    | SHA-256 of everything before it |
 *
 * A file that fails any check (magic, version, header, fingerprint, length, labels, digest) is
 * ignored and the folder decoded again.
 */
export const IMAGE_FOLDER_CACHE_MAGIC = 'SLIMGFLD';
/** Version of the cache file format; a file with another is decoded again. */
export const IMAGE_FOLDER_CACHE_VERSION = 1;

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

interface CacheHeader {
  fingerprint: string;
  classNames: string[];
  height: number;
  width: number;
  channels: number;
  trainCount: number;
  testCount: number;
  skipped: { count: number; examples: SkippedImage[] };
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
  const cacheDir = dirname(cachePath);
  const useCache = options.cache ?? true;

  if (useCache) {
    const cached = await readCacheFile(cachePath, fingerprint, logger);
    if (cached) {
      logger.info(
        `loaded image folder from cache (${formatCount(cached.train.count)} train, ${formatCount(cached.test.count)} test images)`,
        {
          cache: cachePath,
        },
      );
      warnSkipped(logger, cached.skipped);
      return { ...cached, cachePath, fromCache: true };
    }
  }

  const decoded = await decodeAll(root, files, classNames, options, seed, logger);
  const result = { ...decoded, classNames, fingerprint };
  warnSkipped(logger, result.skipped);
  if (useCache) {
    try {
      await mkdir(cacheDir, { recursive: true });
      await writeCacheFile(cachePath, result);
      logger.debug('wrote image folder cache', { cache: cachePath });
    } catch (error) {
      // A read-only or full cache costs a re-decode next time, never this load.
      logger.warn(
        `could not write the image folder cache ${cachePath}; the next load decodes again`,
        {
          error: toShardlineError(error).message,
        },
      );
    }
  }
  logger.info(
    `decoded image folder: ${formatCount(result.train.count)} train, ${formatCount(result.test.count)} test images, ${classNames.length} classes`,
  );
  return { ...result, cachePath, fromCache: false };
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
  for (const part of [train.labels, test.labels, train.images, test.images]) hash.update(part);
  const fingerprint = hash.digest('hex');
  const cachePath = imageFolderCachePath(fingerprint, options);
  const result = {
    train,
    test,
    classNames: [...classNames],
    fingerprint,
    skipped: { count: 0, examples: [] },
  };
  const existing = await readCacheFile(cachePath, fingerprint, options.logger ?? silentLogger);
  if (!existing) {
    await mkdir(dirname(cachePath), { recursive: true });
    await writeCacheFile(cachePath, result);
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
 * @example
 * ```ts
 * const loaded = await readImageFolderCache(imageFolderCachePath(fingerprint), fingerprint);
 * if (loaded) train(loaded.train);
 * ```
 */
export async function readImageFolderCache(
  path: string,
  fingerprint: string,
  options: { logger?: Logger } = {},
): Promise<LoadedImageFolder | undefined> {
  const cached = await readCacheFile(path, fingerprint, options.logger ?? silentLogger);
  return cached ? { ...cached, cachePath: path, fromCache: true } : undefined;
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

async function decodeAll(
  root: string,
  files: readonly FileEntry[],
  classNames: readonly string[],
  options: ImageFolderOptions,
  seed: number,
  logger: Logger,
): Promise<Omit<LoadedImageFolder, 'classNames' | 'fingerprint' | 'cachePath' | 'fromCache'>> {
  const decoder = options.decoder ?? sharpDecoder;
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  const skipped: SkippedImage[] = [];
  let skippedCount = 0;
  const skip = (file: FileEntry, reason: string) => {
    skippedCount += 1;
    if (skipped.length < SKIPPED_EXAMPLES) skipped.push({ path: file.rel, reason });
  };

  // Headers only: sizes and colour decide the defaults before any pixel is decoded.
  const probes: (ImageProbe | undefined)[] = new Array(files.length);
  const probeErrors: (string | undefined)[] = new Array(files.length);
  await pool(files.length, concurrency, async (i) => {
    try {
      probes[i] = await decoder.probe(files[i]!.abs);
    } catch (error) {
      probeErrors[i] = `not a readable image: ${reasonOf(error)}`;
    }
  });

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
  const channels = colorMode === 'grayscale' ? 1 : 3;

  const totalBytes = files.reduce((sum, f, i) => sum + (probes[i] ? f.size : 0), 0);
  const onProgress = progressCallback(options, logger);
  const label = `the images of ${basename(root)}`;
  let doneBytes = 0;

  const height = size?.height ?? 1;
  const width = size?.width ?? 1;
  const bytesPerImage = height * width * channels;
  const ok = new Uint8Array(files.length);
  const pixels = new Uint8Array(size ? files.length * bytesPerImage : 0);
  const decodeErrors: (string | undefined)[] = new Array(files.length);
  if (size) {
    onProgress({
      file: label,
      url: root,
      receivedBytes: 0,
      totalBytes,
      done: false,
      activity: 'decode',
    });
    await pool(files.length, concurrency, async (i) => {
      if (!probes[i]) return;
      const file = files[i]!;
      try {
        const data = await decoder.decode(file.abs, { height, width, colorMode });
        if (data.length !== bytesPerImage) {
          throw new Error(`decoded to ${data.length} bytes, expected ${bytesPerImage}`);
        }
        pixels.set(data, i * bytesPerImage);
        ok[i] = 1;
      } catch (error) {
        decodeErrors[i] = `could not decode: ${reasonOf(error)}`;
      }
      doneBytes += file.size;
      onProgress({
        file: label,
        url: root,
        receivedBytes: doneBytes,
        totalBytes,
        done: false,
        activity: 'decode',
      });
    });
    onProgress({
      file: label,
      url: root,
      receivedBytes: doneBytes,
      totalBytes,
      done: true,
      activity: 'decode',
    });
  }
  // Skipped in file order, so the examples are the same on every run.
  for (const [i, file] of files.entries()) {
    const reason = probeErrors[i] ?? decodeErrors[i];
    if (reason !== undefined) skip(file, reason);
  }
  const good = files.map((_, i) => i).filter((i) => ok[i] === 1);
  if (good.length === 0) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `No file in ${root} could be read as an image (${formatCount(files.length)} tried; ${skipped.map((s) => `${s.path}: ${s.reason}`).join('; ')}). Expected PNG, JPEG, WebP or GIF files in the class folders.`,
    );
  }

  // Which decoded images are test images.
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
  const build = (test: boolean): ImageSet => {
    const picked = good.filter((i) => (isTest[i] === 1) === test);
    const images = new Uint8Array(picked.length * bytesPerImage);
    const labels = new Uint8Array(picked.length);
    for (const [k, i] of picked.entries()) {
      images.set(pixels.subarray(i * bytesPerImage, (i + 1) * bytesPerImage), k * bytesPerImage);
      labels[k] = files[i]!.classIndex;
    }
    return {
      images,
      labels,
      count: picked.length,
      height,
      width,
      channels,
      numClasses: classNames.length,
    };
  };
  const train = build(false);
  const test = build(true);
  if (test.count === 0 && fraction !== undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `validationSplit ${fraction} of ${formatCount(good.length)} images in ${root} holds out no test image. Pass a larger --validation-split.`,
    );
  }
  return { train, test, skipped: { count: skippedCount, examples: skipped } };
}

function warnSkipped(logger: Logger, skipped: LoadedImageFolder['skipped']): void {
  if (skipped.count === 0) return;
  logger.warn(
    `skipped ${formatCount(skipped.count)} file${skipped.count === 1 ? '' : 's'} that are not readable images: ${skipped.examples.map((s) => `${s.path} (${s.reason})`).join('; ')}${skipped.count > skipped.examples.length ? '; ...' : ''}`,
    { skipped: skipped.count },
  );
}

async function writeCacheFile(
  path: string,
  result: Pick<LoadedImageFolder, 'train' | 'test' | 'classNames' | 'fingerprint' | 'skipped'>,
): Promise<void> {
  const { train, test } = result;
  const header: CacheHeader = {
    fingerprint: result.fingerprint,
    classNames: [...result.classNames],
    height: train.height,
    width: train.width,
    channels: train.channels,
    trainCount: train.count,
    testCount: test.count,
    skipped: { count: result.skipped.count, examples: [...result.skipped.examples] },
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(16);
  prefix.write(IMAGE_FOLDER_CACHE_MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(IMAGE_FOLDER_CACHE_VERSION, 8);
  prefix.writeUInt32LE(json.length, 12);
  const chunks = [prefix, json, train.labels, test.labels, train.images, test.images];
  const hash = createHash('sha256');
  for (const c of chunks) hash.update(c);
  chunks.push(hash.digest());
  await writeFileAtomic(path, chunks);
}

async function readCacheFile(
  path: string,
  fingerprint: string,
  logger: Logger,
): Promise<
  Pick<LoadedImageFolder, 'train' | 'test' | 'classNames' | 'fingerprint' | 'skipped'> | undefined
> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch {
    return undefined;
  }
  const bad = (why: string) => {
    logger.warn(`ignoring damaged image folder cache ${path} (${why}); decoding the images again`);
    return undefined;
  };
  if (bytes.length < 16 + 32) return bad('truncated');
  if (bytes.toString('latin1', 0, 8) !== IMAGE_FOLDER_CACHE_MAGIC) return bad('wrong magic');
  if (bytes.readUInt32LE(8) !== IMAGE_FOLDER_CACHE_VERSION) return bad('another format version');
  const headerLength = bytes.readUInt32LE(12);
  if (16 + headerLength + 32 > bytes.length) return bad('truncated header');
  let header: CacheHeader;
  try {
    header = JSON.parse(bytes.toString('utf8', 16, 16 + headerLength)) as CacheHeader;
  } catch {
    return bad('unreadable header');
  }
  const { height, width, channels, trainCount, testCount, classNames } = header;
  const ints = [height, width, channels, trainCount, testCount];
  if (
    header.fingerprint !== fingerprint ||
    !Array.isArray(classNames) ||
    !ints.every((n) => Number.isSafeInteger(n) && n >= 0) ||
    (channels !== 1 && channels !== 3) ||
    typeof header.skipped?.count !== 'number' ||
    !Array.isArray(header.skipped.examples)
  ) {
    return bad('unexpected header');
  }
  const s = height * width * channels;
  const body = 16 + headerLength;
  const expected = body + (trainCount + testCount) * (1 + s) + 32;
  if (bytes.length !== expected) return bad(`expected ${expected} bytes, found ${bytes.length}`);
  const digest = createHash('sha256')
    .update(bytes.subarray(0, expected - 32))
    .digest();
  if (!digest.equals(bytes.subarray(expected - 32))) return bad('checksum mismatch');
  const view = (offset: number, length: number) =>
    new Uint8Array(bytes.buffer, bytes.byteOffset + offset, length);
  const trainLabels = view(body, trainCount);
  const testLabels = view(body + trainCount, testCount);
  for (const labels of [trainLabels, testLabels]) {
    for (const l of labels) if (l >= classNames.length) return bad('label out of range');
  }
  const pixelsAt = body + trainCount + testCount;
  const set = (labels: Uint8Array, images: Uint8Array, count: number): ImageSet => ({
    images,
    labels,
    count,
    height,
    width,
    channels,
    numClasses: classNames.length,
  });
  return {
    train: set(trainLabels, view(pixelsAt, trainCount * s), trainCount),
    test: set(testLabels, view(pixelsAt + trainCount * s, testCount * s), testCount),
    classNames,
    fingerprint,
    skipped: header.skipped,
  };
}
