import { hasErrorCode, type ShardlineError } from '@shardline/core';
import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type AnyModelOptions,
  builtinModelNames,
  createModel,
  createModelRegistry,
  describeHyperparameter,
  getModelSpec,
  listModels,
  type ModelSpec,
  registerModel,
  summary,
  unregisterModel,
} from '../src/index.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** The ShardlineError `fn` throws; fails the test when it throws nothing or something else. */
function thrown(fn: () => unknown): ShardlineError {
  try {
    fn();
  } catch (error) {
    if (hasErrorCode(error, 'INVALID_ARGUMENT')) return error;
    throw error;
  }
  throw new Error('expected an INVALID_ARGUMENT error, nothing was thrown');
}

type TinyParams = { units: number };
const tiny: ModelSpec<TinyParams, tf.Sequential> = {
  name: 'tiny',
  description: 'Flatten -> Dense(units, softmax), for tests.',
  hyperparameters: { units: { type: 'integer', default: 3, min: 2, description: 'Output units.' } },
  build: ({ units }, ctx) =>
    tf.sequential({
      name: 'tiny',
      layers: [
        tf.layers.flatten({ inputShape: [2, 2], name: ctx.layerName('flatten') }),
        tf.layers.dense({
          units,
          activation: 'softmax',
          name: ctx.layerName('dense'),
          kernelInitializer: ctx.initializer('glorotUniform'),
        }),
      ],
    }),
};

describe('listing', () => {
  it('lists the built-ins with descriptions, and hyperparameters with defaults', () => {
    const specs = listModels();
    expect(specs.map((s) => s.name).slice(0, 3)).toEqual([...builtinModelNames]);
    for (const spec of specs) expect(spec.description.length).toBeGreaterThan(20);
    const seedCnn = getModelSpec('seed-cnn');
    expect(
      Object.fromEntries(Object.entries(seedCnn.hyperparameters).map(([k, v]) => [k, v.default])),
    ).toEqual({
      inputShape: [28, 28, 1],
      numClasses: 10,
      dropout: 0,
    });
    expect(getModelSpec('mlp').hyperparameters.hiddenUnits?.default).toEqual([300, 100]);
    expect(Object.keys(getModelSpec('fast-cnn').hyperparameters)).toEqual([
      'inputShape',
      'numClasses',
      'filters',
      'denseUnits',
      'dropout',
    ]);
  });

  it('describes what each hyperparameter accepts', () => {
    const hp = getModelSpec('seed-cnn').hyperparameters;
    expect(describeHyperparameter(hp.inputShape!)).toBe('a list of 3 integers >= 1');
    expect(describeHyperparameter(hp.numClasses!)).toBe('an integer >= 2');
    expect(describeHyperparameter(hp.dropout!)).toBe('a number in [0, 1)');
    expect(describeHyperparameter(getModelSpec('mlp').hyperparameters.hiddenUnits!)).toBe(
      'a list of any number of integers >= 1',
    );
  });
});

describe('errors', () => {
  it('an unknown model name lists the valid names and says what to do', () => {
    const error = thrown(() => createModel('resnet50'));
    expect(error.message).toContain('Unknown model "resnet50"');
    expect(error.message).toContain('"seed-cnn", "mlp", "fast-cnn"');
    expect(error.message).toContain('registerModel');
    expect(thrown(() => getModelSpec('nope')).details.expected).toEqual(
      expect.arrayContaining(['seed-cnn', 'mlp', 'fast-cnn']),
    );
  });

  it('suggests the registered spelling of a near miss', () => {
    expect(thrown(() => createModel('Seed_CNN')).message).toContain('Did you mean "seed-cnn"?');
  });

  it.each<[string, AnyModelOptions, string]>([
    [
      'seed-cnn',
      { numClasses: 1 },
      'Hyperparameter "numClasses" of model "seed-cnn" must be an integer >= 2; found 1.',
    ],
    ['seed-cnn', { numClasses: 2.5 }, 'must be an integer >= 2; found 2.5'],
    [
      'seed-cnn',
      { dropout: 1 },
      '"dropout" of model "seed-cnn" must be a number in [0, 1); found 1',
    ],
    ['seed-cnn', { dropout: Number.NaN }, 'found NaN'],
    ['seed-cnn', { numClasses: Number.POSITIVE_INFINITY }, 'found Infinity'],
    ['seed-cnn', { inputShape: [28, 28] }, 'must be a list of 3 integers >= 1; found [28,28]'],
    [
      'mlp',
      { hiddenUnits: [300, 0] },
      'must be a list of any number of integers >= 1; found [300,0]',
    ],
    ['mlp', { hiddenUnits: 300 }, 'found 300'],
    ['fast-cnn', { filters: [] }, 'must be a list of 1 to 6 integers >= 1; found []'],
  ])('%s with %j is rejected, naming the expected and found values', (name, options, message) => {
    const error = thrown(() => createModel(name, options));
    expect(error.message).toContain(message);
    expect(error.message).toContain('leave it out to use the default');
  });

  it('rejects wrongly typed values from untyped callers', () => {
    const options = { numClasses: '10' } as unknown as AnyModelOptions;
    expect(thrown(() => createModel('mlp', options)).message).toContain('found "10"');
  });

  it('an unknown option lists the valid ones (typos do not pass silently)', () => {
    const error = thrown(() => createModel('mlp', { hiddenUnit: [10] }));
    expect(error.message).toContain('Unknown option "hiddenUnit" for model "mlp"');
    expect(error.message).toContain(
      'expected one of inputShape, hiddenUnits, numClasses, dropout, seed, logger',
    );
  });

  it('rejects a bad seed', () => {
    for (const seed of [-1, 1.5, Number.NaN, 2 ** 53]) {
      expect(thrown(() => createModel('mlp', { seed })).message).toContain(
        'Option "seed" must be a non-negative integer',
      );
    }
  });

  it('rejects hyperparameters that do not fit together, saying why', () => {
    const error = thrown(() => createModel('seed-cnn', { inputShape: [7, 7, 1] }));
    expect(error.message).toContain('inputShape must be at least 8x8');
    expect(error.message).toContain('found 7x7');
    expect(
      thrown(() => createModel('fast-cnn', { inputShape: [8, 8, 1], filters: [4, 4, 4, 4] }))
        .message,
    ).toContain('at least 16x16');
    // One block fewer fits.
    createModel('fast-cnn', { inputShape: [8, 8, 1], filters: [4, 4, 4], seed: 1 }).dispose();
  });
});

