import { readFile, stat } from 'node:fs/promises';
import { extname, join, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isShardlineError, type Logger, ShardlineError, silentLogger } from '@shardline/core';
import * as tf from '@tensorflow/tfjs';
import { deriveSeed, randomSeed } from './buildContext.js';
import {
  checkSeed,
  type HyperparameterInput,
  type HyperparameterValue,
  parseHyperparameterInputs,
  showValue,
  withDataShape,
} from './hyperparameters.js';
import { invalid, isPlainObject, sha256, withoutPeriod } from './internal.js';
import { LAYERS_MODEL_FORMAT, loadModel, MODEL_JSON_FILE } from './io.js';
import { createModelRegistry, getModelProvenance, type ModelSpec } from './registry.js';

/** Options of {@link loadModelFile}. */
export interface LoadModelFileOptions {
  /**
   * Seed for the initial weights of a model built from scratch (a model.json without weights,
   * or an ES module spec): the same seed gives the same weights in every process. Ignored when
   * model.json has weights. Default: a random seed, returned in {@link LoadedModelFile.seed}.
   */
  seed?: number;
  /**
   * Hyperparameters of an ES module spec, checked against its declarations like the built-ins'.
   * Strings are parsed by the declared type: `"64"`, `"0.5"`, and lists as `"32,32,3"`,
   * `"[32, 32, 3]"` or `"32x32x3"`. A model.json takes none.
   */
  hyperparameters?: Readonly<Record<string, HyperparameterInput>>;
  /**
   * The data the model will train on. An ES module spec that declares `inputShape` or
   * `numClasses` hyperparameters gets them from here unless `hyperparameters` gives them, as the
   * built-in models do. Ignored for a model.json, whose input is fixed by its topology.
   */
  dataShape?: DataShape;
  /** Receives a debug record per load. Default: silent. */
  logger?: Logger;
}

/** What {@link loadModelFile} loaded. */
export interface LoadedModelFile {
  /** The model, uncompiled unless model.json carried a training config. */
  readonly model: tf.LayersModel;
  /** `layers-model` for a model.json, `module` for an ES module spec. */
  readonly kind: 'layers-model' | 'module';
  /** Absolute path of the file read (model.json itself when given its directory). */
  readonly path: string;
  /** SHA-256 (hex) of that file: the topology or the module source, not the weights. */
  readonly sha256: string;
  /** `file`: weights read from the manifest's files; `seeded`: drawn from `seed`. */
  readonly weights: 'file' | 'seeded';
  /** The seed of the initial weights when `weights` is `seeded`; undefined otherwise. */
  readonly seed: number | undefined;
  /** For a module: its name and every hyperparameter, defaults included. */
  readonly spec?: { readonly name: string; readonly description: string };
  readonly hyperparameters?: Readonly<Record<string, HyperparameterValue>>;
}

/** What a module spec's default export may be: a spec, or a function of tfjs that returns one. */
export type ModelSpecModuleExport = ModelSpec | ((tfjs: typeof tf) => ModelSpec);

/** Shape of the data a model must fit, as {@link checkModelFitsData} takes it. */
export interface DataShape {
  /** Image height in pixels. */
  readonly height: number;
  /** Image width in pixels. */
  readonly width: number;
  /** Channels per pixel: 1 grayscale, 3 RGB. */
  readonly channels: number;
  /** Number of classes (labels 0 .. numClasses - 1). */
  readonly numClasses: number;
}

/** What {@link loadPlugin} imported. */
export interface LoadedPlugin {
  /** Absolute path of the module. */
  readonly path: string;
  /** SHA-256 (hex) of the module's source: the name a job gives the plugin. */
  readonly sha256: string;
  /**
   * Classes the import added to tfjs's serialisation map (what `registerClass` registered). Empty
   * on a second load of the same content, which imports nothing again.
   */
  readonly registeredClasses: readonly string[];
}

// Initialisers that draw random numbers and take a `seed` in their config (tfjs-layers 4.x).
const SEEDED_INITIALIZERS = new Set([
  'RandomNormal',
  'RandomUniform',
  'TruncatedNormal',
  'VarianceScaling',
  'GlorotNormal',
  'GlorotUniform',
  'HeNormal',
  'HeUniform',
  'LeCunNormal',
  'LeCunUniform',
  'Orthogonal',
]);

