/**
 * The model of a job, resolved from `--model`, `--hp` and `--plugin`: a registered model by name
 * (built for the data's image shape and class count), or a file (a TensorFlow.js layers
 * model.json, or an ES module exporting a model spec). Whatever its source, the result is checked
 * against the data before any step, and described as what workers need to rebuild it: the
 * topology as JSON and the plugins (by SHA-256) whose layer classes it uses.
 */
import { basename } from 'node:path';
import type { Logger } from '@shardline/core';
import {
  checkModelFitsData,
  createModel,
  createModelRegistry,
  type DataShape,
  getModelProvenance,
  getModelSpec,
  type HyperparameterInput,
  type HyperparameterValue,
  isModelFilePath,
  type LoadedPlugin,
  loadModelFile,
  loadPlugin,
  type ModelSpec,
  parseHyperparameterInputs,
  withDataShape,
} from '@shardline/models';
import type {
  ModelArtifacts,
  PluginRequirement,
  HyperparameterValue as WireHyperparameterValue,
} from '@shardline/protocol';
import type * as tf from '@tensorflow/tfjs';

/** A plugin module the model needs, as run outputs and the job record it. */
export interface JobPlugin {
  /** The module's file name. */
  readonly name: string;
  /** Its absolute path on this machine. */
  readonly path: string;
  /** SHA-256 of its source. */
  readonly sha256: string;
  /** Layer classes it registered. */
  readonly classNames: readonly string[];
}

/** A job's model, built and checked. */
export interface JobModel {
  readonly model: tf.LayersModel;
  /** For logs and events: the registry name, or the file's name. */
  readonly label: string;
  /** `builtin` (registry), `layers-model` (model.json) or `module` (ES module spec). */
  readonly source: 'builtin' | 'layers-model' | 'module';
  /** Every hyperparameter, defaults included (registry and module models). */
  readonly hyperparameters: Readonly<Record<string, HyperparameterValue>>;
  /** The plugins loaded for it (all of `--plugin`, which the job then requires of workers). */
  readonly plugins: readonly JobPlugin[];
  /** What JobSpec.model carries. */
  readonly artifacts: ModelArtifacts;
}

/**
 * A model as code gives it: a registry name or file path (as `--model`), a model spec (as
 * `registerModel` takes it), or a function that builds the model.
 */
export type ModelSource =
  | string
  | ModelSpec
  | ((context: ModelBuildContext) => tf.LayersModel | Promise<tf.LayersModel>);

/**
 * What a model function is given: the data's shape, so that one function fits any dataset, and
 * the run's seed, so that its initialisers can be seeded (tfjs has no global seed: a model built
 * with unseeded initialisers starts from different weights on every run).
 */
export interface ModelBuildContext {
  /** `[height, width, channels]` of the dataset's images: the model's input shape. */
  readonly inputShape: readonly [number, number, number];
  /** Number of classes: the output layer's units. */
  readonly numClasses: number;
  /** The run's `seed`, for the initialisers (`tf.initializers.glorotUniform({ seed })`). */
  readonly seed: number;
}

/** What {@link resolveJobModel} takes. */
export interface JobModelOptions {
  /** A registry name or file path, a spec, or a function returning the model. */
  readonly model: ModelSource;
  /** `--hp` values by name (strings are parsed by the declared type). */
  readonly hyperparameters?: Readonly<Record<string, HyperparameterInput>>;
  /** `--plugin` module paths, loaded before the model. */
  readonly plugins?: readonly string[];
  readonly seed: number;
  /** The data the model must fit. */
  readonly data: DataShape;
  readonly logger: Logger;
}

/**
 * Loads the plugins, builds the model, and checks that it can be trained on the data.
 *
 * @throws ShardlineError from the model and plugin loaders (`NOT_FOUND`, `INVALID_ARGUMENT`,
 *   `DATA_CORRUPT`) and from `checkModelFitsData` (`MISMATCH`, `INVALID_ARGUMENT`), each saying
 *   what to change.
 */
