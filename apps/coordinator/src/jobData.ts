/**
 * The data of a job, resolved from `--dataset`: a built-in dataset by name (fashion-mnist,
 * mnist), or an image folder by path, decoded once into the image-folder cache. For a folder the
 * coordinator also knows what to tell workers (the job's ImageFolderDataset: the options, the
 * fingerprint, the shape) and which file to send a worker that has no copy (FetchDataset).
 */
import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { type Logger, ShardlineError, toShardlineError } from '@shardline/core';
import {
  cacheImageSets,
  type DatasetDescriptor,
  datasetNames,
  getDataset,
  type ImageSet,
  type LoadedImageFolder,
  loadDataset,
  loadImageFolder,
  type ProgressMode,
  takeImages,
} from '@shardline/datasets';
import type { ImageFolderDataset } from '@shardline/protocol';
import type { TrainConfig } from './trainConfig.js';

/** What a job trains on. */
export interface JobData {
  /** For logs and events: the built-in name, or the folder's name. */
  readonly label: string;
  /** Label i is classNames[i]. */
  readonly classNames: readonly string[];
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  /** Training and test images after --limit-train / --limit-test. */
  readonly trainCount: number;
  readonly testCount: number;
  /**
   * The images, when this process loaded them: always for an image folder and in-process
   * training; not for a built-in dataset in distributed mode, where only workers need them.
   */
  readonly splits?: { readonly train: ImageSet; readonly test: ImageSet };
  /** The test labels, for the per-class checks of evaluation reports, when known here. */
  readonly testLabels?: Uint8Array;
  /**
   * The test images (after --limit-test), when this process has them: `splits.test`, or a built-in
   * dataset's local copy in distributed mode. The dashboard shows misclassified ones from it.
   */
  readonly testSet?: ImageSet;
  /** Where a built-in dataset's files were found (`started` event), when loaded. */
  readonly location?: string;
  /** An image folder: what the job tells workers, and the decoded file FetchDataset sends. */
  readonly folder?: {
    readonly spec: ImageFolderDataset;
    readonly cachePath: string;
  };
}

/** Whether `--dataset` names a built-in dataset rather than a folder. */
export function isBuiltinDataset(dataset: string): boolean {
  return datasetNames.includes(dataset.trim().toLowerCase());
}

/** The image-folder options of `config` that are set, by flag, for messages. */
function folderFlagsGiven(config: TrainConfig): string[] {
  return [
    config.imageSize === undefined ? undefined : '--image-size',
    config.colorMode === undefined ? undefined : '--color-mode',
    config.validationSplit === undefined ? undefined : '--validation-split',
    config.classNames === undefined ? undefined : '--class-names',
  ].filter((flag) => flag !== undefined);
}

/**
 * Resolves and loads a job's data. `load: 'all'` loads a built-in dataset's images too (in-process
 * training); `'describe'` only describes it, and tries to read its test labels from a local copy
 * without downloading (the workers may be the only machines with the data).
 *
 * @throws ShardlineError `NOT_FOUND` for a value that is neither a built-in name nor a folder,
 *   `INVALID_ARGUMENT` for image-folder flags on a built-in dataset, and whatever the loaders
 *   throw for bad data (each message says what to change).
 */