const MODULE_EXTENSIONS = new Set(['.mjs', '.js']);

/**
 * Whether a `--model` value names a file rather than a registered model: it has a path
 * separator, starts with `.`, or ends in `.json`, `.mjs` or `.js`. Registry names are plain
 * words such as `seed-cnn`, so the two never collide.
 *
 * @example
 * ```ts
 * isModelFilePath('seed-cnn'); // false
 * isModelFilePath('./my-cnn/model.json'); // true
 * ```
 */
export function isModelFilePath(value: string): boolean {
  return (
    value.includes('/') ||
    value.includes(sep) ||
    value.startsWith('.') ||
    ['.json', ...MODULE_EXTENSIONS].includes(extname(value).toLowerCase())
  );
}

async function readSource(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new ShardlineError('NOT_FOUND', `${what} ${path} does not exist. Check the path.`, {
        cause: error,
        details: { path },
      });
    }
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${what} ${path} could not be read: ${withoutPeriod((error as Error).message)}. Check the path and its permissions.`,
      { cause: error, details: { path } },
    );
  }
}

/** The file to read for `path`: model.json inside a directory, else the path itself. */
async function locate(path: string): Promise<string> {
  const absolute = resolve(path);
  try {
    if ((await stat(absolute)).isDirectory()) return join(absolute, MODEL_JSON_FILE);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new ShardlineError(
        'NOT_FOUND',
        `Model file ${path} does not exist: expected a TensorFlow.js layers model.json (or its directory) ` +
          'or an ES module (.mjs, .js) whose default export is a model spec. Check the path.',
        { cause: error, details: { path } },
      );
    }
    throw error;
  }
  return absolute;
}

/**
 * Sets the `seed` of every random initialiser in a Keras-style topology, in document order (layer
 * by layer, each layer's initialisers in the order its config lists them), to
 * `deriveSeed(seed, k)` for the k-th. Returns how many it set.
 */
function seedInitializers(node: unknown, seed: number, counter = { next: 0 }): number {
  if (Array.isArray(node)) {
    for (const item of node) seedInitializers(item, seed, counter);
  } else if (isPlainObject(node)) {
    const className = node.class_name;
    if (typeof className === 'string' && SEEDED_INITIALIZERS.has(className)) {
      const config = isPlainObject(node.config) ? node.config : {};
      config.seed = deriveSeed(seed, counter.next++);
      node.config = config;
    } else {
      for (const value of Object.values(node)) seedInitializers(value, seed, counter);
    }
  }
  return counter.next;
}

/** Turns what tfjs throws while building a topology into a message that says what to do. */
function buildError(path: string, error: unknown): ShardlineError {
  if (isShardlineError(error)) {
    const inner = error.cause instanceof Error ? error.cause : undefined;
    if (inner === undefined || !/Unknown layer/.test(inner.message)) return error;
    error = inner;
  }
  const message = error instanceof Error ? error.message : showValue(error);
  const unknown = /Unknown layer: (\w+)/.exec(message)?.[1];
  if (unknown === 'Lambda') {
    return new ShardlineError(
      'INVALID_ARGUMENT',
      `The model in ${path} uses a Lambda layer: its Python code cannot be saved in model.json, so TensorFlow.js ` +
        'cannot build or train it. Replace the Lambda with built-in layers, or with a custom layer class ' +
        'registered by a plugin (loadPlugin), and convert the model again.',
      { cause: error, details: { path, layer: unknown } },
    );
  }
  if (unknown !== undefined) {
    return new ShardlineError(
      'INVALID_ARGUMENT',
      `The model in ${path} uses layer class "${unknown}", which TensorFlow.js does not know. If it is a custom ` +
        'layer, load the plugin that registers it (loadPlugin, tf.serialization.registerClass) before the model.',
      { cause: error, details: { path, layer: unknown } },
    );
  }
  return new ShardlineError(
    'INVALID_ARGUMENT',
    `The model in ${path} could not be built: ${withoutPeriod(message)}. Check the topology in model.json ` +
      '(input shape, layer configs) or export the model again.',
    { cause: error, details: { path } },
  );
}

async function loadLayersFile(
  path: string,
  bytes: Buffer,
  options: LoadModelFileOptions,
): Promise<LoadedModelFile> {
  const logger = options.logger ?? silentLogger;
  const digest = sha256(bytes);
  if (options.hyperparameters !== undefined && Object.keys(options.hyperparameters).length > 0) {
    throw invalid(
      `${path} is a model.json, which has no hyperparameters; found ${Object.keys(
        options.hyperparameters,
      )
        .map((k) => `"${k}"`)
        .join(
          ', ',
        )}. Drop them (--hp is for ES module specs), or change the topology in model.json.`,
      { path },
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${path} is not valid JSON (${withoutPeriod((error as Error).message)}): expected a TensorFlow.js layers model.json. ` +
        'Export it again (tensorflowjs_converter --input_format keras, or saveModel).',
      { cause: error, details: { path } },
    );
  }
  if (!isPlainObject(json)) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${path} is not a TensorFlow.js model.json: expected a JSON object, found ${showValue(json).slice(0, 40)}.`,
      { details: { path } },
    );
  }
  if (json.format === 'graph-model') {
    throw invalid(
      `${path} is a TensorFlow.js graph model: a frozen inference graph, which cannot be trained. ` +
        'Convert the Keras model to a layers model instead (tensorflowjs_converter --input_format keras model.h5 out/).',
      { path, format: json.format },
    );
  }
  if (json.format !== undefined && json.format !== LAYERS_MODEL_FORMAT) {
    throw invalid(
      `${path} has format ${showValue(json.format)}; expected "${LAYERS_MODEL_FORMAT}". Convert the model to a ` +
        'TensorFlow.js layers model (tensorflowjs_converter --input_format keras).',
      { path, format: json.format },
    );
  }
  if (!isPlainObject(json.modelTopology)) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${path} is not a TensorFlow.js layers model: expected a "modelTopology" object, found ${
        json.modelTopology === undefined ? 'none' : showValue(json.modelTopology).slice(0, 40)
      }. Export it again (tensorflowjs_converter --input_format keras, or saveModel).`,
      { details: { path } },
    );
  }
  const manifest = json.weightsManifest;
  const hasWeights =
    Array.isArray(manifest) &&
    manifest.some(
      (group) => isPlainObject(group) && Array.isArray(group.weights) && group.weights.length > 0,
    );

  if (hasWeights) {
    let model: tf.LayersModel;
    try {
      model = await loadModel(path, { logger });
    } catch (error) {
      throw buildError(path, error);
    }
    logger.debug('model file loaded with weights', { path, sha256: digest });
    return { model, kind: 'layers-model', path, sha256: digest, weights: 'file', seed: undefined };
  }

  const seed = checkSeed(options.seed) ?? randomSeed();
  // Keras writes { model_config, training_config } in some exports; tfjs builds from model_config.
  const topology = isPlainObject(json.modelTopology.model_config)
    ? json.modelTopology.model_config
    : json.modelTopology;
  let model: tf.LayersModel;
  try {
    // Two builds: the first fills in every default the file leaves out (a Dense layer without
    // kernel_initializer gets tfjs's unseeded GlorotNormal), its re-serialisation lists every
    // initialiser, and the second build draws them all from seeds. The first one's weights are
    // thrown away; that costs one extra initialisation, not a training step.
    const probe = await tf.models.modelFromJSON({
      modelTopology: structuredClone(topology) as unknown as tf.io.ModelJSON['modelTopology'],
    } as Parameters<typeof tf.models.modelFromJSON>[0]);
    const full = probe.toJSON(null, false) as tf.io.ModelJSON['modelTopology'];
    probe.dispose();
    const seeded = seedInitializers(full, seed);
    model = await tf.models.modelFromJSON({ modelTopology: full } as Parameters<
      typeof tf.models.modelFromJSON
    >[0]);
    logger.debug('model file built from topology', { path, sha256: digest, seed, seeded });
  } catch (error) {
    throw buildError(path, error);
  }
  return { model, kind: 'layers-model', path, sha256: digest, weights: 'seeded', seed };
}

