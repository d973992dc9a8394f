/**
 * `shardline-coordinator evaluate`: a saved model's accuracy, loss, top-k, per-class scores and
 * confusion matrix on a test set, computed by the same `evaluateSlice` the trainer runs at each
 * epoch's end, so the numbers are comparable with the run's own `test_accuracy`.
 *
 * Which images are the test set:
 * - a built-in dataset (`fashion-mnist`, `mnist`): its test split;
 * - an image folder with `train/` and `test/`: `test/`;
 * - the run's own image folder: the images the run held out (its recorded validation split and
 *   seed, with the same loader options, so the decoded-image cache of the run is reused);
 * - another image folder: the held-out part of `validationSplit`/`seed` when given, else every
 *   image in it.
 */
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  type BackendPreference,
  hasErrorCode,
  type Logger,
  ShardlineError,
  selectBackend,
  silentLogger,
} from '@shardline/core';
import {
  concatImageSets,
  datasetNames,
  type ImageFolderOptions,
  type ImageSet,
  loadDataset,
  loadImageFolder,
  type ProgressOptions,
  takeImages,
} from '@shardline/datasets';
import { type ClassificationReport, createClassificationAccumulator } from '@shardline/metrics';
import { checkModelFitsData } from '@shardline/models';
import { evaluateSlice, evaluationTopK } from '@shardline/training';
import { readSavedModel, type SavedModel } from './savedModel.js';

/**
 * `train`'s default --seed: a folder evaluated with --validation-split and no --seed holds out
 * the same images `train --validation-split` held out with its default seed.
 */
export const DEFAULT_SPLIT_SEED = 42;

/** Images per forward pass when none is given: `train`'s --eval-batch-size default. */
export const DEFAULT_EVAL_BATCH_SIZE = 500;

/**
 * Options of {@link evaluateSavedModel}. The progress options go to the dataset loaders (a bar
 * while a folder is decoded or a dataset downloaded).
 */
export interface EvaluateOptions extends ProgressOptions {
  /** The saved model's folder, its model.json, or the run's --out folder. */
  model: string;
  /** A built-in dataset's name or an image folder's path. Default: the one the run trained on. */
  dataset?: string;
  /** Where a built-in dataset's files are (else SHARDLINE_DATA_DIR, the cache, /usr/share/datasets). */
  dataDir?: string;
  /** Download a built-in dataset that is nowhere local. Default true. */
  download?: boolean;
  /** Plugin modules for custom layers. */
  plugins?: readonly string[];
  /** Class names, when model.json has none (or to rename them). */
  classNames?: readonly string[];
  /** Images per forward pass. Default {@link DEFAULT_EVAL_BATCH_SIZE}. */
  batchSize?: number;
  /** Evaluate only the first N test images (0 or absent: all). */
  limitTest?: number;
  /** For an image folder without train/ and test/: the held-out fraction to evaluate. */
  validationSplit?: number;
  /** Seed of `validationSplit`. Default {@link DEFAULT_SPLIT_SEED}. */
  seed?: number;
  /** Compute backend to select first; absent: whatever TensorFlow.js uses now. */
  backend?: BackendPreference;
  /** Environment for SHARDLINE_DATA_DIR and the cache locations (XDG_CACHE_HOME, HOME). Default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Progress and warnings. Default: silent. */
  logger?: Logger;
}

/** What {@link evaluateSavedModel} found. */
export interface EvaluationResult {
  /** The folder the model was read from. */
  model: string;
  /** The dataset evaluated: a built-in name or the image folder's absolute path. */
  dataset: string;
  /** Which images of it, in words ("test split", "held-out 20% (seed 42)", ...). */
  split: string;
  /** The backend chosen, when `backend` was given. */
  backend?: string;
  report: ClassificationReport;
}

/**
 * Evaluates a saved model on a test set (see the module comment for which images) and returns
 * the full classification report. The model is disposed before it returns.
 *
 * @throws ShardlineError from reading the model ({@link readSavedModel}) or the data, and
 *   `MISMATCH` when the data's images or classes do not fit the model, `INVALID_ARGUMENT` for
 *   options that do not apply to the dataset.
 * @example
 * ```ts
 * const { report } = await evaluateSavedModel({ model: 'runs/quick', limitTest: 1000 });
 * console.log(formatClassificationReport(report));
 * ```
 */