export async function resolveJobModel(options: JobModelOptions): Promise<JobModel> {
  const { data, logger, seed } = options;
  const plugins: JobPlugin[] = [];
  for (const path of options.plugins ?? []) {
    const loaded: LoadedPlugin = await loadPlugin(path);
    plugins.push({
      name: basename(loaded.path),
      path: loaded.path,
      sha256: loaded.sha256,
      classNames: loaded.registeredClasses,
    });
    logger.info('plugin loaded', {
      plugin: loaded.path,
      sha256: loaded.sha256,
      classes: loaded.registeredClasses.join(',') || '(already registered)',
    });
  }
  const hp = options.hyperparameters ?? {};
  let built: Omit<JobModel, 'artifacts' | 'plugins'>;
  const source = options.model;
  if (typeof source === 'function') {
    const model = await source({
      inputShape: [data.height, data.width, data.channels],
      numClasses: data.numClasses,
      seed,
    });
    built = { model, label: model.name, source: 'module', hyperparameters: {} };
  } else if (typeof source === 'object') {
    // A registry of its own: the caller's spec never shadows or collides with registered ones.
    const registry = createModelRegistry({ builtins: false });
    registry.register(source);
    const spec = registry.get(source.name);
    const given = withDataShape(
      spec.hyperparameters,
      parseHyperparameterInputs(spec.hyperparameters, hp),
      data,
    );
    const model = registry.create(spec.name, {
      ...(given as Record<string, HyperparameterValue>),
      seed,
    });
    built = {
      model,
      label: spec.name,
      source: 'module',
      hyperparameters: getModelProvenance(model)?.hyperparameters ?? {},
    };
  } else if (isModelFilePath(source)) {
    const file = await loadModelFile(source, {
      seed,
      hyperparameters: hp,
      dataShape: data,
      logger,
    });
    built = {
      model: file.model,
      label: basename(file.path),
      source: file.kind,
      hyperparameters: file.hyperparameters ?? {},
    };
    logger.info('model loaded from file', {
      path: file.path,
      kind: file.kind,
      weights: file.weights,
      ...(file.seed === undefined ? {} : { seed: file.seed }),
    });
  } else {
    const spec = getModelSpec(source);
    const given = withDataShape(
      spec.hyperparameters,
      parseHyperparameterInputs(spec.hyperparameters, hp),
      data,
    );
    const model = createModel(spec.name, {
      ...(given as Record<string, HyperparameterValue>),
      seed,
    });
    built = {
      model,
      label: spec.name,
      source: 'builtin',
      hyperparameters: getModelProvenance(model)?.hyperparameters ?? {},
    };
  }
  try {
    checkModelFitsData(built.model, data);
  } catch (error) {
    built.model.dispose();
    throw error;
  }
  return { ...built, plugins, artifacts: modelArtifacts(built.model, built.source) };
}

/** The model's topology as model.json has it, for workers to rebuild the same layers. */
function modelArtifacts(model: tf.LayersModel, source: JobModel['source']): ModelArtifacts {
  return { topologyJson: JSON.stringify(model.toJSON(null, false)), source };
}

/** JobSpec.plugins for the job's plugins. */
export function pluginRequirements(plugins: readonly JobPlugin[]): PluginRequirement[] {
  return plugins.map((p) => ({ name: p.name, sha256: p.sha256, classNames: [...p.classNames] }));
}

/** JobSpec.hyperparameters: the model's hyperparameters as typed wire values. */
export function wireHyperparameters(
  values: Readonly<Record<string, HyperparameterValue>>,
): Record<string, WireHyperparameterValue> {
  const out: Record<string, WireHyperparameterValue> = {};
  for (const [name, value] of Object.entries(values)) {
    out[name] = {
      kind:
        typeof value === 'number'
          ? { $case: 'number', value }
          : { $case: 'numbers', value: { values: [...value] } },
    };
  }
  return out;
}
