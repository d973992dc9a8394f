import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join } from 'node:path';
import {
  formatCount,
  isShardlineError,
  type Logger,
  ShardlineError,
  silentLogger,
  toShardlineError,
} from '@shardline/core';
import * as tf from '@tensorflow/tfjs';
import { writeFilesAtomically } from './atomicWrite.js';
import { isPlainObject, sha256, withoutPeriod } from './internal.js';

/** Name of the topology and manifest file. */
export const MODEL_JSON_FILE = 'model.json';
/** Name of the weights file written by {@link saveModel}. */
export const WEIGHTS_FILE = 'weights.bin';
/** The `format` of a layers model in model.json. */
export const LAYERS_MODEL_FORMAT = 'layers-model';

/**
 * One group of the weights manifest in model.json. `sha256` is Shardline's addition (stock tfjs
 * ignores it): the digest of the group's files, concatenated, so a weights file that does not
 * belong to its model.json is caught on load.
 */
export interface WeightsManifestGroup {
  paths: string[];
  weights: tf.io.WeightsManifestEntry[];
  sha256?: string;
}

/** The content of model.json as {@link saveModel} writes it. */
export interface ModelJson {
  modelTopology: object;
  format: string;
  generatedBy: string | undefined;
  convertedBy: string | null;
  weightsManifest: WeightsManifestGroup[];
  trainingConfig?: tf.io.TrainingConfig;
  userDefinedMetadata?: Record<string, unknown>;
}

/** Options of {@link createFileSaveHandler}. */
export interface FileSaveHandlerOptions {
  /**
   * JSON-serialisable values to store in model.json's `userDefinedMetadata`, merged over the
   * model's own (`model.getUserDefinedMetadata()`); read back with `getUserDefinedMetadata()`.
   */
  metadata?: Record<string, unknown>;
  /** Receives a debug record per save. Default: silent. */
  logger?: Logger;
}

/** Options of {@link saveModel}. */
export interface SaveModelOptions extends FileSaveHandlerOptions {
  /** Also save the optimizer's state (compiled models only), as `model.save` does. Default false. */
  includeOptimizer?: boolean;
}

/** What {@link saveModel} wrote. */
export interface SavedModelInfo {
  readonly dir: string;
  readonly modelJsonPath: string;
  readonly weightsPath: string;
  /** Size of weights.bin. */
  readonly weightBytes: number;
  /** SHA-256 of weights.bin, hex; also in model.json's manifest. */
  readonly weightsSha256: string;
  /** What tfjs reports for a save (sizes, date). */
  readonly modelArtifactsInfo: tf.io.ModelArtifactsInfo;
}

/** Options of {@link createFileLoadHandler}. */
export interface FileLoadHandlerOptions {
  /** Receives a debug record per load. Default: silent. */
  logger?: Logger;
}

/** Options of {@link loadModel}. */
export interface LoadModelOptions extends FileLoadHandlerOptions {
  /**
   * Require the saved weights to match the model's exactly, none missing and none extra, as
   * `tf.loadLayersModel` does. Default true.
   */
  strict?: boolean;
}

