/**
 * The model registry: models by name, each with a description, declared hyperparameters and a
 * builder. The default registry holds the built-in models (`seed-cnn`, `mlp`, `fast-cnn`); users
 * add theirs with {@link registerModel}, or keep a separate one with {@link createModelRegistry}.
 */
import { isShardlineError, type Logger, ShardlineError, silentLogger } from '@shardline/core';
import type * as tf from '@tensorflow/tfjs';
import { createBuildContext, type ModelBuildContext, randomSeed } from './buildContext.js';
import { type FastCnnHyperparameters, fastCnnSpec } from './fastCnn.js';
import {
  checkHyperparameterSpec,
  checkSeed,
  type HyperparameterSpecs,
  type Hyperparameters,
  type HyperparameterValue,
  resolveHyperparameters,
  showValue,
} from './hyperparameters.js';
import { invalid } from './internal.js';
import { type MlpHyperparameters, mlpSpec } from './mlp.js';
import { type SeedCnnHyperparameters, seedCnnSpec } from './seedCnn.js';

/**
 * A model the registry can build.
 *
 * @example
 * ```ts
 * registerModel({
 *   name: 'tiny',
 *   description: 'Flatten -> Dense(units, softmax)',
 *   hyperparameters: { units: { type: 'integer', default: 10, min: 2, description: 'Classes.' } },
 *   build: ({ units }, ctx) => tf.sequential({ name: 'tiny', layers: [
 *     tf.layers.flatten({ inputShape: [28, 28, 1], name: ctx.layerName('flatten') }),
 *     tf.layers.dense({ units, activation: 'softmax', name: ctx.layerName('dense'),
 *       kernelInitializer: ctx.initializer('glorotUniform'), biasInitializer: 'zeros' }),
 *   ] }),
 * });
 * ```
 */
export interface ModelSpec<
  P extends Hyperparameters = Hyperparameters,
  M extends tf.LayersModel = tf.LayersModel,
> {
  /** Registry key: lowercase words joined by `-`, `_` or `.` (`seed-cnn`). */
  readonly name: string;
  /** One or two sentences: the architecture and what it is for. */
  readonly description: string;
  /** Every hyperparameter the builder reads, with its default and bounds. */
  readonly hyperparameters: HyperparameterSpecs<P>;
  /**
   * Checks that need several hyperparameters at once (an input too small for the pooling).
   * Returns what is wrong and what to do, or undefined when all is well.
   */
  validate?(params: P): string | undefined;
  /**
   * Builds the model, uncompiled. Use `context.layerName` and `context.initializer` for every
   * layer so that names and initial weights are deterministic.
   */
  build(params: P, context: ModelBuildContext): M;
}

/** Options of {@link createModel} that are not hyperparameters. */
export interface ModelBuildOptions {
  /**
   * Seed for the initial weights: the same seed gives the same weights in any process.
   * Default: a random seed (logged at debug level and recorded in the model's metadata).
   */
  seed?: number;
  /** Receives a debug record per model built. Default: silent. */
  logger?: Logger;
}

/** Options of {@link createModel}: any of the model's hyperparameters, plus {@link ModelBuildOptions}. */
export type CreateModelOptions<P extends Hyperparameters = Hyperparameters> = Partial<P> &
  ModelBuildOptions;

/** Options of {@link createModel} for a model known only by a runtime name. */
export type AnyModelOptions = ModelBuildOptions & {
  readonly [hyperparameter: string]: HyperparameterValue | Logger | undefined;
};

/** The built-in models and their hyperparameters, for typed {@link createModel} calls. */
export interface BuiltinModels {
  'seed-cnn': SeedCnnHyperparameters;
  mlp: MlpHyperparameters;
  'fast-cnn': FastCnnHyperparameters;
}

/** Names of the built-in models, in registration order. */
export const builtinModelNames = [
  'seed-cnn',
  'mlp',
  'fast-cnn',
] as const satisfies readonly (keyof BuiltinModels)[];