describe('registering models', () => {
  afterEach(() => {
    unregisterModel('tiny');
  });

  it('registers, lists, builds with defaults and options, and unregisters', () => {
    registerModel(tiny);
    expect(listModels().map((s) => s.name)).toContain('tiny');
    const model = createModel('tiny', { seed: 1 });
    expect(summary(model).layers.map((l) => [l.name, l.params])).toEqual([
      ['flatten_1', 0],
      ['dense_1', 15],
    ]);
    model.dispose();
    const wider = createModel('tiny', { units: 5, seed: 1 });
    expect(wider.countParams()).toBe(25);
    wider.dispose();
    expect(unregisterModel('tiny')).toBe(true);
    expect(unregisterModel('tiny')).toBe(false);
    expect(thrown(() => createModel('tiny')).message).toContain('Unknown model "tiny"');
  });

  it('refuses duplicates unless asked to replace, and never replaces or removes a built-in', () => {
    registerModel(tiny);
    expect(thrown(() => registerModel(tiny)).message).toContain('already registered');
    registerModel({ ...tiny, description: 'Replaced, for tests.' }, { replace: true });
    expect(getModelSpec('tiny').description).toBe('Replaced, for tests.');
    expect(
      thrown(() => registerModel({ ...tiny, name: 'seed-cnn' }, { replace: true })).message,
    ).toContain('built in');
    expect(thrown(() => unregisterModel('mlp')).message).toContain('built in');
  });

  it('validates the spec: name, description, build, hyperparameter declarations', () => {
    expect(thrown(() => registerModel({ ...tiny, name: 'Tiny Model' })).message).toContain(
      'lowercase words',
    );
    expect(thrown(() => registerModel({ ...tiny, description: ' ' })).message).toContain(
      'needs a description',
    );
    const badDefault = {
      ...tiny,
      hyperparameters: { units: { ...tiny.hyperparameters.units, default: 1 } },
    };
    expect(thrown(() => registerModel(badDefault)).message).toContain(
      'its default 1 is not an integer >= 2',
    );
    const reserved = {
      ...tiny,
      hyperparameters: { seed: { type: 'integer', default: 1, description: 'x' } },
    } as unknown as ModelSpec;
    expect(thrown(() => registerModel(reserved)).message).toContain('reserves');
    expect(listModels().map((s) => s.name)).not.toContain('tiny');
  });

  it('wraps a failing builder in INVALID_ARGUMENT, keeping the cause', () => {
    registerModel({
      ...tiny,
      build: () => {
        throw new Error('negative dimension');
      },
    });
    const error = thrown(() => createModel('tiny'));
    expect(error.message).toContain(
      'Building model "tiny" with {"units":3} failed: negative dimension',
    );
    expect((error.cause as Error).message).toBe('negative dimension');
  });

  it('hands out frozen specs: editing a default cannot change later builds', () => {
    const spec = getModelSpec('mlp');
    expect(() => (spec.hyperparameters.hiddenUnits!.default as number[]).push(5)).toThrow(
      TypeError,
    );
    expect(() => {
      (spec as { description: string }).description = 'x';
    }).toThrow(TypeError);
    const model = createModel('mlp', { seed: 1 });
    expect(model.layers.map((l) => l.name)).toEqual(['flatten_1', 'dense_1', 'dense_2', 'dense_3']);
    model.dispose();
  });

  it('accepts specs written as classes, and rejects a builder that returns no model', () => {
    class TinySpec implements ModelSpec<TinyParams, tf.Sequential> {
      readonly name = 'tiny';
      readonly description = 'The tiny spec, as a class.';
      readonly hyperparameters = tiny.hyperparameters;
      build(params: TinyParams, ctx: Parameters<ModelSpec['build']>[1]): tf.Sequential {
        return tiny.build(params, ctx);
      }
    }
    registerModel(new TinySpec());
    createModel('tiny', { seed: 1 }).dispose();
    registerModel({ ...tiny, build: () => ({}) as tf.Sequential }, { replace: true });
    expect(thrown(() => createModel('tiny')).message).toContain('must return a tf.LayersModel');
  });

  it('a separate registry does not touch the default one', () => {
    const registry = createModelRegistry({ builtins: false });
    expect(registry.list()).toEqual([]);
    registry.register(tiny);
    expect(registry.has('tiny')).toBe(true);
    expect(listModels().map((s) => s.name)).not.toContain('tiny');
    registry.create('tiny', { seed: 2 }).dispose();
    expect(thrown(() => registry.get('seed-cnn')).message).toContain('expected one of "tiny"');
  });
});
