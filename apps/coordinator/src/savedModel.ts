/**
 * The model a finished run leaves in `<out>/model` (model.json + weights.bin), read back with
 * the run metadata `train` stored in model.json's `userDefinedMetadata.run`: the class names,
 * the input the images were decoded to, the image folder and split it trained on, and the
 * plugins its custom layers need. `evaluate` and `predict` start here.
 *
 * The metadata is read from model.json before the model is built, so a missing plugin is named
 * with the flag that loads it instead of surfacing as tfjs's "Unknown layer" from deep inside
 * deserialisation.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ShardlineError, toShardlineError } from '@shardline/core';
import type { ColorMode } from '@shardline/datasets';
import {
  checkModelFitsData,
  type LoadedPlugin,
  loadModel,
  loadPlugin,
  MODEL_JSON_FILE,
} from '@shardline/models';
import * as tf from '@tensorflow/tfjs';

/** One plugin module a run's model needs, as `train` records it. */
export interface RunPlugin {
  /** The module's name, for messages. */
  name: string;
  /** Where the module was when the run trained. */
  path: string;
  /** Hex SHA-256 of the module's source: the identity that must match. */
  sha256: string;
}

/** What a run's images were decoded to before they reached the model. */
export interface RunInput {
  height: number;
  width: number;
  channels: 1 | 3;
  colorMode: ColorMode;
}

/** How `train` loaded an image folder, recorded so the same held-out images can be found again. */
export interface RunImageFolder {
  /** Absolute path of the folder. */
  folder: string;
  /** `LoadedImageFolder.fingerprint` at training time: it changes when any file does. */
  fingerprint: string;
  /** The options given to loadImageFolder; absent ones were left to its defaults. */
  imageSize?: { height: number; width: number };
  colorMode?: ColorMode;
  classNames?: string[];
  validationSplit?: number;
  seed: number;
}

/** model.json's `userDefinedMetadata.run`, as `train` writes it (runOutputs.ts). */
export interface RunMetadata {
  /** A built-in dataset's name, or the image folder's absolute path. */
  dataset?: string;
  /** Label i is `classNames[i]`. */
  classNames: string[];
  testAccuracy?: number;
  input?: RunInput;
  imageFolder?: RunImageFolder;
  plugins?: RunPlugin[];
}

/** Options of {@link readSavedModel}. */
export interface ReadSavedModelOptions {
  /** Plugin modules to load before the model (custom layers): `--plugin`. */
  plugins?: readonly string[];
  /**
   * Class names to use instead of the metadata's (`--class-names`): for models saved without
   * run metadata, or to rename classes.
   */
  classNames?: readonly string[];
}

/** A saved model, ready to evaluate or predict with. */
export interface SavedModel {
  /** The folder holding model.json. */
  dir: string;
  model: tf.LayersModel;
  /** The run metadata, validated; `classNames` replaced by the option when one was given. */
  run: RunMetadata;
  /** The image shape the model takes, and the colour mode images are decoded in. */
  input: RunInput;
  /** The plugins loaded for it (`--plugin`). */
  plugins: LoadedPlugin[];
}

/**
 * Reads a saved model and its run metadata: `path` may be the folder holding model.json, a
 * run's `--out` folder (its `model/` is used), or model.json itself. Plugins are loaded first,
 * and every plugin the run recorded must be among them (by SHA-256). Checks that the model is a
 * classifier with one softmax unit per class name.
 *
 * @throws ShardlineError `NOT_FOUND` (no such path, no model.json), `INVALID_ARGUMENT` (no run
 *   metadata and no `classNames`, a plugin missing, a layer class no plugin registered),
 *   `DATA_CORRUPT` (model.json or its metadata malformed), `MISMATCH` (class names and output
 *   units differ, metadata that does not describe this model).
 * @example
 * ```ts
 * const saved = await readSavedModel('runs/quick', { plugins: ['./scale-layer.mjs'] });
 * saved.run.classNames; // ['T-shirt/top', 'Trouser', ...]
 * saved.model.dispose();
 * ```
 */