export async function evaluateSavedModel(options: EvaluateOptions): Promise<EvaluationResult> {
  checkOptions(options);
  const logger = options.logger ?? silentLogger;
  const selection =
    options.backend === undefined ? undefined : await selectBackend(options.backend, { logger });
  const saved = await readSavedModel(options.model, {
    ...(options.plugins === undefined ? {} : { plugins: options.plugins }),
    ...(options.classNames === undefined ? {} : { classNames: options.classNames }),
  });
  try {
    const dataset = options.dataset ?? saved.run.dataset;
    if (dataset === undefined) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${join(saved.dir, 'model.json')} does not record the dataset the model trained on: pass --dataset <name|folder>.`,
      );
    }
    const data = isBuiltin(dataset)
      ? await loadBuiltin(dataset, saved, options, logger)
      : await loadFolder(dataset, saved, options, logger);
    const test =
      options.limitTest !== undefined && options.limitTest > 0
        ? takeImages(data.test, options.limitTest)
        : data.test;
    checkFits(saved, data.name, test, data.classNames);
    if (test.count === 0) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${data.name} (${data.split}) has no images to evaluate.`,
      );
    }
    const state = await evaluateSlice(
      saved.model,
      test,
      { start: 0, end: test.count },
      data.classNames,
      options.batchSize ?? DEFAULT_EVAL_BATCH_SIZE,
    );
    // evaluateSlice returns a mergeable state (a worker's reply); an accumulator turns it into the report.
    const accumulator = createClassificationAccumulator({
      numClasses: data.classNames.length,
      classNames: data.classNames,
      topK: evaluationTopK(data.classNames.length),
    });
    accumulator.merge(state);
    return {
      model: saved.dir,
      dataset: data.name,
      split: data.split,
      ...(selection === undefined ? {} : { backend: selection.backend }),
      report: accumulator.result(),
    };
  } finally {
    saved.model.dispose();
  }
}

function checkOptions(options: EvaluateOptions): void {
  const positive = (name: string, value: number | undefined, min: number) => {
    if (value !== undefined && (!Number.isSafeInteger(value) || value < min)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${name} must be a whole number of at least ${min}: found ${String(value)}.`,
      );
    }
  };
  positive('batchSize', options.batchSize, 1);
  positive('limitTest', options.limitTest, 0);
  positive('seed', options.seed, 0);
  if (options.seed !== undefined && options.validationSplit === undefined) {
    // Alone it would choose nothing: the split is the test/ folder, the run's own, or none.
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `--seed ${options.seed} chooses the held-out images of --validation-split, which was not given: pass --validation-split too, or drop --seed.`,
    );
  }
}

function progressOptions(options: EvaluateOptions): ProgressOptions {
  return {
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    ...(options.progress === undefined ? {} : { progress: options.progress }),
    ...(options.progressStream === undefined ? {} : { progressStream: options.progressStream }),
  };
}

function isBuiltin(dataset: string): boolean {
  return datasetNames.includes(dataset.trim().toLowerCase());
}

interface TestData {
  /** The built-in name or the folder's absolute path. */
  name: string;
  split: string;
  test: ImageSet;
  /** Label i of `test` is `classNames[i]`. */
  classNames: readonly string[];
}

async function loadBuiltin(
  name: string,
  saved: SavedModel,
  options: EvaluateOptions,
  logger: Logger,
): Promise<TestData> {
  if (options.validationSplit !== undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `--validation-split applies to image folders; ${name} has its own test split, which evaluate uses. Drop --validation-split.`,
    );
  }
  const data = await loadDataset(name, {
    ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
    ...(options.download === undefined ? {} : { download: options.download }),
    ...(options.env === undefined ? {} : { env: options.env }),
    ...progressOptions(options),
    ...(options.limitTest !== undefined && options.limitTest > 0
      ? { limitTest: options.limitTest }
      : {}),
    logger,
  });
  const classNames = data.descriptor.classNames;
  const recorded = saved.run.classNames;
  if (classNames.length === recorded.length && classNames.some((c, i) => c !== recorded[i])) {
    // Same count, other names: the labels still line up by index, but the scores may be meaningless.
    logger.warn(
      `the model's classes (${recorded.join(', ')}) are not ${data.descriptor.title}'s (${classNames.join(', ')}); scoring label i against output i anyway`,
    );
  }
  return { name: data.descriptor.name, split: 'test split', test: data.test, classNames };
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

async function subfolders(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name);
}

/**
 * Checks, before decoding anything, that the folder has a subfolder for every class of the
 * model, so the message can say what evaluate needs rather than what loadImageFolder's
 * `classNames` option needs. Extra folders are left out, with a warning.
 */
async function requireClassFolders(
  root: string,
  splitDirs: readonly string[],
  classNames: readonly string[],
  logger: Logger,
): Promise<void> {
  for (const dir of splitDirs) {
    const found = await subfolders(dir);
    const missing = classNames.filter((c) => !found.includes(c));
    if (missing.length > 0) {
      throw new ShardlineError(
        'NOT_FOUND',
        `${dir} has no folder for class${missing.length > 1 ? 'es' : ''} ${missing.join(', ')} of the model: the model's classes are ${classNames.join(', ')} (label i is the i-th) and the folder has ${found.length > 0 ? found.join(', ') : 'no class folders'}. ` +
          "Evaluate on a folder with one subfolder per class of the model, named as in training (or pass --class-names to rename the model's classes).",
        { details: { folder: root, missing, found } },
      );
    }
    const extra = found.filter((f) => !classNames.includes(f));
    if (extra.length > 0) {
      logger.warn(
        `leaving out ${join(dir, '')}{${extra.join(',')}}: the model has no class of that name`,
        { folders: extra },
      );
    }
  }
}

