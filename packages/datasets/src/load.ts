/**
 * loadDataset: find a dataset's four IDX files (or download them), verify them, decode them and
 * hand back both splits as uint8 {@link ImageSet}s.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  formatCount,
  ShardlineError,
  type ShardlineErrorCode,
  toShardlineError,
} from '@shardline/core/errors';
import { type Logger, silentLogger } from '@shardline/core/logger';
import {
  type DatasetDescriptor,
  type DatasetFile,
  datasetFiles,
  getDataset,
} from './descriptors.js';
import { type DownloadAttempt, downloadFile, type FetchLike } from './download.js';
import { DEFAULT_REMEDY, decodeIdx, type IdxArray } from './idx.js';
import { type ImageSet, takeImages } from './imageSet.js';
import {
  type LocationOptions,
  type SearchLocation,
  searchLocations,
  userCacheDir,
} from './locations.js';
import { type ProgressOptions, progressCallback } from './progress.js';

/** Options for {@link loadDataset}. */
export interface LoadDatasetOptions extends LocationOptions, ProgressOptions {
  /** Keep only the first N training images (quick runs). Default: all. */
  limitTrain?: number;
  /** Keep only the first N test images. Default: all. */
  limitTest?: number;
  /** Download missing files into the cache when no location has them all. Default true. */
  download?: boolean;
  /**
   * Check SHA-256 digests against the descriptor. Default true. Turn off only for your own data
   * in the same layout; structure, counts and shapes are checked either way.
   */
  verifyChecksums?: boolean;
  /** Where progress lines and "loaded from" go. Default: nowhere. */
  logger?: Logger;
  /** Replaces the global fetch for downloads (tests, proxies). */
  fetch?: FetchLike;
  /** Cancels a download in progress (`CANCELLED`). */
  signal?: AbortSignal;
}

/** Where a loaded dataset came from. */
export interface DatasetSource {
  /** The location the files were read from. */
  readonly location: SearchLocation;
  /** Absolute paths of the four files, train images, train labels, test images, test labels. */
  readonly files: readonly string[];
  /** Names of the files downloaded by this call (into the cache). */
  readonly downloaded: readonly string[];
  /** True when every file's digest matched a pinned one. */
  readonly verified: boolean;
}

/** What {@link loadDataset} returns. */
export interface LoadedDataset {
  /** Always in memory: IDX files are small enough (Fashion-MNIST's train split is 47 MB). */
  readonly train: ImageSet<Uint8Array>;
  readonly test: ImageSet<Uint8Array>;
  readonly descriptor: DatasetDescriptor;
  readonly source: DatasetSource;
}

type Role = 'images' | 'labels';
type Split = 'train' | 'test';

interface Located {
  split: Split;
  role: Role;
  file: DatasetFile;
  path: string;
}

interface Decoded {
  idx: IdxArray;
  /** The digest matched a pinned one. */
  verified: boolean;
}

interface Probe {
  location: SearchLocation;
  found: Located[];
  missing: { split: Split; role: Role; file: DatasetFile }[];
  problem: string | undefined;
}

/**
 * Loads both splits of a dataset, by name (see `datasetNames`) or by descriptor.
 *
 * Resolution order: `dataDir`, SHARDLINE_DATA_DIR, the user cache, the `searchPaths` (default
 * `/usr/share/datasets/<name>`); the first that has all four files is used. When none has,
 * the missing files are downloaded from the descriptor's mirrors into the user cache, verified
 * and atomically renamed into place. A location with the files but a wrong digest is an error,
 * never silently skipped.
 *
 * Errors (by `code`): `NOT_FOUND` (nothing local, download off), `NETWORK` (nothing local,
 * download failed), `DATA_CORRUPT` (bad digest, truncated, not IDX), `MISMATCH` (counts or
 * shapes disagree with each other or the descriptor), `CANCELLED`. Messages list every place
 * looked and how to provide the files.
 *
 * @example
 * ```ts
 * const { train, test, source } = await loadDataset('fashion-mnist', { logger });
 * train.count; // 60000
 * ```
 */