async function loadModuleFile(
  path: string,
  bytes: Buffer,
  options: LoadModelFileOptions,
): Promise<LoadedModelFile> {
  const logger = options.logger ?? silentLogger;
  const digest = sha256(bytes);
  const seed = checkSeed(options.seed);
  let namespace: { default?: unknown };
  try {
    // The hash in the URL makes a changed file a new module rather than Node's cached old one.
    namespace = (await import(`${pathToFileURL(path).href}?sha256=${digest}`)) as {
      default?: unknown;
    };
  } catch (error) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Importing the model module ${path} failed: ${withoutPeriod((error as Error)?.message ?? String(error))}. ` +
        'Fix the module (run it with node to see the error).',
      { cause: error, details: { path } },
    );
  }
  let exported = namespace.default;
  if (typeof exported === 'function') exported = (exported as (tfjs: typeof tf) => unknown)(tf);
  if (!isPlainObject(exported) || typeof exported.build !== 'function') {
    throw invalid(
      `The model module ${path} must default-export a model spec ({ name, description, hyperparameters, build }) ` +
        `or a function (tf) => spec; found ${exported === undefined ? 'no default export' : showValue(exported).slice(0, 60)}. ` +
        'Add "export default { ... }" as registerModel takes it.',
      { path },
    );
  }
  const spec = exported as unknown as ModelSpec;
  // A registry of its own: the file's model never shadows or collides with registered ones.
  const registry = createModelRegistry({ builtins: false });
  registry.register(spec);
  const stored = registry.get(spec.name);
  const hyperparameters = withDataShape(
    stored.hyperparameters,
    parseHyperparameterInputs(stored.hyperparameters, options.hyperparameters ?? {}),
    options.dataShape,
  );
  const model = registry.create(stored.name, {
    ...(hyperparameters as Record<string, HyperparameterValue>),
    ...(seed === undefined ? {} : { seed }),
    logger,
  });
  const provenance = getModelProvenance(model);
  logger.debug('model module built', {
    path,
    sha256: digest,
    model: stored.name,
    seed: provenance?.seed,
  });
  return {
    model,
    kind: 'module',
    path,
    sha256: digest,
    weights: 'seeded',
    seed: provenance?.seed,
    spec: { name: stored.name, description: stored.description },
    ...(provenance === undefined ? {} : { hyperparameters: provenance.hyperparameters }),
  };
}

/**
 * Loads a model from a file:
 *
 * - a TensorFlow.js layers `model.json` (or its directory), as `tensorflowjs_converter
 *   --input_format keras` and {@link saveModel} write it. With a `weightsManifest`, its weights
 *   are read (fine-tuning), with the checks of {@link loadModel}. Without one, the model is built
 *   from the topology with every random initialiser seeded from `options.seed`, so every process
 *   gets the same initial weights.
 * - an ES module (`.mjs`, `.js`) whose default export is a model spec as {@link registerModel}
 *   takes it (or a function `(tf) => spec`, to use the same tfjs instance as Shardline), built
 *   with `options.hyperparameters` and `options.seed`.
 *
 * Custom layer classes must be registered first: {@link loadPlugin}.
 *
 * @throws ShardlineError `NOT_FOUND` (no such file), `INVALID_ARGUMENT` (a graph model, an
 *   unknown or Lambda layer, a bad module, bad hyperparameters or seed), `DATA_CORRUPT`
 *   (model.json is not JSON, or its weights do not match it).
 * @example
 * ```ts
 * const { model, seed } = await loadModelFile('./my-cnn/model.json', { seed: 42 });
 * const { model: tiny } = await loadModelFile('./tiny.mjs', { hyperparameters: { units: '64' } });
 * ```
 */
export async function loadModelFile(
  path: string,
  options: LoadModelFileOptions = {},
): Promise<LoadedModelFile> {
  if (typeof path !== 'string' || path === '') {
    throw invalid(`loadModelFile expects a file path; found ${showValue(path)}.`);
  }
  const file = await locate(path);
  const extension = extname(file).toLowerCase();
  if (extension === '.json') {
    return loadLayersFile(file, await readSource(file, 'Model file'), options);
  }
  if (MODULE_EXTENSIONS.has(extension)) {
    return loadModuleFile(file, await readSource(file, 'Model module'), options);
  }
  throw invalid(
    `Model file ${path} has extension ${showValue(extension || '(none)')}: expected a TensorFlow.js layers ` +
      'model.json (or its directory) or an ES module (.mjs, .js) exporting a model spec. Rename or convert it.',
    { path },
  );
}

const loadedPlugins = new Map<string, LoadedPlugin>();

/**
 * Imports a plugin module that registers custom layer classes (with
 * `tf.serialization.registerClass`), so model.json files that use them can be loaded. A default
 * export that is a function is called with Shardline's tfjs, so the plugin registers into the
 * same instance even when it cannot resolve `@tensorflow/tfjs` itself. Content already loaded (the
 * same SHA-256) is not imported again.
 *
 * @example
 * ```ts
 * const { sha256, registeredClasses } = await loadPlugin('./plugins/scale-layer.mjs');
 * const { model } = await loadModelFile('./my-cnn/model.json', { seed: 1 });
 * ```
 */
export async function loadPlugin(path: string): Promise<LoadedPlugin> {
  const absolute = resolve(path);
  const bytes = await readSource(absolute, 'Plugin');
  const digest = sha256(bytes);
  const cached = loadedPlugins.get(digest);
  if (cached !== undefined) return { ...cached, path: absolute, registeredClasses: [] };
  const map = tf.serialization.SerializationMap.getMap().classNameMap;
  const before = new Set(Object.keys(map));
  try {
    const namespace = (await import(`${pathToFileURL(absolute).href}?sha256=${digest}`)) as {
      default?: unknown;
    };
    if (typeof namespace.default === 'function') {
      await (namespace.default as (tfjs: typeof tf) => unknown)(tf);
    }
  } catch (error) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Loading the plugin ${absolute} failed: ${withoutPeriod((error as Error)?.message ?? String(error))}. ` +
        'Fix the module (run it with node to see the error).',
      { cause: error, details: { path: absolute } },
    );
  }
  const registeredClasses = Object.keys(map).filter((name) => !before.has(name));
  const plugin: LoadedPlugin = { path: absolute, sha256: digest, registeredClasses };
  loadedPlugins.set(digest, plugin);
  return plugin;
}

