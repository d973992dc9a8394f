import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isShardlineError, type ShardlineError } from '@shardline/core';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkModelFitsData,
  createModel,
  loadModelFile,
  loadPlugin,
  saveModel,
} from '../src/index.js';

let tmp: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = await mkdtemp('/tmp/modelfile-');
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function rejected(promise: Promise<unknown>): Promise<ShardlineError> {
  try {
    await promise;
  } catch (error) {
    if (isShardlineError(error)) return error;
    throw error;
  }
  throw new Error('expected a rejection');
}

function thrown(fn: () => unknown): ShardlineError {
  try {
    fn();
  } catch (error) {
    if (isShardlineError(error)) return error;
    throw error;
  }
  throw new Error('expected an error');
}

/** Every weight of a model as bytes, keyed by original name, for byte-equality checks. */
function weightBytes(model: tf.LayersModel): Map<string, Buffer> {
  return new Map(
    model.weights.map((w) => {
      const values = w.read().dataSync() as Float32Array;
      return [w.originalName, Buffer.from(values.buffer, values.byteOffset, values.byteLength)];
    }),
  );
}

/** A hand-written layers-format model.json, as tensorflowjs_converter writes one, minus weights. */
function handModelJson(layers: object[]): object {
  return {
    format: 'layers-model',
    generatedBy: 'keras v2.15.0',
    convertedBy: 'TensorFlow.js Converter v4.22.0',
    modelTopology: {
      class_name: 'Sequential',
      config: { name: 'hand_cnn', layers },
      keras_version: '2.15.0',
      backend: 'tensorflow',
    },
  };
}

const HAND_LAYERS = [
  {
    class_name: 'Conv2D',
    config: {
      name: 'conv',
      batch_input_shape: [null, 8, 8, 1],
      filters: 4,
      kernel_size: [3, 3],
      padding: 'same',
      activation: 'relu',
      kernel_initializer: { class_name: 'HeNormal', config: { seed: null } },
    },
  },
  { class_name: 'MaxPooling2D', config: { name: 'pool', pool_size: [2, 2] } },
  { class_name: 'Flatten', config: { name: 'flat' } },
  // No kernel_initializer: tfjs's default (GlorotUniform) must be seeded too.
  { class_name: 'Dense', config: { name: 'out', units: 3, activation: 'softmax' } },
];

async function writeJson(name: string, json: object): Promise<string> {
  const dir = join(tmp, name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'model.json'), JSON.stringify(json));
  return dir;
}