async function writeArtifacts(
  dir: string,
  artifacts: tf.io.ModelArtifacts,
  options: FileSaveHandlerOptions,
): Promise<SavedModelInfo> {
  const { modelTopology } = artifacts;
  if (modelTopology === undefined || modelTopology instanceof ArrayBuffer) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Saving to ${dir} expects a layers model (topology as JSON); found ${
        modelTopology === undefined ? 'no topology' : 'a binary GraphDef topology'
      }. Save tf.LayersModel instances (tf.sequential, tf.model, createModel); graph models are read-only in tfjs.`,
    );
  }
  if (options.metadata !== undefined && !isPlainObject(options.metadata)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Option "metadata" must be a plain object of JSON values; found ${typeof options.metadata}. Wrap the value in an object.`,
    );
  }
  const weights =
    artifacts.weightData === undefined
      ? new Uint8Array(0)
      : new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData));
  const digest = sha256(weights);
  const userDefinedMetadata =
    artifacts.userDefinedMetadata !== undefined || options.metadata !== undefined
      ? { ...artifacts.userDefinedMetadata, ...options.metadata }
      : undefined;
  const modelJson: ModelJson = {
    modelTopology,
    format: artifacts.format ?? LAYERS_MODEL_FORMAT,
    generatedBy: artifacts.generatedBy,
    convertedBy: artifacts.convertedBy ?? null,
    weightsManifest: [
      { paths: [WEIGHTS_FILE], weights: artifacts.weightSpecs ?? [], sha256: digest },
    ],
    ...(artifacts.trainingConfig === undefined ? {} : { trainingConfig: artifacts.trainingConfig }),
    ...(userDefinedMetadata === undefined ? {} : { userDefinedMetadata }),
  };
  let text: string;
  try {
    text = JSON.stringify(modelJson);
  } catch (error) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The model's metadata for ${dir} must be JSON-serialisable; serialising failed: ${withoutPeriod(
        (error as Error).message,
      )}. Keep metadata to strings, numbers, booleans, arrays and plain objects.`,
      { cause: error },
    );
  }
  // weights.bin first, model.json last: model.json commits the save. A crash in between leaves
  // the new weights with the old model.json, which the sha256 in the manifest then catches.
  await writeFilesAtomically(dir, [
    { name: WEIGHTS_FILE, data: weights },
    { name: MODEL_JSON_FILE, data: text },
  ]);
  (options.logger ?? silentLogger).debug('model saved', {
    dir,
    weightBytes: weights.byteLength,
    sha256: digest,
  });
  return {
    dir,
    modelJsonPath: join(dir, MODEL_JSON_FILE),
    weightsPath: join(dir, WEIGHTS_FILE),
    weightBytes: weights.byteLength,
    weightsSha256: digest,
    modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts),
  };
}

/**
 * A tfjs save handler that writes `dir/model.json` and `dir/weights.bin` atomically (temporary
 * files in the same directory, fsync, rename), creating `dir` if needed.
 *
 * @example
 * ```ts
 * await model.save(createFileSaveHandler('./checkpoints/epoch-3'));
 * ```
 */
export function createFileSaveHandler(
  dir: string,
  options: FileSaveHandlerOptions = {},
): tf.io.IOHandler {
  return tf.io.withSaveHandler(async (artifacts) => {
    const info = await writeArtifacts(dir, artifacts, options);
    return { modelArtifactsInfo: info.modelArtifactsInfo };
  });
}

/**
 * Saves `model` to `dir` (created if needed) as model.json + weights.bin in the TensorFlow.js
 * layers format. The save is atomic: until it returns, `dir` holds the previous model, untouched;
 * a failed save leaves it there. One writer per directory at a time.
 *
 * @throws ShardlineError `INVALID_ARGUMENT` for metadata that is not JSON, or the file system's
 *   error (with the errno in `details`) when writing fails.
 * @example
 * ```ts
 * const info = await saveModel(model, './out/seed-cnn', { metadata: { epoch: 30 } });
 * console.log(`${info.weightBytes} bytes of weights in ${info.weightsPath}`);
 * ```
 */
export async function saveModel(
  model: tf.LayersModel,
  dir: string,
  options: SaveModelOptions = {},
): Promise<SavedModelInfo> {
  let info: SavedModelInfo | undefined;
  const handler = tf.io.withSaveHandler(async (artifacts) => {
    info = await writeArtifacts(dir, artifacts, options);
    return { modelArtifactsInfo: info.modelArtifactsInfo };
  });
  try {
    await model.save(handler, { includeOptimizer: options.includeOptimizer === true });
  } catch (error) {
    if (isShardlineError(error)) throw error;
    const cause = toShardlineError(error);
    throw new ShardlineError(
      cause.code,
      `Saving model "${model.name}" to ${dir} failed: ${withoutPeriod(cause.message)}. Nothing was written.`,
      { cause: error },
    );
  }
  if (info === undefined) {
    throw new ShardlineError(
      'INTERNAL',
      `Saving model "${model.name}" to ${dir} returned without writing anything.`,
    );
  }
  return info;
}

// Bytes per element of each dtype a weights file can hold; `string` has no fixed size.
const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8 };
const QUANTIZED_BYTES: Record<string, number> = { uint8: 1, uint16: 2, float16: 2 };

/** Bytes that `specs` occupy in a weights file, or undefined when a dtype has no fixed size. */
function expectedBytes(specs: readonly tf.io.WeightsManifestEntry[]): number | undefined {
  let total = 0;
  for (const spec of specs) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const perElement =
      spec.quantization?.dtype !== undefined
        ? QUANTIZED_BYTES[spec.quantization.dtype]
        : DTYPE_BYTES[spec.dtype];
    if (perElement === undefined) return undefined;
    total += size * perElement;
  }
  return total;
}

async function resolveLocation(path: string): Promise<{ dir: string; jsonName: string }> {
  let stats: Awaited<ReturnType<typeof stat>>;
  try {
    stats = await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new ShardlineError(
        'NOT_FOUND',
        `Model directory ${path} does not exist: expected a directory with ${MODEL_JSON_FILE} and ${WEIGHTS_FILE} ` +
          '(as saveModel writes). Check the path, or save a model there first.',
        { cause: error, details: { path } },
      );
    }
    throw toShardlineError(error);
  }
  if (stats.isDirectory()) return { dir: path, jsonName: MODEL_JSON_FILE };
  // Accept the path of model.json itself, as tfjs's file:// URLs name it.
  if (stats.isFile() && path.endsWith('.json'))
    return { dir: dirname(path), jsonName: basename(path) };
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `Expected a model directory (or its ${MODEL_JSON_FILE}); found a file, ${path}. Pass the directory saveModel wrote.`,
    { details: { path } },
  );
}

function corrupt(dir: string, jsonName: string, problem: string): ShardlineError {
  return new ShardlineError(
    'DATA_CORRUPT',
    `${jsonName} in ${dir} is not a TensorFlow.js layers model: ${problem}. ` +
      'Restore it from a backup or save the model again.',
    { details: { dir, file: jsonName } },
  );
}

function parseModelJson(dir: string, jsonName: string, text: string): ModelJson {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${jsonName} in ${dir} is not valid JSON (${withoutPeriod((error as Error).message)}; ${formatCount(
        text.length,
      )} characters): expected the TensorFlow.js layers format that saveModel writes. ` +
        'The file is damaged, perhaps by an interrupted copy; restore it or save the model again.',
      { cause: error, details: { dir, file: jsonName } },
    );
  }
  if (!isPlainObject(json))
    throw corrupt(
      dir,
      jsonName,
      `expected a JSON object, found ${Array.isArray(json) ? 'an array' : typeof json}`,
    );
  if (json.format !== undefined && json.format !== LAYERS_MODEL_FORMAT) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${jsonName} in ${dir} has format ${JSON.stringify(json.format)}; loadModel reads "${LAYERS_MODEL_FORMAT}". ` +
        (json.format === 'graph-model'
          ? 'Load graph models with tf.loadGraphModel instead.'
          : 'Convert it to a layers model first.'),
      { details: { dir, format: json.format } },
    );
  }
  if (!isPlainObject(json.modelTopology))
    throw corrupt(dir, jsonName, 'expected a "modelTopology" object, found none');
  const manifest = json.weightsManifest;
  if (!Array.isArray(manifest))
    throw corrupt(dir, jsonName, 'expected a "weightsManifest" array, found none');
  for (const [i, group] of manifest.entries()) {
    const ok =
      isPlainObject(group) &&
      Array.isArray(group.paths) &&
      group.paths.every((p) => typeof p === 'string') &&
      Array.isArray(group.weights) &&
      group.weights.every(
        (w) =>
          isPlainObject(w) &&
          typeof w.name === 'string' &&
          typeof w.dtype === 'string' &&
          Array.isArray(w.shape),
      );
    if (!ok) {
      throw corrupt(
        dir,
        jsonName,
        `weightsManifest[${i}] should be { paths: string[], weights: [{ name, dtype, shape }] }`,
      );
    }
  }
  return json as unknown as ModelJson;
}

async function readGroup(
  dir: string,
  jsonName: string,
  group: WeightsManifestGroup,
  index: number,
): Promise<Uint8Array> {
  const expected = expectedBytes(group.weights);
  const parts: Uint8Array[] = [];
  for (const path of group.paths) {
    // A manifest may only name files beside it; never read outside the model's directory.
    if (isAbsolute(path) || path.split(/[\\/]/).includes('..')) {
      throw corrupt(
        dir,
        jsonName,
        `weightsManifest[${index}] names ${JSON.stringify(path)}, outside the model's directory`,
      );
    }
    try {
      parts.push(await readFile(join(dir, path)));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw toShardlineError(error);
      throw new ShardlineError(
        'NOT_FOUND',
        `${path} is missing from ${dir}: ${jsonName}'s weightsManifest expects it${
          expected === undefined ? '' : ` (${formatCount(expected)} bytes of weights in all)`
        }. Copy it next to ${jsonName}, or save the model again.`,
        { cause: error, details: { dir, file: path, expectedBytes: expected } },
      );
    }
  }
  const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  const files = group.paths.join(' + ');
  if (expected !== undefined && bytes.byteLength !== expected) {
    const how = bytes.byteLength < expected ? 'truncated' : 'too long';
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${files} in ${dir} is ${how}: expected ${formatCount(expected)} bytes per ${jsonName}'s weightsManifest, ` +
        `found ${formatCount(bytes.byteLength)}. The weights do not belong to this ${jsonName} or were cut short; ` +
        'restore both files from the same save, or save the model again.',
      { details: { dir, file: files, expectedBytes: expected, foundBytes: bytes.byteLength } },
    );
  }
  if (typeof group.sha256 === 'string' && sha256(bytes) !== group.sha256) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${files} in ${dir} does not match ${jsonName}: expected SHA-256 ${group.sha256}, found ${sha256(bytes)}. ` +
        `The files come from different saves (an interrupted save, or a partial copy); restore both from the same save, or save the model again.`,
      { details: { dir, file: files } },
    );
  }
  return bytes;
}

/**
 * Reads a model directory into tfjs model artifacts, checking what can be checked before tfjs
 * sees it: the directory and files exist, model.json is JSON in the layers format, the weights
 * have exactly the size the manifest implies, and match the manifest's SHA-256 when it has one.
 */
async function readArtifacts(
  path: string,
  options: FileLoadHandlerOptions,
): Promise<tf.io.ModelArtifacts> {
  const { dir, jsonName } = await resolveLocation(path);
  let text: string;
  try {
    text = await readFile(join(dir, jsonName), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw toShardlineError(error);
    const present = (await readdir(dir).catch(() => [] as string[])).filter(
      (name) => !name.startsWith('.'),
    );
    const shown =
      present.length === 0
        ? 'it is empty'
        : `it holds ${present.slice(0, 10).join(', ')}${present.length > 10 ? ', ...' : ''}`;
    throw new ShardlineError(
      'NOT_FOUND',
      `${dir} has no ${jsonName}: expected ${MODEL_JSON_FILE} and ${WEIGHTS_FILE} as saveModel writes them; ${shown}. ` +
        'Point at the directory a model was saved to.',
      { cause: error, details: { dir, files: present.slice(0, 10) } },
    );
  }
  const json = parseModelJson(dir, jsonName, text);
  const groups = await Promise.all(
    json.weightsManifest.map((group, i) => readGroup(dir, jsonName, group, i)),
  );
  const weightData = Buffer.concat(groups);
  // A fresh ArrayBuffer: Node may hand out slices of a shared pool, which tfjs would read whole.
  const buffer = weightData.buffer.slice(
    weightData.byteOffset,
    weightData.byteOffset + weightData.byteLength,
  );
  const specs = json.weightsManifest.flatMap((group) => group.weights);
  (options.logger ?? silentLogger).debug('model files read', {
    dir,
    weightBytes: weightData.byteLength,
    weights: specs.length,
  });
  return tf.io.getModelArtifactsForJSONSync(json as unknown as tf.io.ModelJSON, specs, buffer);
}

/**
 * A tfjs load handler that reads `dir/model.json` and the weights files its manifest names
 * (`weights.bin` for models saved here). Also accepts the path of model.json itself.
 *
 * @example
 * ```ts
 * const model = await tf.loadLayersModel(createFileLoadHandler('./out/seed-cnn'));
 * ```
 */
export function createFileLoadHandler(
  dir: string,
  options: FileLoadHandlerOptions = {},
): tf.io.IOHandler {
  return { load: () => readArtifacts(dir, options) };
}

/**
 * Loads a model saved by {@link saveModel} (or by tfjs-node's `file://` handler, or by the
 * tfjs converter as a layers model). The model comes back compiled if it was saved compiled,
 * with the metadata saved with it in `getUserDefinedMetadata()`.
 *
 * @throws ShardlineError `NOT_FOUND` (no directory, no model.json, no weights file),
 *   `DATA_CORRUPT` (bad JSON, weights of the wrong size or from another save, a topology tfjs
 *   cannot build), `INVALID_ARGUMENT` (a graph model, or a file that is not model.json).
 * @example
 * ```ts
 * const model = await loadModel('./out/seed-cnn');
 * const probabilities = model.predict(images) as tf.Tensor;
 * ```
 */
export async function loadModel(
  dir: string,
  options: LoadModelOptions = {},
): Promise<tf.LayersModel> {
  try {
    return await tf.loadLayersModel(createFileLoadHandler(dir, options), {
      strict: options.strict ?? true,
    });
  } catch (error) {
    if (isShardlineError(error)) throw error;
    throw new ShardlineError(
      'DATA_CORRUPT',
      `The model in ${dir} could not be built: ${withoutPeriod((error as Error)?.message ?? String(error))}. ` +
        'If it uses custom layers, register them with tf.serialization.registerClass before loading; ' +
        'otherwise model.json and the weights do not fit together: save the model again.',
      { cause: error, details: { dir } },
    );
  }
}