function describeShape(shape: readonly (number | null)[]): string {
  return shape.map((d) => (d === null ? '?' : String(d))).join('x');
}

const COLOR_MODES: Readonly<Record<number, string>> = { 1: 'grayscale', 3: 'rgb', 4: 'rgba' };

function isSoftmaxOutput(layer: tf.layers.Layer): boolean {
  const className = layer.getClassName();
  if (className === 'Softmax') return true;
  const config = layer.getConfig();
  return config.activation === 'softmax';
}

/**
 * Checks, before any training step, that a model can be trained on a dataset: it is a trainable
 * layers model whose every layer tfjs can serialise (to ship it to workers), its input is one
 * image of `height x width x channels`, and its output is a softmax with one unit per class
 * (Shardline's loss is categorical cross-entropy on probabilities; a model that outputs logits
 * must end in a softmax). Throws on the first problem found.
 *
 * @throws ShardlineError `INVALID_ARGUMENT` (a graph model, a Lambda or unregistered layer, no
 *   trainable weights, several inputs or outputs, no softmax) or `MISMATCH` (input shape or class
 *   count differs from the data), with what to change.
 * @example
 * ```ts
 * checkModelFitsData(model, { height: 32, width: 32, channels: 3, numClasses: 5 });
 * ```
 */