/**
 * What {@link createModel} records in the model's user-defined metadata under the `shardline`
 * key, so a saved model says how it was made (it travels in model.json).
 */
export interface ModelProvenance {
  /** The registry name. */
  readonly model: string;
  /** Every hyperparameter, defaults included. */
  readonly hyperparameters: Record<string, HyperparameterValue>;
  /** The seed the initial weights came from. */
  readonly seed: number;
}

/** Options of {@link ModelRegistry.register}. */
export interface RegisterModelOptions {
  /** Replace a model registered earlier under the same name (never a built-in). Default false. */
  replace?: boolean;
}

/** A set of models by name. The package-level functions use the default one. */
export interface ModelRegistry {
  /** Adds a model; throws `INVALID_ARGUMENT` for a bad spec or a name already taken. */
  register<P extends Hyperparameters, M extends tf.LayersModel>(
    spec: ModelSpec<P, M>,
    options?: RegisterModelOptions,
  ): void;
  /** Removes a user-registered model; returns whether it was there. Built-ins cannot be removed. */
  unregister(name: string): boolean;
  /** Whether `name` is registered. */
  has(name: string): boolean;
  /** The spec registered under `name`; throws `INVALID_ARGUMENT` listing the valid names if none. */
  get(name: string): ModelSpec;
  /** Every registered spec, built-ins first, then in registration order. */
  list(): ModelSpec[];
  /** Builds an uncompiled model; see {@link createModel}. */
  create<N extends keyof BuiltinModels>(
    name: N,
    options?: CreateModelOptions<BuiltinModels[N]>,
  ): tf.Sequential;
  create(name: string, options?: AnyModelOptions): tf.LayersModel;
}