describe('loadModelFile: a layers model.json without weights', () => {
  it('builds the topology with seeded initialisers: same seed, byte-equal weights; other seed, different', async () => {
    const dir = await writeJson('hand', handModelJson(HAND_LAYERS));
    const a = await loadModelFile(dir, { seed: 42 });
    const b = await loadModelFile(join(dir, 'model.json'), { seed: 42 });
    const c = await loadModelFile(dir, { seed: 43 });
    expect(a.kind).toBe('layers-model');
    expect(a.weights).toBe('seeded');
    expect(a.seed).toBe(42);
    expect(a.path).toBe(join(dir, 'model.json'));
    const bytes = await readFile(join(dir, 'model.json'));
    expect(a.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(a.model.layers.map((l) => l.name)).toEqual(['conv', 'pool', 'flat', 'out']);

    const wa = weightBytes(a.model);
    const wb = weightBytes(b.model);
    const wc = weightBytes(c.model);
    expect([...wa.keys()]).toEqual(['conv/kernel', 'conv/bias', 'out/kernel', 'out/bias']);
    for (const [name, bytesA] of wa) expect(bytesA.equals(wb.get(name)!), name).toBe(true);
    // Both random kernels change with the seed, the defaulted Dense kernel included.
    expect(wa.get('conv/kernel')!.equals(wc.get('conv/kernel')!)).toBe(false);
    expect(wa.get('out/kernel')!.equals(wc.get('out/kernel')!)).toBe(false);
    // A loaded topology is a trainable model that fits its data.
    checkModelFitsData(a.model, { height: 8, width: 8, channels: 1, numClasses: 3 });
    for (const m of [a, b, c]) m.model.dispose();
  });

  it('draws a random seed when none is given, and reports it so the build can be repeated', async () => {
    const dir = await writeJson('hand-random', handModelJson(HAND_LAYERS));
    const first = await loadModelFile(dir);
    expect(first.seed).toBeGreaterThan(0);
    const again = await loadModelFile(dir, { seed: first.seed! });
    expect(weightBytes(again.model)).toEqual(weightBytes(first.model));
    first.model.dispose();
    again.model.dispose();
  });

  it('refuses hyperparameters, a graph model, a Lambda layer and a missing file, saying what to do', async () => {
    const dir = await writeJson('hand-hp', handModelJson(HAND_LAYERS));
    const hp = await rejected(loadModelFile(dir, { hyperparameters: { units: 3 } }));
    expect(hp.code).toBe('INVALID_ARGUMENT');
    expect(hp.message).toContain('has no hyperparameters');

    const graph = await writeJson('graph', { format: 'graph-model', modelTopology: { node: [] } });
    const g = await rejected(loadModelFile(graph));
    expect(g.code).toBe('INVALID_ARGUMENT');
    expect(g.message).toContain('graph model');
    expect(g.message).toContain('--input_format keras');

    const lambda = await writeJson(
      'lambda',
      handModelJson([
        { class_name: 'Flatten', config: { name: 'flat', batch_input_shape: [null, 4, 4, 1] } },
        { class_name: 'Lambda', config: { name: 'square', function: ['4wEAAAA...', null, null] } },
        { class_name: 'Dense', config: { name: 'out', units: 2, activation: 'softmax' } },
      ]),
    );
    const l = await rejected(loadModelFile(lambda, { seed: 1 }));
    expect(l.code).toBe('INVALID_ARGUMENT');
    expect(l.message).toContain('uses a Lambda layer');

    const missing = await rejected(loadModelFile(join(tmp, 'nowhere', 'model.json')));
    expect(missing.code).toBe('NOT_FOUND');
    const ext = await rejected(
      loadModelFile(join(tmp, 'hand-hp', 'model.json').replace('.json', '')),
    );
    expect(ext.code).toBe('NOT_FOUND');
  });
});

describe('loadModelFile: a model.json with weights (fine-tuning)', () => {
  it('loads the weights Shardline saved, byte for byte, and predicts the same', async () => {
    const original = createModel('fast-cnn', {
      inputShape: [8, 8, 1],
      filters: [4],
      denseUnits: 8,
      numClasses: 3,
      seed: 5,
    });
    const dir = join(tmp, 'saved');
    await saveModel(original, dir);
    const loaded = await loadModelFile(dir, { seed: 999 });
    expect(loaded.weights).toBe('file');
    expect(loaded.seed).toBeUndefined();
    expect(weightBytes(loaded.model)).toEqual(weightBytes(original));
    const x = tf.randomUniform([2, 8, 8, 1], 0, 1, 'float32', 1);
    const before = tf.memory().numTensors;
    const same = tf.tidy(
      () =>
        tf
          .equal(original.predict(x) as tf.Tensor, loaded.model.predict(x) as tf.Tensor)
          .all()
          .dataSync()[0],
    );
    expect(same).toBe(1);
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
    original.dispose();
    loaded.model.dispose();
  });
});

const TINY_MODULE = `
export default (tf) => ({
  name: 'tiny',
  description: 'Flatten -> Dense(units, relu) -> Dense(numClasses, softmax).',
  hyperparameters: {
    inputShape: { type: 'integer[]', default: [28, 28, 1], min: 1, minLength: 3, maxLength: 3, description: 'Image shape.' },
    units: { type: 'integer', default: 8, min: 1, description: 'Hidden units.' },
    numClasses: { type: 'integer', default: 10, min: 2, description: 'Classes.' },
  },
  build: ({ inputShape, units, numClasses }, ctx) =>
    tf.sequential({
      name: 'tiny',
      layers: [
        tf.layers.flatten({ inputShape: [...inputShape], name: ctx.layerName('flatten') }),
        tf.layers.dense({ units, activation: 'relu', name: ctx.layerName('dense'),
          kernelInitializer: ctx.initializer('heNormal'), biasInitializer: 'zeros' }),
        tf.layers.dense({ units: numClasses, activation: 'softmax', name: ctx.layerName('dense'),
          kernelInitializer: ctx.initializer('glorotUniform'), biasInitializer: 'zeros' }),
      ],
    }),
});
`;

describe('loadModelFile: an ES module spec', () => {
  it('builds it with --hp style string hyperparameters, validated and seeded like the built-ins', async () => {
    const path = join(tmp, 'tiny.mjs');
    await writeFile(path, TINY_MODULE);
    const hyperparameters = { inputShape: '6x6x1', units: '16', numClasses: 4 };
    const a = await loadModelFile(path, { hyperparameters, seed: 7 });
    const b = await loadModelFile(path, { hyperparameters, seed: 7 });
    expect(a.kind).toBe('module');
    expect(a.spec?.name).toBe('tiny');
    expect(a.hyperparameters).toEqual({ inputShape: [6, 6, 1], units: 16, numClasses: 4 });
    expect(a.seed).toBe(7);
    expect(a.sha256).toBe(createHash('sha256').update(TINY_MODULE).digest('hex'));
    expect(a.model.layers.map((l) => l.outputShape)).toEqual([
      [null, 36],
      [null, 16],
      [null, 4],
    ]);
    expect(weightBytes(a.model)).toEqual(weightBytes(b.model));
    checkModelFitsData(a.model, { height: 6, width: 6, channels: 1, numClasses: 4 });
    a.model.dispose();
    b.model.dispose();

    const bad = await rejected(loadModelFile(path, { hyperparameters: { units: 'many' } }));
    expect(bad.code).toBe('INVALID_ARGUMENT');
    expect(bad.message).toContain('Hyperparameter "units" of model "tiny" must be an integer >= 1');
    const unknown = await rejected(loadModelFile(path, { hyperparameters: { unit: 3 } }));
    expect(unknown.message).toContain('Unknown option "unit" for model "tiny"');
  });

  it('refuses a module without a spec as its default export', async () => {
    const path = join(tmp, 'nothing.mjs');
    await writeFile(path, 'export const spec = 1;\n');
    const error = await rejected(loadModelFile(path));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('must default-export a model spec');
  });
});

const SCALE_PLUGIN = `
export default (tf) => {
  class ShardlineTestScale extends tf.layers.Layer {
    static className = 'ShardlineTestScale';
    constructor(config) {
      super(config);
      this.factor = config.factor ?? 1;
    }
    call(inputs) {
      return tf.tidy(() => tf.mul(Array.isArray(inputs) ? inputs[0] : inputs, this.factor));
    }
    getConfig() {
      return { ...super.getConfig(), factor: this.factor };
    }
  }
  tf.serialization.registerClass(ShardlineTestScale);
};
`;

describe('loadPlugin: custom layers', () => {
  it('a model.json with a custom layer loads once its plugin is loaded; the plugin is named by SHA-256', async () => {
    const dir = await writeJson(
      'custom',
      handModelJson([
        { class_name: 'Flatten', config: { name: 'flat', batch_input_shape: [null, 4, 4, 1] } },
        { class_name: 'ShardlineTestScale', config: { name: 'scale', factor: 2 } },
        { class_name: 'Dense', config: { name: 'out', units: 2, activation: 'softmax' } },
      ]),
    );
    const before = await rejected(loadModelFile(dir, { seed: 1 }));
    expect(before.code).toBe('INVALID_ARGUMENT');
    expect(before.message).toContain('"ShardlineTestScale", which TensorFlow.js does not know');
    expect(before.message).toContain('loadPlugin');

    const pluginPath = join(tmp, 'scale-plugin.mjs');
    await writeFile(pluginPath, SCALE_PLUGIN);
    const plugin = await loadPlugin(pluginPath);
    expect(plugin.sha256).toBe(createHash('sha256').update(SCALE_PLUGIN).digest('hex'));
    expect(plugin.registeredClasses).toEqual(['ShardlineTestScale']);
    const again = await loadPlugin(pluginPath);
    expect(again.sha256).toBe(plugin.sha256);
    expect(again.registeredClasses).toEqual([]);

    const { model } = await loadModelFile(dir, { seed: 1 });
    expect(model.layers.map((l) => l.getClassName())).toEqual([
      'Flatten',
      'ShardlineTestScale',
      'Dense',
    ]);
    checkModelFitsData(model, { height: 4, width: 4, channels: 1, numClasses: 2 });
    const y = tf.tidy(() => (model.predict(tf.ones([1, 4, 4, 1])) as tf.Tensor).arraySync());
    expect((y as number[][])[0]).toHaveLength(2);
    model.dispose();

    const missing = await rejected(loadPlugin(join(tmp, 'no-plugin.mjs')));
    expect(missing.code).toBe('NOT_FOUND');
  });
});

describe('checkModelFitsData', () => {
  const small = () =>
    createModel('fast-cnn', { filters: [2], denseUnits: 4, numClasses: 10, seed: 1 });

  it('refuses an input shape that differs from the images, naming both and the fix', () => {
    const model = small();
    const error = thrown(() =>
      checkModelFitsData(model, { height: 32, width: 32, channels: 3, numClasses: 10 }),
    );
    expect(error.code).toBe('MISMATCH');
    expect(error.message).toBe(
      "The model's input is 28x28x1 but the dataset's images are 32x32x3: rebuild the model with inputShape [32, 32, 3] or pass --image-size 28x28 --color-mode grayscale.",
    );
    const sizeOnly = thrown(() =>
      checkModelFitsData(model, { height: 32, width: 32, channels: 1, numClasses: 10 }),
    );
    expect(sizeOnly.message).toContain('or pass --image-size 28x28.');
    model.dispose();
  });

  it('refuses a flat input, suggesting a Flatten layer', () => {
    const model = tf.sequential({
      layers: [tf.layers.dense({ inputShape: [784], units: 10, activation: 'softmax' })],
    });
    const error = thrown(() =>
      checkModelFitsData(model, { height: 28, width: 28, channels: 1, numClasses: 10 }),
    );
    expect(error.code).toBe('MISMATCH');
    expect(error.message).toContain(
      "The model's input is 784 but the dataset's images are 28x28x1",
    );
    expect(error.message).toContain('a Flatten layer first');
    model.dispose();
  });

  it('refuses an output with another number of classes', () => {
    const model = small();
    const error = thrown(() =>
      checkModelFitsData(model, { height: 28, width: 28, channels: 1, numClasses: 5 }),
    );
    expect(error.code).toBe('MISMATCH');
    expect(error.message).toBe(
      "The model's output has 10 units but the dataset has 5 classes: rebuild the model with numClasses 5 (a last Dense layer of 5 units), or train on a dataset with 10 classes.",
    );
    model.dispose();
  });

  it('refuses an output of logits (no softmax)', () => {
    const model = tf.sequential({
      layers: [
        tf.layers.flatten({ inputShape: [4, 4, 1] }),
        tf.layers.dense({ units: 3, name: 'logits' }),
      ],
    });
    const error = thrown(() =>
      checkModelFitsData(model, { height: 4, width: 4, channels: 1, numClasses: 3 }),
    );
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain(
      '"logits" (Dense, activation "linear") does not end in a softmax',
    );
    expect(error.message).toContain('add tf.layers.softmax()');
    // A Softmax layer after the logits is accepted.
    const fixed = tf.sequential({
      layers: [
        tf.layers.flatten({ inputShape: [4, 4, 1] }),
        tf.layers.dense({ units: 3 }),
        tf.layers.softmax(),
      ],
    });
    checkModelFitsData(fixed, { height: 4, width: 4, channels: 1, numClasses: 3 });
    model.dispose();
    fixed.dispose();
  });

  it('refuses a graph model, a layer class tfjs cannot serialise, and a model with nothing to train', () => {
    const graph = new tf.GraphModel('unused://model.json');
    const g = thrown(() =>
      checkModelFitsData(graph, { height: 4, width: 4, channels: 1, numClasses: 3 }),
    );
    expect(g.code).toBe('INVALID_ARGUMENT');
    expect(g.message).toContain('graph model');

    class Unregistered extends tf.layers.Layer {
      static className = 'ShardlineTestUnregistered';
      override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
        return Array.isArray(inputs) ? inputs[0]! : inputs;
      }
    }
    const custom = tf.sequential({
      layers: [
        tf.layers.flatten({ inputShape: [4, 4, 1] }),
        new Unregistered({ name: 'mystery' }),
        tf.layers.dense({ units: 3, activation: 'softmax' }),
      ],
    });
    const u = thrown(() =>
      checkModelFitsData(custom, { height: 4, width: 4, channels: 1, numClasses: 3 }),
    );
    expect(u.code).toBe('INVALID_ARGUMENT');
    expect(u.message).toContain(
      'Layer "mystery" has class "ShardlineTestUnregistered", which is not registered',
    );
    custom.dispose();

    const frozen = small();
    frozen.trainable = false;
    const f = thrown(() =>
      checkModelFitsData(frozen, { height: 28, width: 28, channels: 1, numClasses: 10 }),
    );
    expect(f.code).toBe('INVALID_ARGUMENT');
    expect(f.message).toContain('no trainable weights');
    frozen.dispose();
  });
});