export async function loadJobData(
  config: TrainConfig,
  options: {
    load: 'all' | 'describe';
    logger: Logger;
    progress?: ProgressMode;
    /** Sets built in code instead of `config.dataset` (the `train()` API). */
    sets?: InMemoryDataset;
  },
): Promise<JobData> {
  const { logger } = options;
  if (options.sets) return cacheInMemory(config, options.sets, logger);
  if (isBuiltinDataset(config.dataset)) {
    const given = folderFlagsGiven(config);
    if (given.length > 0) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${given.join(', ')} apply to image folders, but --dataset ${config.dataset} is a built-in dataset of fixed size and classes. ` +
          'Drop those flags, or pass the path of an image folder as --dataset.',
      );
    }
    return options.load === 'all'
      ? loadBuiltin(config, logger, options.progress)
      : describeBuiltin(config, logger);
  }
  return loadFolder(config, logger, options.progress);
}

/** Train and test sets built in code, with their class names (label i is classNames[i]). */
export interface InMemoryDataset {
  readonly train: ImageSet;
  readonly test: ImageSet;
  readonly classNames: readonly string[];
}

/**
 * In-memory sets are written to the image-folder cache, so that worker processes (which cannot
 * see this process's memory) read them from there on this machine, or fetch them elsewhere.
 */
async function cacheInMemory(
  config: TrainConfig,
  sets: InMemoryDataset,
  logger: Logger,
): Promise<JobData> {
  const cached = await cacheImageSets(sets, { logger });
  return describeDecoded(config, 'in-memory', '', cached, await fileSize(cached.cachePath));
}

/** The size of the cache file workers would fetch; 0 when it could not be written. */
function fileSize(path: string): Promise<number> {
  return stat(path).then(
    (s) => s.size,
    () => 0,
  );
}

function limited(set: ImageSet, limit: number): ImageSet {
  return limit > 0 ? takeImages(set, limit) : set;
}

function builtinOptions(config: TrainConfig) {
  return {
    ...(config.dataDir === undefined ? {} : { dataDir: config.dataDir }),
    ...(config.limitTrain > 0 ? { limitTrain: config.limitTrain } : {}),
    ...(config.limitTest > 0 ? { limitTest: config.limitTest } : {}),
  };
}

/** What a built-in dataset's descriptor says of the job's data. */
function describeDescriptor(
  d: DatasetDescriptor,
): Pick<JobData, 'label' | 'classNames' | 'height' | 'width' | 'channels'> {
  return {
    label: d.name,
    classNames: d.classNames,
    height: d.height,
    width: d.width,
    channels: d.channels,
  };
}

async function loadBuiltin(
  config: TrainConfig,
  logger: Logger,
  progress: ProgressMode | undefined,
): Promise<JobData> {
  const data = await loadDataset(config.dataset, {
    ...builtinOptions(config),
    download: config.download,
    logger,
    ...(progress === undefined ? {} : { progress }),
  });
  return {
    ...describeDescriptor(data.descriptor),
    trainCount: data.train.count,
    testCount: data.test.count,
    splits: { train: data.train, test: data.test },
    testLabels: data.test.labels,
    testSet: data.test,
    location: data.source.location.dir,
  };
}

async function describeBuiltin(config: TrainConfig, logger: Logger): Promise<JobData> {
  const d = getDataset(config.dataset);
  const count = (all: number, limit: number) => (limit > 0 ? Math.min(limit, all) : all);
  let testSet: ImageSet | undefined;
  try {
    // One training image: the rest is not copied and can be collected at once.
    const local = await loadDataset(config.dataset, {
      ...builtinOptions(config),
      limitTrain: 1,
      download: false,
    });
    // Kept whole (10,000 Fashion-MNIST images are 7.8 MB): the labels check evaluations, the
    // images are what the dashboard shows of the test images the model gets wrong.
    testSet = local.test;
  } catch (error) {
    logger.info('no local copy of the test labels: evaluations are checked by count only', {
      dataset: config.dataset,
      reason: toShardlineError(error).message,
    });
  }
  return {
    ...describeDescriptor(d),
    trainCount: count(d.train.count, config.limitTrain),
    testCount: count(d.test.count, config.limitTest),
    ...(testSet ? { testLabels: testSet.labels, testSet } : {}),
  };
}

async function loadFolder(
  config: TrainConfig,
  logger: Logger,
  progress: ProgressMode | undefined,
): Promise<JobData> {
  const folder = resolve(config.dataset);
  const info = await stat(folder).catch(() => undefined);
  if (!info?.isDirectory()) {
    throw new ShardlineError(
      'NOT_FOUND',
      `--dataset ${config.dataset} is neither a built-in dataset (${datasetNames.join(', ')}) nor ${
        info ? 'a folder (it is a file)' : 'an existing folder'
      }. Pass a built-in name, or the path of an image folder with one subfolder per class.`,
      { details: { dataset: config.dataset } },
    );
  }
  const loaded = await loadImageFolder(folder, {
    ...(config.imageSize === undefined ? {} : { imageSize: config.imageSize }),
    ...(config.colorMode === undefined ? {} : { colorMode: config.colorMode }),
    ...(config.classNames === undefined ? {} : { classNames: config.classNames }),
    ...(config.validationSplit === undefined ? {} : { validationSplit: config.validationSplit }),
    seed: config.seed,
    logger,
    ...(progress === undefined ? {} : { progress }),
  });
  const cacheBytes = await fileSize(loaded.cachePath);
  if (cacheBytes === 0) {
    logger.warn(
      'the decoded image folder could not be cached, so workers without a copy of the folder cannot fetch it',
      { cache: loaded.cachePath },
    );
  }
  return describeDecoded(config, basename(folder), folder, loaded, cacheBytes);
}

/** The JobData of a decoded set (a folder's, or in-memory sets cached as one). */
function describeDecoded(
  config: TrainConfig,
  label: string,
  folder: string,
  loaded: LoadedImageFolder,
  cacheBytes: number,
): JobData {
  const train = limited(loaded.train, config.limitTrain);
  const test = limited(loaded.test, config.limitTest);
  const { height, width, channels } = loaded.train;
  return {
    label,
    classNames: loaded.classNames,
    height,
    width,
    channels,
    trainCount: train.count,
    testCount: test.count,
    splits: { train, test },
    testLabels: test.labels,
    testSet: test,
    folder: {
      cachePath: loaded.cachePath,
      spec: {
        fingerprint: loaded.fingerprint,
        folder,
        imageHeight: config.imageSize?.height ?? 0,
        imageWidth: config.imageSize?.width ?? 0,
        colorMode: config.colorMode ?? '',
        classNamesGiven: [...(config.classNames ?? [])],
        validationSplit: config.validationSplit ?? 0,
        splitSeed: config.seed,
        height,
        width,
        channels,
        classNames: [...loaded.classNames],
        trainCount: loaded.train.count,
        testCount: loaded.test.count,
        cacheBytes: BigInt(cacheBytes),
      },
    },
  };
}
