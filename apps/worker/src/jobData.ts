/**
 * The data of a job on a worker. A built-in dataset is loaded as before (its files from
 * --data-dir, the cache or /usr/share/datasets, else downloaded). An image folder is found, in
 * this order:
 *
 * 1. this worker's image-folder cache, by the job's fingerprint (a file written by an earlier
 *    run or fetch; its header and SHA-256 are checked);
 * 2. a copy of the folder: the coordinator's path on this machine, else `<data-dir>/<folder's
 *    name>`. It is decoded with the job's options and must give the job's fingerprint, or the
 *    worker is refused: training on other images than the coordinator's would be silently wrong;
 * 3. the coordinator, over the same connection (FetchDataset), into the cache, unless
 *    --no-fetch-data.
 */
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { formatCount, type Logger, ShardlineError } from '@shardline/core';
import {
  type ColorMode,
  type ImageSet,
  imageFolderCachePath,
  type LoadedImageFolder,
  loadDataset,
  loadImageFolder,
  readImageFolderCache,
  takeImages,
} from '@shardline/datasets';
import type { CoordinatorServiceClient, ImageFolderDataset, JobSpec } from '@shardline/protocol';
import { fetchDatasetFile } from './datasetFetch.js';

/** What a job trains on, on this worker. */
export interface WorkerJobData {
  readonly train: ImageSet;
  readonly test: ImageSet;
  readonly classNames: readonly string[];
  /** How it was obtained, for the log. */
  readonly from: 'builtin' | 'cache' | 'folder' | 'fetched';
}

/** Where a worker looks for data, and whether it may fetch it. */
export interface WorkerDataOptions {
  dataDir?: string;
  download: boolean;
  /** Fetch an image folder from the coordinator when there is no local copy. */
  fetchData: boolean;
  /** The image-folder cache folder (default: the user cache). */
  cacheDir?: string;
  signal?: AbortSignal;
}

/** Loads the data `job` names, or throws a ShardlineError that says what to do. */
export async function loadWorkerJobData(
  job: JobSpec,
  context: {
    client: CoordinatorServiceClient;
    workerId: string;
    options: WorkerDataOptions;
    log: Logger;
  },
): Promise<WorkerJobData> {
  const { options, log } = context;
  const limit = (set: ImageSet, n: number) => (n > 0 ? takeImages(set, n) : set);
  if (!job.dataset) {
    const data = await loadDataset(job.datasetName, {
      ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
      ...(job.limitTrain > 0 ? { limitTrain: job.limitTrain } : {}),
      ...(job.limitTest > 0 ? { limitTest: job.limitTest } : {}),
      download: options.download,
      progress: 'lines',
      logger: log,
    });
    return {
      train: data.train,
      test: data.test,
      classNames: data.descriptor.classNames,
      from: 'builtin',
    };
  }
  const { loaded, from } = await loadImageFolderDataset(job.dataset, context);
  checkAgainstJob(job.dataset, loaded);
  return {
    train: limit(loaded.train, job.limitTrain),
    test: limit(loaded.test, job.limitTest),
    classNames: loaded.classNames,
    from,
  };
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true;
}