async function loadFolder(
  dataset: string,
  saved: SavedModel,
  options: EvaluateOptions,
  logger: Logger,
): Promise<TestData> {
  const root = resolve(dataset);
  if (!(await isDirectory(root))) {
    throw new ShardlineError(
      'NOT_FOUND',
      `--dataset ${dataset} is neither a built-in dataset (${datasetNames.join(', ')}) nor a folder: expected an image folder with one subfolder per class. Check the path.`,
      { details: { dataset } },
    );
  }
  if (options.dataDir !== undefined) {
    logger.warn(
      `--data-dir is ignored: it locates built-in datasets, and ${root} is an image folder`,
    );
  }
  const { run, input } = saved;
  const top = await subfolders(root);
  const splitFolders = top.includes('train') && top.includes('test');
  const common: ImageFolderOptions = {
    logger,
    ...(options.env === undefined ? {} : { env: options.env }),
    ...progressOptions(options),
  };
  const own = run.imageFolder;
  const isOwnFolder =
    own !== undefined && resolve(own.folder) === root && options.validationSplit === undefined;

  if (isOwnFolder && !splitFolders && own.validationSplit !== undefined) {
    // The run's own folder: load it exactly as train did, so the held-out images are the same
    // ones and the fingerprint tells whether the folder changed since.
    // The fingerprint covers the resolved class list, not whether it was given, so passing the
    // model's classes keeps it comparable and stops a class folder added since from shifting labels.
    await requireClassFolders(root, [root], run.classNames, logger);
    const loaded = await loadImageFolder(root, {
      ...common,
      ...(own.imageSize === undefined ? {} : { imageSize: own.imageSize }),
      ...(own.colorMode === undefined ? {} : { colorMode: own.colorMode }),
      classNames: run.classNames,
      validationSplit: own.validationSplit,
      seed: own.seed,
    });
    if (loaded.fingerprint !== own.fingerprint) {
      logger.warn(
        `${root} changed since the run trained on it (its fingerprint differs): the held-out images may now include images the model trained on`,
      );
    }
    return {
      name: root,
      split: `the run's held-out ${percent(own.validationSplit)} (seed ${own.seed})`,
      test: loaded.test,
      classNames: loaded.classNames,
    };
  }

  const loaderOptions: ImageFolderOptions = {
    ...common,
    // The model's size and colour, and its classes in its order, so label i is output i.
    imageSize: { height: input.height, width: input.width },
    colorMode: input.colorMode,
    classNames: run.classNames,
  };
  if (splitFolders) {
    await requireClassFolders(
      root,
      [join(root, 'train'), join(root, 'test')],
      run.classNames,
      logger,
    );
    const loaded = await loadImageFolder(root, {
      ...loaderOptions,
      ...(options.validationSplit === undefined
        ? {}
        : { validationSplit: options.validationSplit }),
    });
    return { name: root, split: 'test/', test: loaded.test, classNames: loaded.classNames };
  }
  await requireClassFolders(root, [root], run.classNames, logger);
  if (options.validationSplit !== undefined) {
    const seed = options.seed ?? DEFAULT_SPLIT_SEED;
    const loaded = await loadImageFolder(root, {
      ...loaderOptions,
      validationSplit: options.validationSplit,
      seed,
    });
    return {
      name: root,
      split: `held-out ${percent(options.validationSplit)} (seed ${seed})`,
      test: loaded.test,
      classNames: loaded.classNames,
    };
  }
  // No split asked for: every image. loadImageFolder always splits, and its two parts of any
  // split are together every readable image; 0.5 holds out at least one image of every class
  // with two or more, which the loader requires of some class.
  const loaded = await loadImageFolder(root, { ...loaderOptions, validationSplit: 0.5, seed: 0 });
  return {
    name: root,
    split: 'every image',
    // Paged sets (larger than the memory budget) are joined as a view, nothing copied.
    test: concatImageSets(loaded.train, loaded.test),
    classNames: loaded.classNames,
  };
}

function percent(fraction: number): string {
  return `${Number((fraction * 100).toFixed(2))}%`;
}

/** checkModelFitsData, with a message about evaluating rather than training when it fails. */
function checkFits(
  saved: SavedModel,
  dataset: string,
  test: ImageSet,
  classNames: readonly string[],
): void {
  const data = {
    height: test.height,
    width: test.width,
    channels: test.channels,
    numClasses: classNames.length,
  };
  try {
    checkModelFitsData(saved.model, data);
  } catch (error) {
    if (!hasErrorCode(error, 'MISMATCH')) throw error;
    const { input } = saved;
    throw new ShardlineError(
      'MISMATCH',
      `The model in ${saved.dir} takes ${input.height}x${input.width}x${input.channels} images with ${saved.run.classNames.length} classes, but ${dataset} has ${data.height}x${data.width}x${data.channels} images with ${data.numClasses} classes: evaluate it on data like the data it trained on${
        saved.run.dataset === undefined ? '' : ` (${saved.run.dataset})`
      }, or on an image folder (resized to the model's input).`,
      { cause: error, details: { model: [input.height, input.width, input.channels], data } },
    );
  }
}