export function checkModelFitsData(model: tf.LayersModel | tf.GraphModel, data: DataShape): void {
  for (const key of ['height', 'width', 'channels', 'numClasses'] as const) {
    if (!Number.isSafeInteger(data[key]) || data[key] < 1) {
      throw invalid(`Data shape "${key}" must be an integer >= 1; found ${showValue(data[key])}.`);
    }
  }
  const candidate = model as Partial<tf.LayersModel>;
  if (!Array.isArray(candidate.layers) || !Array.isArray(candidate.inputs)) {
    throw invalid(
      'The model is a TensorFlow.js graph model (or not a model at all): graph models are frozen inference ' +
        'graphs and cannot be trained. Convert the Keras model to a layers model ' +
        '(tensorflowjs_converter --input_format keras) and load its model.json.',
    );
  }
  const layersModel = model as tf.LayersModel;
  const classNames = tf.serialization.SerializationMap.getMap().classNameMap;
  for (const layer of layersModel.layers) {
    const className = layer.getClassName();
    if (className === 'Lambda') {
      throw invalid(
        `Layer "${layer.name}" is a Lambda layer: its code cannot be serialised, so workers cannot rebuild ` +
          'the model. Replace it with built-in layers or a custom layer class registered by a plugin.',
        { layer: layer.name },
      );
    }
    if (classNames[className] === undefined) {
      throw invalid(
        `Layer "${layer.name}" has class "${className}", which is not registered with ` +
          'tf.serialization.registerClass: the model cannot be saved to model.json and rebuilt by the workers. ' +
          'Give the class a static className, register it, and load that module with loadPlugin.',
        { layer: layer.name, className },
      );
    }
  }
  if (layersModel.trainableWeights.length === 0) {
    throw invalid(
      `The model has no trainable weights (${layersModel.nonTrainableWeights.length} non-trainable): nothing ` +
        'would learn. Set trainable = true on the layers to train (model.trainable, layer.trainable).',
    );
  }
  if (layersModel.inputs.length !== 1 || layersModel.outputs.length !== 1) {
    throw invalid(
      `The model has ${layersModel.inputs.length} inputs and ${layersModel.outputs.length} outputs; ` +
        'Shardline trains image classifiers with one input (the image) and one output (the class ' +
        'probabilities). Build the model with one of each.',
    );
  }
  const { height, width, channels, numClasses } = data;
  const expected = `${height}x${width}x${channels}`;
  const input = layersModel.inputs[0]!.shape.slice(1);
  const fits =
    input.length === 3 &&
    [height, width, channels].every((d, i) => input[i] === null || input[i] === d);
  if (!fits) {
    const found = describeShape(input);
    const changes = [`rebuild the model with inputShape [${height}, ${width}, ${channels}]`];
    if (input.length === 3 && typeof input[0] === 'number' && typeof input[1] === 'number') {
      const flags = [`--image-size ${input[0]}x${input[1]}`];
      const mode = typeof input[2] === 'number' ? COLOR_MODES[input[2]] : undefined;
      if (input[2] !== channels && mode !== undefined) flags.push(`--color-mode ${mode}`);
      if (input[2] === channels || mode !== undefined) changes.push(`pass ${flags.join(' ')}`);
    } else if (input.length !== 3) {
      changes[0] += ' (a Flatten layer first, for a dense model)';
    }
    throw new ShardlineError(
      'MISMATCH',
      `The model's input is ${found} but the dataset's images are ${expected}: ${changes.join(' or ')}.`,
      { details: { modelInput: input, dataInput: [height, width, channels] } },
    );
  }
  const output = layersModel.outputs[0]!.shape.slice(1);
  if (output.length !== 1) {
    throw new ShardlineError(
      'MISMATCH',
      `The model's output is ${describeShape(output)} per image but the dataset needs ${numClasses} class ` +
        `probabilities: end the model with Flatten (or GlobalAveragePooling2D) and Dense(${numClasses}, softmax).`,
      { details: { modelOutput: output, numClasses } },
    );
  }
  if (output[0] !== numClasses) {
    throw new ShardlineError(
      'MISMATCH',
      `The model's output has ${output[0]} units but the dataset has ${numClasses} classes: rebuild the model ` +
        `with numClasses ${numClasses} (a last Dense layer of ${numClasses} units), or train on a dataset with ${output[0]} classes.`,
      { details: { modelOutput: output, numClasses } },
    );
  }
  const last = layersModel.outputLayers?.[0] ?? layersModel.layers.at(-1);
  if (last !== undefined && !isSoftmaxOutput(last)) {
    const activation = showValue(last.getConfig().activation ?? 'none');
    throw invalid(
      `The model's output layer "${last.name}" (${last.getClassName()}, activation ${activation}) does not end ` +
        "in a softmax: it outputs logits, but Shardline's loss (categorical cross-entropy) expects class " +
        `probabilities. Set activation "softmax" on "${last.name}" or add tf.layers.softmax() after it.`,
      { layer: last.name },
    );
  }
}