export async function readSavedModel(
  path: string,
  options: ReadSavedModelOptions = {},
): Promise<SavedModel> {
  const jsonPath = await locateModelJson(path);
  const dir = dirname(jsonPath);
  const json = await readModelJson(jsonPath);
  const run = parseRunMetadata(jsonPath, json, options.classNames);

  const plugins: LoadedPlugin[] = [];
  for (const plugin of options.plugins ?? []) plugins.push(await loadPlugin(plugin));
  requireRecordedPlugins(jsonPath, run.plugins ?? [], plugins);
  requireRegisteredLayers(jsonPath, json.modelTopology, run.plugins ?? []);

  const model = await loadModel(jsonPath);
  try {
    const input = resolveInput(jsonPath, model, run.input);
    const units = model.outputs[0]?.shape.at(-1);
    if (typeof units === 'number' && units !== run.classNames.length) {
      throw new ShardlineError(
        'MISMATCH',
        `The model in ${dir} outputs ${units} class probabilities but ${run.classNames.length} class names were ${
          options.classNames === undefined
            ? `recorded in ${MODEL_JSON_FILE}`
            : 'given with --class-names'
        } (${run.classNames.join(', ')}): pass --class-names with ${units} names, in label order.`,
        { details: { units, classNames: run.classNames } },
      );
    }
    checkModelFitsData(model, { ...input, numClasses: run.classNames.length });
    return { dir, model, run, input, plugins };
  } catch (error) {
    model.dispose();
    throw error;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The model.json that `path` names: itself, inside it, or inside its `model/` (a run's --out). */
async function locateModelJson(path: string): Promise<string> {
  const absolute = resolve(path);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(absolute);
  } catch (error) {
    throw new ShardlineError(
      'NOT_FOUND',
      `--model ${path} does not exist: expected a saved model's folder (${MODEL_JSON_FILE} + weights.bin) or a run's --out folder. Check the path.`,
      { cause: error, details: { path: absolute } },
    );
  }
  if (info.isFile()) {
    if (absolute.endsWith('.json')) return absolute;
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `--model ${path} is a file, not a model: expected a saved model's folder (${MODEL_JSON_FILE} + weights.bin), its ${MODEL_JSON_FILE}, or a run's --out folder.`,
      { details: { path: absolute } },
    );
  }
  for (const candidate of [
    join(absolute, MODEL_JSON_FILE),
    join(absolute, 'model', MODEL_JSON_FILE),
  ]) {
    if (await exists(candidate)) return candidate;
  }
  const present = (await readdir(absolute).catch(() => [] as string[])).filter(
    (name) => !name.startsWith('.'),
  );
  throw new ShardlineError(
    'NOT_FOUND',
    `--model ${path} is not a model folder: expected ${MODEL_JSON_FILE} in it, or in its model/ (a run's --out folder); ${
      present.length === 0
        ? 'it is empty'
        : `it holds ${present.slice(0, 10).join(', ')}${present.length > 10 ? ', ...' : ''}`
    }. Pass the --out folder of a finished run, or the folder a model was saved to.`,
    { details: { path: absolute } },
  );
}

interface RawModelJson {
  modelTopology: unknown;
  userDefinedMetadata?: unknown;
}

async function readModelJson(jsonPath: string): Promise<RawModelJson> {
  let text: string;
  try {
    text = await readFile(jsonPath, 'utf8');
  } catch (error) {
    throw toShardlineError(error);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${jsonPath} is not valid JSON: expected the TensorFlow.js layers model a run saves. The file is damaged; restore it or train again.`,
      { cause: error, details: { path: jsonPath } },
    );
  }
  if (!isRecord(json)) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${jsonPath} is not a TensorFlow.js layers model: expected a JSON object. Restore it or train again.`,
      { details: { path: jsonPath } },
    );
  }
  return json as unknown as RawModelJson;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

function isPositiveInt(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

function isColorMode(value: unknown): value is ColorMode {
  return value === 'grayscale' || value === 'rgb';
}

/** Validates `userDefinedMetadata.run`; `classNames` (from --class-names) stands in for or replaces its class names. */
function parseRunMetadata(
  jsonPath: string,
  json: RawModelJson,
  classNames: readonly string[] | undefined,
): RunMetadata {
  const metadata = isRecord(json.userDefinedMetadata) ? json.userDefinedMetadata : {};
  const raw = metadata.run;
  const bad = (field: string, expected: string): ShardlineError =>
    new ShardlineError(
      'DATA_CORRUPT',
      `${jsonPath} has malformed Shardline run metadata: userDefinedMetadata.${field} should be ${expected}. The file was edited or damaged; restore it, or train again.`,
      { details: { path: jsonPath, field } },
    );
  if (raw !== undefined && !isRecord(raw)) throw bad('run', 'an object');
  const run = raw ?? {};
  let names: string[];
  if (classNames !== undefined) {
    names = [...classNames];
  } else if (isStringArray(run.classNames) && run.classNames.length > 0) {
    names = run.classNames;
  } else {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${jsonPath} has no Shardline run metadata (classNames), so the model's labels have no names: pass --class-names a,b,c with one name per output, in label order.`,
      { details: { path: jsonPath } },
    );
  }
  const out: RunMetadata = { classNames: names };
  if (run.dataset !== undefined) {
    if (typeof run.dataset !== 'string' || run.dataset === '') throw bad('run.dataset', 'a string');
    out.dataset = run.dataset;
  }
  if (run.testAccuracy !== undefined && run.testAccuracy !== null) {
    if (typeof run.testAccuracy !== 'number') throw bad('run.testAccuracy', 'a number');
    out.testAccuracy = run.testAccuracy;
  }
  if (run.input !== undefined) {
    const i = run.input;
    if (
      !isRecord(i) ||
      !isPositiveInt(i.height) ||
      !isPositiveInt(i.width) ||
      (i.channels !== 1 && i.channels !== 3) ||
      !isColorMode(i.colorMode) ||
      (i.colorMode === 'grayscale') !== (i.channels === 1)
    ) {
      throw bad(
        'run.input',
        "{ height, width, channels: 1 | 3, colorMode: 'grayscale' | 'rgb' } with 1 channel for grayscale and 3 for rgb",
      );
    }
    out.input = {
      height: i.height,
      width: i.width,
      channels: i.channels,
      colorMode: i.colorMode,
    };
  }
  if (run.imageFolder !== undefined) out.imageFolder = parseImageFolder(run.imageFolder, bad);
  if (run.plugins !== undefined) {
    const p = run.plugins;
    if (
      !Array.isArray(p) ||
      !p.every(
        (e) =>
          isRecord(e) &&
          typeof e.name === 'string' &&
          typeof e.path === 'string' &&
          typeof e.sha256 === 'string',
      )
    ) {
      throw bad('run.plugins', 'an array of { name, path, sha256 }');
    }
    out.plugins = p.map((e) => ({
      name: e.name as string,
      path: e.path as string,
      sha256: e.sha256 as string,
    }));
  }
  return out;
}

function parseImageFolder(
  raw: unknown,
  bad: (field: string, expected: string) => ShardlineError,
): RunImageFolder {
  if (!isRecord(raw) || typeof raw.folder !== 'string' || typeof raw.fingerprint !== 'string') {
    throw bad('run.imageFolder', '{ folder, fingerprint, seed, ... }');
  }
  const seed = raw.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) {
    throw bad('run.imageFolder.seed', 'an integer');
  }
  const folder: RunImageFolder = { folder: raw.folder, fingerprint: raw.fingerprint, seed };
  const size = raw.imageSize;
  if (size !== undefined) {
    if (!isRecord(size) || !isPositiveInt(size.height) || !isPositiveInt(size.width)) {
      throw bad('run.imageFolder.imageSize', '{ height, width }');
    }
    folder.imageSize = { height: size.height, width: size.width };
  }
  if (raw.colorMode !== undefined) {
    if (!isColorMode(raw.colorMode)) throw bad('run.imageFolder.colorMode', "'grayscale' or 'rgb'");
    folder.colorMode = raw.colorMode;
  }
  if (raw.classNames !== undefined) {
    if (!isStringArray(raw.classNames))
      throw bad('run.imageFolder.classNames', 'an array of strings');
    folder.classNames = raw.classNames;
  }
  if (raw.validationSplit !== undefined) {
    const f = raw.validationSplit;
    if (typeof f !== 'number' || !(f > 0 && f < 1)) {
      throw bad('run.imageFolder.validationSplit', 'a fraction between 0 and 1');
    }
    folder.validationSplit = f;
  }
  return folder;
}