const NAME_PATTERN = /^[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*$/;
const RESERVED_OPTIONS = ['seed', 'logger'] as const;
// Registry specs are stored with their hyperparameter type erased; createModel validates values
// against the declarations before build sees them, which is what makes this sound.
type StoredSpec = ModelSpec<Hyperparameters, tf.LayersModel>;

function checkSpec(spec: ModelSpec<Hyperparameters, tf.LayersModel>): void {
  if (typeof spec !== 'object' || spec === null) {
    throw invalid(`registerModel expects a model spec object; found ${showValue(spec)}.`);
  }
  if (typeof spec.name !== 'string' || !NAME_PATTERN.test(spec.name)) {
    throw invalid(
      `Model name must be lowercase words joined by "-", "_" or "." (like "seed-cnn"); found ${showValue(spec.name)}. Rename the model.`,
    );
  }
  if (typeof spec.description !== 'string' || spec.description.trim() === '') {
    throw invalid(
      `Model "${spec.name}" needs a description (one or two sentences); found ${showValue(spec.description)}.`,
    );
  }
  if (typeof spec.build !== 'function') {
    throw invalid(
      `Model "${spec.name}" needs a build(params, context) function; found ${showValue(spec.build)}.`,
    );
  }
  if (typeof spec.hyperparameters !== 'object' || spec.hyperparameters === null) {
    throw invalid(
      `Model "${spec.name}" needs a hyperparameters object (use {} for none); found ${showValue(spec.hyperparameters)}.`,
    );
  }
  for (const [hp, hpSpec] of Object.entries(spec.hyperparameters)) {
    if ((RESERVED_OPTIONS as readonly string[]).includes(hp)) {
      throw invalid(
        `Model "${spec.name}" declares a hyperparameter named "${hp}", which createModel reserves ` +
          `(${RESERVED_OPTIONS.join(', ')}). Rename it.`,
      );
    }
    checkHyperparameterSpec(spec.name, hp, hpSpec);
  }
}

/**
 * A frozen copy of a spec, down to the default lists: `getModelSpec` hands it out, and a caller
 * editing a default must not change what later `createModel` calls build.
 */
function freezeSpec(spec: StoredSpec): StoredSpec {
  const hyperparameters = Object.fromEntries(
    Object.entries(spec.hyperparameters).map(([name, hp]) => [
      name,
      Object.freeze(
        hp.type === 'integer[]' ? { ...hp, default: Object.freeze([...hp.default]) } : { ...hp },
      ),
    ]),
  );
  const { build, validate } = spec;
  // Calls through the original, so specs written as class instances keep their `this`.
  return Object.freeze({
    ...spec,
    hyperparameters: Object.freeze(hyperparameters),
    build: (params: Hyperparameters, context: ModelBuildContext) =>
      build.call(spec, params, context),
    ...(validate === undefined
      ? {}
      : { validate: (params: Hyperparameters) => validate.call(spec, params) }),
  }) as StoredSpec;
}

/**
 * Creates a registry. With `builtins` (the default) it starts with `seed-cnn`, `mlp` and
 * `fast-cnn`; without, it starts empty. Useful to keep test or plugin models out of the
 * process-wide registry.
 */
export function createModelRegistry(options: { builtins?: boolean } = {}): ModelRegistry {
  const specs = new Map<string, StoredSpec>();
  const builtins = new Set<string>();

  const get = (name: string): StoredSpec => {
    const spec = typeof name === 'string' ? specs.get(name) : undefined;
    if (spec) return spec;
    const names = [...specs.keys()];
    const normalised =
      typeof name === 'string'
        ? name
            .trim()
            .toLowerCase()
            .replace(/[\s_]+/g, '-')
        : '';
    const hint =
      specs.has(normalised) && normalised !== name ? ` Did you mean "${normalised}"?` : '';
    throw invalid(
      `Unknown model ${showValue(name)}: expected one of ${names.map((n) => `"${n}"`).join(', ') || '(none registered)'}.${hint} ` +
        'Use one of those names, or add the model with registerModel().',
      { model: name, expected: names },
    );
  };

  const registry: ModelRegistry = {
    register(spec, registerOptions = {}) {
      // Spec typing is checked by the compiler at the call site; erase it for storage.
      const stored = spec as unknown as StoredSpec;
      checkSpec(stored);
      if (builtins.has(stored.name)) {
        throw invalid(
          `Model "${stored.name}" is built in and cannot be replaced: found a second registration. Register yours under another name.`,
        );
      }
      if (specs.has(stored.name) && registerOptions.replace !== true) {
        throw invalid(
          `Model "${stored.name}" is already registered: expected a new name, found a duplicate. ` +
            'Pick another name, or pass { replace: true } to replace it.',
        );
      }
      specs.set(stored.name, freezeSpec(stored));
    },
    unregister(name) {
      if (builtins.has(name)) {
        throw invalid(
          `Model "${name}" is built in and cannot be unregistered. Only models added with registerModel can.`,
        );
      }
      return specs.delete(name);
    },
    has: (name) => specs.has(name),
    get: (name) => get(name),
    list: () => [...specs.values()],
    create(name: string, createOptions: AnyModelOptions = {}): tf.LayersModel {
      const spec = get(name);
      if (typeof createOptions !== 'object' || createOptions === null) {
        throw invalid(`createModel options must be an object; found ${showValue(createOptions)}.`);
      }
      const explicitSeed = checkSeed(createOptions.seed);
      const logger = createOptions.logger ?? silentLogger;
      const params = resolveHyperparameters(
        spec.name,
        spec.hyperparameters,
        createOptions,
        RESERVED_OPTIONS,
      );
      const problem = spec.validate?.(params);
      if (problem !== undefined) {
        throw invalid(`Hyperparameters of model "${spec.name}" do not fit together: ${problem}`, {
          model: spec.name,
          hyperparameters: params,
        });
      }
      const seed = explicitSeed ?? randomSeed();
      let model: tf.LayersModel;
      try {
        model = spec.build(params, createBuildContext(seed));
      } catch (error) {
        if (isShardlineError(error)) throw error;
        const message = error instanceof Error ? error.message : showValue(error);
        throw new ShardlineError(
          'INVALID_ARGUMENT',
          `Building model "${spec.name}" with ${showValue(params)} failed: ${message}. ` +
            `Check the hyperparameters against getModelSpec("${spec.name}").`,
          { cause: error, details: { model: spec.name, hyperparameters: params } },
        );
      }
      // Registered builders are user code: check the promise before relying on it.
      if (
        typeof model?.setUserDefinedMetadata !== 'function' ||
        typeof model.countParams !== 'function'
      ) {
        throw invalid(
          `The build function of model "${spec.name}" must return a tf.LayersModel (tf.sequential or tf.model); ` +
            `found ${showValue(model)}. Fix the builder passed to registerModel.`,
        );
      }
      const provenance: ModelProvenance = { model: spec.name, hyperparameters: params, seed };
      // Kept in tfjs's user-defined metadata so it is saved in model.json and restored on load.
      model.setUserDefinedMetadata({
        ...(model.getUserDefinedMetadata() ?? {}),
        shardline: provenance,
      });
      logger.debug('model built', {
        model: spec.name,
        seed,
        seedSource: explicitSeed === undefined ? 'random' : 'option',
        params: model.countParams(),
      });
      return model;
    },
  } as ModelRegistry;

  if (options.builtins !== false) {
    for (const spec of [seedCnnSpec, mlpSpec, fastCnnSpec]) {
      registry.register(spec);
      builtins.add(spec.name);
    }
  }
  return registry;
}

/** The process-wide registry behind {@link createModel}, {@link registerModel} and friends. */
export const defaultRegistry: ModelRegistry = createModelRegistry();

/**
 * Builds an uncompiled model from the default registry. Hyperparameters not given take their
 * defaults; `seed` makes the initial weights reproducible.
 *
 * @throws ShardlineError `INVALID_ARGUMENT` for an unknown name or a bad hyperparameter.
 * @example
 * ```ts
 * const model = createModel('seed-cnn', { seed: 7 });
 * model.compile({ optimizer: 'adam', loss: 'sparseCategoricalCrossentropy', metrics: ['accuracy'] });
 * ```
 */
export function createModel<N extends keyof BuiltinModels>(
  name: N,
  options?: CreateModelOptions<BuiltinModels[N]>,
): tf.Sequential;
export function createModel(name: string, options?: AnyModelOptions): tf.LayersModel;
export function createModel(name: string, options?: AnyModelOptions): tf.LayersModel {
  return defaultRegistry.create(name, options);
}

/**
 * Adds a model to the default registry.
 *
 * @throws ShardlineError `INVALID_ARGUMENT` for a malformed spec or a name already taken.
 */
export function registerModel<P extends Hyperparameters, M extends tf.LayersModel>(
  spec: ModelSpec<P, M>,
  options?: RegisterModelOptions,
): void {
  defaultRegistry.register(spec, options);
}

/** Removes a user-registered model from the default registry; returns whether it was there. */
export function unregisterModel(name: string): boolean {
  return defaultRegistry.unregister(name);
}

/** Every model in the default registry: name, description, hyperparameters with defaults. */
export function listModels(): ModelSpec[] {
  return defaultRegistry.list();
}

/**
 * The spec of one model in the default registry.
 *
 * @throws ShardlineError `INVALID_ARGUMENT` listing the valid names when `name` is unknown.
 */
export function getModelSpec(name: string): ModelSpec {
  return defaultRegistry.get(name);
}

/**
 * How a model was made, when it came from {@link createModel} (directly, or saved and loaded);
 * undefined for other models.
 */
export function getModelProvenance(model: tf.LayersModel): ModelProvenance | undefined {
  const metadata = model.getUserDefinedMetadata() as { shardline?: unknown } | undefined;
  const value = metadata?.shardline;
  if (typeof value !== 'object' || value === null) return undefined;
  const { model: name, seed, hyperparameters } = value as Record<string, unknown>;
  if (
    typeof name !== 'string' ||
    typeof seed !== 'number' ||
    typeof hyperparameters !== 'object' ||
    hyperparameters === null
  ) {
    return undefined;
  }
  return value as ModelProvenance;
}