export async function loadDataset(
  dataset: string | DatasetDescriptor,
  options: LoadDatasetOptions = {},
): Promise<LoadedDataset> {
  const descriptor = typeof dataset === 'string' ? getDataset(dataset) : dataset;
  checkDescriptor(descriptor);
  for (const key of ['limitTrain', 'limitTest'] as const) {
    const limit = options[key];
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${key} must be a non-negative integer number of images: found ${String(limit)}.`,
      );
    }
  }
  const logger = (options.logger ?? silentLogger).child({ dataset: descriptor.name });
  const verify = options.verifyChecksums ?? true;

  const probes: Probe[] = [];
  for (const location of searchLocations(descriptor, options)) {
    const probe = await probeLocation(location, descriptor);
    probes.push(probe);
    if (probe.missing.length === 0) {
      logger.debug('dataset files found', { dir: location.dir, where: location.label });
      const loaded = await loadLocated(descriptor, probe, verify, new Map<string, Decoded>());
      return finish(descriptor, probe.location, probe.found, [], loaded, options, logger);
    }
    logger.debug('dataset files not here', { dir: location.dir, why: probe.problem });
    if ((location.kind === 'dataDir' || location.kind === 'env') && probe.found.length > 0) {
      logger.warn(`${location.dir} has only some ${descriptor.title} files; looking elsewhere`, {
        missing: probe.missing.map((m) => m.file.name),
      });
    }
  }

  // Found by path, not kind: when dataDir is the cache directory, its location is the dataDir one.
  const cacheDir = resolve(options.cacheDir ?? userCacheDir(descriptor.name, options.env));
  const cache = probes.find((p) => p.location.dir === cacheDir);
  if (options.download === false || cache === undefined) {
    throw notAvailable(
      descriptor,
      probes,
      cacheDir,
      'NOT_FOUND',
      'downloads are turned off (download: false)',
    );
  }
  const downloaded = new Map<string, Decoded>();
  const onProgress = progressCallback(options, logger);
  for (const missing of cache.missing) {
    const { file, split, role } = missing;
    try {
      const result = await downloadFile({
        urls: descriptor.mirrors.map((mirror) => new URL(file.name, withSlash(mirror)).href),
        dir: cache.location.dir,
        name: file.name,
        ...(file.size === undefined ? {} : { sizeHint: file.size }),
        ...(options.fetch ? { fetch: options.fetch } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        onProgress,
        verify: (body, sha256) =>
          decodeChecked(descriptor, split, role, file, body, sha256, verify, {
            display: file.name,
            remedy: 'The server sent a bad copy; nothing was saved.',
            download: true,
          }),
      });
      downloaded.set(file.name, result.verified);
      cache.found.push({ split, role, file, path: result.path });
      logger.info(`downloaded ${file.name}`, { url: result.url, bytes: result.bytes });
    } catch (error) {
      const e = toShardlineError(error, 'NETWORK');
      if (e.code === 'CANCELLED') throw e;
      throw notAvailable(
        descriptor,
        probes,
        cacheDir,
        e.code === 'DATA_CORRUPT' ? 'DATA_CORRUPT' : 'NETWORK',
        `downloading failed: ${e.message}`,
        { cause: e, attempts: (e.details.attempts as DownloadAttempt[] | undefined) ?? [] },
      );
    }
  }
  const loaded = await loadLocated(descriptor, cache, verify, downloaded);
  return finish(
    descriptor,
    cache.location,
    cache.found,
    [...downloaded.keys()],
    loaded,
    options,
    logger,
  );
}

function finish(
  descriptor: DatasetDescriptor,
  location: SearchLocation,
  found: Located[],
  downloaded: string[],
  loaded: { train: ImageSet<Uint8Array>; test: ImageSet<Uint8Array>; verified: boolean },
  options: LoadDatasetOptions,
  logger: Logger,
): LoadedDataset {
  const train =
    options.limitTrain === undefined ? loaded.train : takeImages(loaded.train, options.limitTrain);
  const test =
    options.limitTest === undefined ? loaded.test : takeImages(loaded.test, options.limitTest);
  const order = datasetFiles(descriptor).map((f) => f.file.name);
  const files = [...found]
    .sort((a, b) => order.indexOf(a.file.name) - order.indexOf(b.file.name))
    .map((f) => f.path);
  logger.info(`loaded ${descriptor.title} from ${location.dir} (${location.label})`, {
    train: train.count,
    test: test.count,
    verified: loaded.verified,
    downloaded,
  });
  return {
    train,
    test,
    descriptor,
    source: { location, files, downloaded, verified: loaded.verified },
  };
}

async function probeLocation(
  location: SearchLocation,
  descriptor: DatasetDescriptor,
): Promise<Probe> {
  const info = await stat(location.dir).catch(() => undefined);
  const all = datasetFiles(descriptor);
  if (info === undefined || !info.isDirectory()) {
    return {
      location,
      found: [],
      missing: all,
      problem: info === undefined ? 'no such directory' : 'not a directory',
    };
  }
  const found: Located[] = [];
  const missing: Probe['missing'] = [];
  for (const entry of all) {
    // The published .gz name first, then an uncompressed copy under the name without .gz.
    const names = [entry.file.name];
    if (entry.file.name.endsWith('.gz')) names.push(entry.file.name.slice(0, -3));
    let path: string | undefined;
    for (const name of names) {
      const candidate = join(location.dir, name);
      const s = await stat(candidate).catch(() => undefined);
      if (s?.isFile()) {
        path = candidate;
        break;
      }
    }
    if (path === undefined) missing.push(entry);
    else found.push({ ...entry, path });
  }
  const problem =
    missing.length === all.length
      ? `none of the ${all.length} files`
      : missing.length > 0
        ? `missing ${missing.map((m) => m.file.name).join(', ')}`
        : undefined;
  return { location, found, missing, problem };
}

function remedyFor(location: SearchLocation, descriptor: DatasetDescriptor): string {
  switch (location.kind) {
    case 'cache':
      return DEFAULT_REMEDY;
    case 'system':
      return descriptor.debianPackage && location.label.startsWith('Debian')
        ? `Reinstall it (sudo apt-get install --reinstall ${descriptor.debianPackage}).`
        : 'Replace it with a good copy.';
    default:
      return `Replace it with a good copy, or delete it so that Shardline downloads one into its cache.`;
  }
}

/** Reads, verifies and decodes the four files of a complete location. */
async function loadLocated(
  descriptor: DatasetDescriptor,
  probe: Probe,
  verify: boolean,
  alreadyDecoded: Map<string, Decoded>,
): Promise<{ train: ImageSet<Uint8Array>; test: ImageSet<Uint8Array>; verified: boolean }> {
  const remedy = remedyFor(probe.location, descriptor);
  // All four at once (gunzip runs on the thread pool), but errors reported in file order so the
  // same damage always gives the same message.
  const settled = await Promise.allSettled(
    probe.found.map(async (f) => {
      const ready = alreadyDecoded.get(f.file.name);
      if (ready) return { located: f, ...ready };
      const bytes = await readFile(f.path);
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      const { idx, verified } = await decodeChecked(
        descriptor,
        f.split,
        f.role,
        f.file,
        bytes,
        sha256,
        verify,
        { display: f.path, remedy },
      );
      return { located: f, idx, verified };
    }),
  );
  const rejected = settled.find((s) => s.status === 'rejected');
  if (rejected) throw rejected.reason;
  const results = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const get = (split: Split, role: Role) =>
    results.find((r) => r.located.split === split && r.located.role === role)!;
  const sets = (['train', 'test'] as const).map((split) =>
    toImageSet(descriptor, get(split, 'images'), get(split, 'labels'), remedy),
  );
  return { train: sets[0]!, test: sets[1]!, verified: results.every((r) => r.verified) };
}

function pinned(file: DatasetFile): boolean {
  return file.sha256.length > 0 || (file.contentSha256?.length ?? 0) > 0;
}

function expectedIdxBytes(descriptor: DatasetDescriptor, split: Split, role: Role): number {
  const { count } = descriptor[split];
  if (role === 'labels') return 8 + count;
  const { height, width, channels } = descriptor;
  return (channels === 1 ? 16 : 20) + count * height * width * channels;
}

/**
 * Checks a file's digest (when asked and pinned) and decodes it. The content digest is only
 * computed when the file's own digest is unknown, so a mirror or Debian copy costs one hash.
 */
async function decodeChecked(
  descriptor: DatasetDescriptor,
  split: Split,
  role: Role,
  file: DatasetFile,
  bytes: Uint8Array,
  sha256: string,
  verify: boolean,
  context: { display: string; remedy: string; download?: boolean },
): Promise<Decoded> {
  const expectedBytes = expectedIdxBytes(descriptor, split, role);
  const idx = await decodeIdx(bytes, {
    fileName: context.display,
    dimensions: role === 'labels' ? 1 : descriptor.channels === 1 ? 3 : 4,
    remedy: context.remedy,
    expectedBytes,
    // Generous, so a file with a different count still decodes and is reported as MISMATCH.
    maxBytes: 2 * expectedBytes + 1_048_576,
  });
  let verified = false;
  if (verify && pinned(file)) {
    if (file.sha256.includes(sha256)) {
      verified = true;
    } else {
      const headerBytes = 4 + 4 * idx.shape.length;
      const whole = new Uint8Array(
        idx.data.buffer,
        idx.data.byteOffset - headerBytes,
        idx.data.byteLength + headerBytes,
      );
      const contentSha = createHash('sha256').update(whole).digest('hex');
      if (!file.contentSha256?.includes(contentSha)) {
        const expected = file.sha256[0] ?? file.contentSha256?.[0] ?? '';
        throw new ShardlineError(
          'DATA_CORRUPT',
          `${context.display} is not the published ${descriptor.title} file: expected SHA-256 ${expected}${file.sha256.length + (file.contentSha256?.length ?? 0) > 1 ? ' (or another known copy)' : ''}, found ${sha256}. ${context.remedy}${context.download ? '' : ' If this is your own data in the same layout, pass verifyChecksums: false to use it anyway.'}`,
          {
            details: {
              file: context.display,
              expectedSha256: file.sha256,
              expectedContentSha256: file.contentSha256 ?? [],
              foundSha256: sha256,
              foundContentSha256: contentSha,
            },
          },
        );
      }
      verified = true;
    }
  }
  checkShape(descriptor, split, role, idx, context);
  return { idx, verified };
}

function checkShape(
  descriptor: DatasetDescriptor,
  split: Split,
  role: Role,
  idx: IdxArray,
  context: { display: string; remedy: string },
): void {
  const { count } = descriptor[split];
  const found = idx.shape[0] ?? 0;
  const what = role === 'images' ? 'images' : 'labels';
  if (found !== count) {
    throw new ShardlineError(
      'MISMATCH',
      `${context.display} holds ${formatCount(found)} ${what}: expected ${formatCount(count)}, the ${descriptor.title} ${split} split. ${context.remedy}`,
      { details: { file: context.display, expected: count, found } },
    );
  }
  if (role === 'images') {
    const { height, width, channels } = descriptor;
    const shape = idx.shape.slice(1);
    const want = channels === 1 ? [height, width] : [height, width, channels];
    if (shape.join('x') !== want.join('x')) {
      throw new ShardlineError(
        'MISMATCH',
        `${context.display} holds ${shape.join('x')} images: expected ${want.join('x')} for ${descriptor.title}. ${context.remedy}`,
        { details: { file: context.display, expected: want, found: shape } },
      );
    }
  }
}

function toImageSet(
  descriptor: DatasetDescriptor,
  images: { located: Located; idx: IdxArray },
  labels: { located: Located; idx: IdxArray },
  remedy: string,
): ImageSet<Uint8Array> {
  // Counts were each checked against the descriptor; this catches a descriptor-free mix-up
  // and keeps the invariant local.
  const count = images.idx.shape[0]!;
  if (labels.idx.shape[0] !== count) {
    throw new ShardlineError(
      'MISMATCH',
      `${images.located.path} and ${labels.located.path} disagree: ${formatCount(count)} images but ${formatCount(labels.idx.shape[0] ?? 0)} labels. ${remedy}`,
    );
  }
  const numClasses = descriptor.classNames.length;
  const labelData = labels.idx.data;
  for (let i = 0; i < labelData.length; i++) {
    if (labelData[i]! >= numClasses) {
      throw new ShardlineError(
        'DATA_CORRUPT',
        `${labels.located.path} has label ${labelData[i]} at index ${formatCount(i)}: expected 0 to ${numClasses - 1} (${descriptor.title} has ${numClasses} classes). ${remedy}`,
        { details: { file: labels.located.path, index: i, label: labelData[i] } },
      );
    }
  }
  return {
    images: images.idx.data,
    labels: labelData,
    count,
    height: descriptor.height,
    width: descriptor.width,
    channels: descriptor.channels,
    numClasses,
  };
}

/** The error for "no location has the files, and none could be fetched". */
function notAvailable(
  descriptor: DatasetDescriptor,
  probes: Probe[],
  cache: string,
  code: ShardlineErrorCode,
  why: string,
  extra: { cause?: unknown; attempts?: DownloadAttempt[] } = {},
): ShardlineError {
  const names = datasetFiles(descriptor).map((f) => f.file.name);
  const looked = probes
    .map((p) => `${p.location.dir} (${p.location.label}: ${p.problem ?? 'complete'})`)
    .join(', ');
  const fixes = [
    `run with --data-dir DIR or set SHARDLINE_DATA_DIR=DIR, where DIR holds ${names.join(', ')}`,
    ...(descriptor.debianPackage ? [`sudo apt-get install ${descriptor.debianPackage}`] : []),
    `copy the ${names.length} files into ${cache}`,
    ...(code === 'NOT_FOUND' && descriptor.mirrors.length > 0
      ? [`allow the download from ${descriptor.mirrors[0]}`]
      : []),
  ];
  // One line: CLIs print the message as their one-line reason.
  return new ShardlineError(
    code,
    `${descriptor.title} not found locally and ${why.replace(/\.$/, '')}. Looked in: ${looked}. To provide it: ${fixes.join('; or ')}.`,
    {
      ...(extra.cause === undefined ? {} : { cause: extra.cause }),
      details: {
        dataset: descriptor.name,
        looked: probes.map((p) => ({
          dir: p.location.dir,
          where: p.location.label,
          problem: p.problem,
        })),
        attempts: extra.attempts ?? [],
      },
    },
  );
}

function withSlash(url: string): string {
  return url.endsWith('/') ? url : `${url}/`;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Catches descriptor typos early, with a message that points at the field. */
function checkDescriptor(d: DatasetDescriptor): void {
  const problems: string[] = [];
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(d.name)) {
    problems.push(`name "${d.name}" must be lowercase letters, digits, ".", "_" or "-"`);
  }
  for (const [key, n] of [
    ['height', d.height],
    ['width', d.width],
    ['channels', d.channels],
  ] as const) {
    if (!Number.isInteger(n) || n < 1) problems.push(`${key} must be a positive integer`);
  }
  if (d.classNames.length < 1 || d.classNames.length > 256) {
    problems.push('classNames must have 1 to 256 entries (labels are bytes)');
  }
  for (const { split, role, file } of datasetFiles(d)) {
    if (!file.name || file.name.includes('/') || file.name.includes('\\')) {
      problems.push(`${split}.${role}.name must be a plain file name`);
    }
    for (const digest of [...file.sha256, ...(file.contentSha256 ?? [])]) {
      if (!SHA256_HEX.test(digest)) {
        problems.push(`${split}.${role} digest "${digest}" is not 64 lowercase hex digits`);
      }
    }
  }
  for (const split of ['train', 'test'] as const) {
    if (!Number.isInteger(d[split].count) || d[split].count < 0) {
      problems.push(`${split}.count must be a non-negative integer`);
    }
  }
  if (problems.length > 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Dataset descriptor "${d.name}" is invalid: ${problems.join('; ')}.`,
    );
  }
}