/** Every plugin the run recorded must have been loaded: the same content, by SHA-256. */
function requireRecordedPlugins(
  jsonPath: string,
  recorded: readonly RunPlugin[],
  loaded: readonly LoadedPlugin[],
): void {
  const have = new Set(loaded.map((p) => p.sha256));
  const missing = recorded.filter((p) => !have.has(p.sha256));
  if (missing.length === 0) return;
  const first = missing[0]!;
  const byPath = loaded.find((p) => p.path === resolve(first.path));
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `The model in ${dirname(jsonPath)} needs the plugin ${missing.map((p) => `${p.name} (sha256 ${p.sha256.slice(0, 12)}...)`).join(', ')} for its custom layers, and ${
      byPath === undefined
        ? 'it was not loaded'
        : `${byPath.path} has different content (sha256 ${byPath.sha256.slice(0, 12)}...)`
    }: pass ${missing.map((p) => `--plugin ${p.path}`).join(' ')} with the module the run trained with.`,
    { details: { missing: missing.map((p) => p.sha256) } },
  );
}

/**
 * Refuses a topology whose layer classes tfjs does not know, naming them and --plugin: tfjs's own
 * error would surface as a damaged model. Walks every `layers` list, so nested models count.
 */
function requireRegisteredLayers(
  jsonPath: string,
  topology: unknown,
  recorded: readonly RunPlugin[],
): void {
  const known = tf.serialization.SerializationMap.getMap().classNameMap;
  const unknown = new Set<string>();
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const item of node) walk(item);
    } else if (isRecord(node)) {
      if (Array.isArray(node.layers)) {
        for (const layer of node.layers) {
          if (isRecord(layer) && typeof layer.class_name === 'string') {
            if (known[layer.class_name] === undefined) unknown.add(layer.class_name);
          }
        }
      }
      for (const value of Object.values(node)) walk(value);
    }
  };
  walk(topology);
  if (unknown.size === 0) return;
  const hint =
    recorded.length > 0
      ? `pass --plugin ${recorded.map((p) => p.path).join(' --plugin ')}`
      : 'pass --plugin <module> with the module that registers it (tf.serialization.registerClass)';
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `The model in ${dirname(jsonPath)} uses layer class${unknown.size > 1 ? 'es' : ''} ${[...unknown].join(', ')}, which no loaded plugin registered: ${hint}.`,
    { details: { path: jsonPath, classes: [...unknown] } },
  );
}