async function loadImageFolderDataset(
  spec: ImageFolderDataset,
  context: {
    client: CoordinatorServiceClient;
    workerId: string;
    options: WorkerDataOptions;
    log: Logger;
  },
): Promise<{ loaded: LoadedImageFolder; from: WorkerJobData['from'] }> {
  const { options, log } = context;
  const cacheOptions = options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir };
  const cachePath = imageFolderCachePath(spec.fingerprint, cacheOptions);
  const cached = await readImageFolderCache(cachePath, spec.fingerprint, { logger: log });
  if (cached) {
    log.info('image folder read from the cache', { cache: cachePath });
    return { loaded: cached, from: 'cache' };
  }

  // An empty folder: sets built in code on the coordinator, which exist nowhere but its cache.
  const candidates =
    spec.folder === ''
      ? []
      : [
          spec.folder,
          ...(options.dataDir === undefined ? [] : [join(options.dataDir, basename(spec.folder))]),
        ];
  const what =
    spec.folder === ''
      ? 'the in-memory dataset of the coordinator'
      : `the image folder ${spec.folder}`;
  for (const folder of candidates) {
    if (!(await isDirectory(folder))) continue;
    const loaded = await loadImageFolder(folder, {
      ...(spec.imageHeight > 0
        ? { imageSize: { height: spec.imageHeight, width: spec.imageWidth } }
        : {}),
      ...(spec.colorMode === '' ? {} : { colorMode: spec.colorMode as ColorMode }),
      ...(spec.classNamesGiven.length > 0 ? { classNames: spec.classNamesGiven } : {}),
      ...(spec.validationSplit > 0 ? { validationSplit: spec.validationSplit } : {}),
      seed: spec.splitSeed,
      ...cacheOptions,
      progress: 'lines',
      logger: log,
    });
    if (loaded.fingerprint !== spec.fingerprint) {
      throw new ShardlineError(
        'MISMATCH',
        `The image folder ${folder} on this worker differs from the coordinator's ${spec.folder}: its files ` +
          `give fingerprint ${loaded.fingerprint.slice(0, 16)}..., the job's is ${spec.fingerprint.slice(0, 16)}... ` +
          '(files added, removed or changed). Make the two folders identical, or move this copy away so that ' +
          'the worker fetches the coordinator\u2019s.',
        { details: { folder, found: loaded.fingerprint, expected: spec.fingerprint } },
      );
    }
    log.info('image folder loaded from a local copy', { folder });
    return { loaded, from: 'folder' };
  }

  if (!options.fetchData) {
    throw new ShardlineError(
      'NOT_FOUND',
      `This job trains on ${what}, which this worker has neither in its cache ` +
        `(${cachePath})${candidates.length > 0 ? ` nor at ${candidates.join(' or ')}` : ''}, and --no-fetch-data forbids fetching it from the ` +
        'coordinator. Copy the folder there (or pass --data-dir <folder holding it>), or drop --no-fetch-data.',
      { details: { folder: spec.folder } },
    );
  }
  const total = Number(spec.cacheBytes);
  if (total === 0) {
    throw new ShardlineError(
      'NOT_FOUND',
      `This job trains on ${what}, which this worker has no copy of, and the ` +
        'coordinator could not cache it for sending. Copy the folder to this machine at the same path ' +
        '(or under --data-dir), or make the coordinator\u2019s image-folder cache writable.',
      { details: { folder: spec.folder } },
    );
  }
  log.info(`fetching the image folder from the coordinator (${formatCount(total)} bytes)`, {
    folder: spec.folder,
    cache: cachePath,
  });
  const fetched = await fetchDatasetFile(context.client, {
    workerId: context.workerId,
    fingerprint: spec.fingerprint,
    totalBytes: total,
    destination: cachePath,
    logger: log,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const loaded = await readImageFolderCache(fetched.path, spec.fingerprint, { logger: log });
  if (!loaded) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `The dataset fetched from the coordinator into ${fetched.path} is not a valid image-folder cache for ` +
        `fingerprint ${spec.fingerprint}. Delete it and restart the worker; if it happens again, run the same ` +
        'Shardline version on the coordinator and the worker.',
    );
  }
  if (fetched.resumedFrom.length > 0) {
    log.info('dataset fetch resumed after a broken connection', {
      resumed_from: fetched.resumedFrom.join(','),
    });
  }
  return { loaded, from: 'fetched' };
}

/** The decoded set must be what the coordinator described, whichever way it came. */
function checkAgainstJob(spec: ImageFolderDataset, loaded: LoadedImageFolder): void {
  const { train, test } = loaded;
  const same =
    train.height === spec.height &&
    train.width === spec.width &&
    train.channels === spec.channels &&
    train.count === spec.trainCount &&
    test.count === spec.testCount &&
    loaded.classNames.join('\n') === spec.classNames.join('\n');
  if (!same) {
    throw new ShardlineError(
      'MISMATCH',
      `The image folder decoded here is ${train.count} train / ${test.count} test images of ` +
        `${train.height}x${train.width}x${train.channels} in ${loaded.classNames.length} classes, but the job's is ` +
        `${spec.trainCount} / ${spec.testCount} of ${spec.height}x${spec.width}x${spec.channels} in ` +
        `${spec.classNames.length} classes. Run the same Shardline version on every machine.`,
    );
  }
}