describe('built-in CNNs take their shape from the dataset', () => {
  it('the seed CNN builds for 32x32x3 images and 5 classes, and a forward pass gives 5 probabilities', () => {
    const model = createModel('seed-cnn', { inputShape: [32, 32, 3], numClasses: 5, seed: 1 });
    checkModelFitsData(model, { height: 32, width: 32, channels: 3, numClasses: 5 });
    const x = tf.randomUniform([2, 32, 32, 3], 0, 1, 'float32', 3);
    const before = tf.memory().numTensors;
    const sums = tf.tidy(() => (model.predict(x) as tf.Tensor).sum(1).arraySync() as number[]);
    expect(tf.memory().numTensors).toBe(before);
    expect(sums).toHaveLength(2);
    for (const s of sums) expect(s).toBeCloseTo(1, 5);
    x.dispose();
    model.dispose();
  });

  it('a 4x4 input to the seed CNN fails with the pooling layer and the side it would shrink to 0', () => {
    const error = thrown(() => createModel('seed-cnn', { inputShape: [4, 4, 1] }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('inputShape must be at least 8x8');
    expect(error.message).toContain(
      'found 4x4: the poolings would shrink the height from 1 to 0 at max_pooling2d_3 and the width from 1 to 0 at max_pooling2d_3',
    );
    const wide = thrown(() => createModel('seed-cnn', { inputShape: [32, 2, 3] }));
    expect(wide.message).toContain('the width from 1 to 0 at max_pooling2d_2');
    expect(wide.message).not.toContain('the height from');
  });
});