/** The model's input as images: its own shape, with the metadata filling dimensions it leaves open. */
function resolveInput(
  jsonPath: string,
  model: tf.LayersModel,
  recorded: RunInput | undefined,
): RunInput {
  const shape = model.inputs[0]?.shape.slice(1) ?? [];
  const dir = dirname(jsonPath);
  if (shape.length !== 3) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The model in ${dir} takes input of shape [${shape.map((d) => d ?? '?').join(', ')}] per sample: expected images, height x width x channels.`,
      { details: { path: jsonPath } },
    );
  }
  const [h, w, c] = shape as (number | null)[];
  const height = h ?? recorded?.height;
  const width = w ?? recorded?.width;
  const channels = c ?? recorded?.channels;
  if (height === undefined || width === undefined || channels === undefined) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The model in ${dir} takes images of any ${h === null ? 'height' : w === null ? 'width' : 'channel count'} and ${basename(jsonPath)} records no run input size, so there is no size to decode images to. Save the model from a Shardline run.`,
      { details: { path: jsonPath } },
    );
  }
  if (channels !== 1 && channels !== 3) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The model in ${dir} takes images with ${channels} channels: Shardline decodes images as grayscale (1) or rgb (3).`,
      { details: { path: jsonPath, channels } },
    );
  }
  if (
    recorded !== undefined &&
    (recorded.height !== height || recorded.width !== width || recorded.channels !== channels)
  ) {
    throw new ShardlineError(
      'MISMATCH',
      `${jsonPath}'s run metadata says the model takes ${recorded.height}x${recorded.width}x${recorded.channels} images, but the model takes ${height}x${width}x${channels}: the metadata does not belong to this model. Restore model.json from the run, or train again.`,
      { details: { path: jsonPath } },
    );
  }
  return {
    height,
    width,
    channels,
    colorMode: recorded?.colorMode ?? (channels === 1 ? 'grayscale' : 'rgb'),
  };
}
