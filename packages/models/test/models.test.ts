import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createModel,
  deriveSeed,
  formatSummary,
  getModelProvenance,
  summary,
} from '../src/index.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** Runs `fn` on a fresh model and disposes it, so tests do not pile up variables. */
function withModel<T>(model: tf.LayersModel, fn: (m: tf.LayersModel) => T): T {
  try {
    return fn(model);
  } finally {
    model.dispose();
  }
}

// The seed CNN's summary from docs/design.md, layer by layer.
const SEED_CNN_TABLE = [
  ['conv2d_1', 'Conv2D', [null, 28, 28, 64], 3_200],
  ['max_pooling2d_1', 'MaxPooling2D', [null, 14, 14, 64], 0],
  ['conv2d_2', 'Conv2D', [null, 14, 14, 128], 73_856],
  ['conv2d_3', 'Conv2D', [null, 14, 14, 128], 147_584],
  ['max_pooling2d_2', 'MaxPooling2D', [null, 7, 7, 128], 0],
  ['conv2d_4', 'Conv2D', [null, 7, 7, 256], 295_168],
  ['conv2d_5', 'Conv2D', [null, 7, 7, 256], 590_080],
  ['max_pooling2d_3', 'MaxPooling2D', [null, 3, 3, 256], 0],
  ['flatten_1', 'Flatten', [null, 2304], 0],
  ['dense_1', 'Dense', [null, 128], 295_040],
  ['dense_2', 'Dense', [null, 64], 8_256],
  ['dense_3', 'Dense', [null, 10], 650],
] as const;

describe('seed-cnn', () => {
  it('has exactly the summary of the design, layer by layer, 1,413,834 parameters all trainable', () => {
    const s = withModel(createModel('seed-cnn', { seed: 1 }), summary);
    expect(s.name).toBe('seed-cnn');
    expect(s.layers.map((l) => [l.name, l.className, l.outputShape, l.params])).toEqual(
      SEED_CNN_TABLE,
    );
    expect(s.totalParams).toBe(1_413_834);
    expect(s.trainableParams).toBe(1_413_834);
    expect(s.nonTrainableParams).toBe(0);
  });

  it('uses ReLU everywhere but the softmax output, and padding "same" in every conv', () => {
    withModel(createModel('seed-cnn', { seed: 1 }), (model) => {
      const configs = model.layers.map(
        (l) => ({ cls: l.getClassName(), ...l.getConfig() }) as Record<string, unknown>,
      );
      const withActivation = configs.filter((c) => 'activation' in c);
      expect(withActivation.map((c) => c.activation)).toEqual([
        ...Array(7).fill('relu'),
        'softmax',
      ]);
      expect(configs.filter((c) => c.cls === 'Conv2D').map((c) => c.padding)).toEqual(
        Array(5).fill('same'),
      );
    });
  });

  it('adds Dropout after the two hidden dense layers only when dropout > 0, without changing parameters', () => {
    const s = withModel(createModel('seed-cnn', { seed: 1, dropout: 0.5 }), summary);
    expect(s.layers.slice(9).map((l) => l.name)).toEqual([
      'dense_1',
      'dropout_1',
      'dense_2',
      'dropout_2',
      'dense_3',
    ]);
    expect(s.totalParams).toBe(1_413_834);
  });

  it('follows inputShape and numClasses', () => {
    const s = withModel(
      createModel('seed-cnn', { seed: 1, inputShape: [32, 32, 3], numClasses: 100 }),
      summary,
    );
    expect(s.layers[0]?.params).toBe(7 * 7 * 3 * 64 + 64);
    expect(s.layers[8]?.outputShape).toEqual([null, 4 * 4 * 256]);
    expect(s.layers.at(-1)?.outputShape).toEqual([null, 100]);
  });
});

describe('parameter counts', () => {
  it('mlp: 235,500 + 30,100 + 1,010 = 266,610', () => {
    const s = withModel(createModel('mlp', { seed: 1 }), summary);
    expect(s.layers.map((l) => [l.name, l.outputShape, l.params])).toEqual([
      ['flatten_1', [null, 784], 0],
      ['dense_1', [null, 300], 235_500],
      ['dense_2', [null, 100], 30_100],
      ['dense_3', [null, 10], 1_010],
    ]);
    expect(s.totalParams).toBe(266_610);
  });

  it('mlp: hiddenUnits sets the hidden layers, [] is softmax regression', () => {
    expect(withModel(createModel('mlp', { seed: 1, hiddenUnits: [64] }), summary).totalParams).toBe(
      784 * 64 + 64 + 64 * 10 + 10,
    );
    expect(withModel(createModel('mlp', { seed: 1, hiddenUnits: [] }), summary).totalParams).toBe(
      7_850,
    );
  });

  it('fast-cnn: 320 + 18,496 + 401,536 + 1,290 = 421,642', () => {
    const s = withModel(createModel('fast-cnn', { seed: 1 }), summary);
    expect(s.layers.map((l) => [l.name, l.outputShape, l.params])).toEqual([
      ['conv2d_1', [null, 28, 28, 32], 320],
      ['max_pooling2d_1', [null, 14, 14, 32], 0],
      ['conv2d_2', [null, 14, 14, 64], 18_496],
      ['max_pooling2d_2', [null, 7, 7, 64], 0],
      ['flatten_1', [null, 3136], 0],
      ['dense_1', [null, 128], 401_536],
      ['dense_2', [null, 10], 1_290],
    ]);
    expect(s.totalParams).toBe(421_642);
  });

  it('fast-cnn: filters and denseUnits set the blocks and the hidden layer', () => {
    const s = withModel(
      createModel('fast-cnn', { seed: 1, filters: [8, 16, 32], denseUnits: 16 }),
      summary,
    );
    expect(s.layers.filter((l) => l.className === 'Conv2D').map((l) => l.params)).toEqual([
      80, 1_168, 4_640,
    ]);
    expect(s.layers.find((l) => l.name === 'flatten_1')?.outputShape).toEqual([null, 3 * 3 * 32]);
    expect(s.layers.find((l) => l.name === 'dense_1')?.params).toBe(288 * 16 + 16);
  });

  it('counts non-trainable weights separately', () => {
    withModel(createModel('mlp', { seed: 1 }), (model) => {
      model.layers[1]!.trainable = false;
      const s = summary(model);
      expect(s.nonTrainableParams).toBe(235_500);
      expect(s.trainableParams).toBe(31_110);
      expect(s.totalParams).toBe(266_610);
    });
  });
});

describe('seeded initialisation', () => {
  const weightsOf = (model: tf.LayersModel) =>
    model.getWeights().map((w) => Array.from(w.dataSync()));

  it.each(['seed-cnn', 'mlp', 'fast-cnn'] as const)(
    '%s: the same seed gives identical weights',
    (name) => {
      const a = createModel(name, { seed: 7 });
      const b = createModel(name, { seed: 7 });
      try {
        expect(weightsOf(b)).toEqual(weightsOf(a));
      } finally {
        a.dispose();
        b.dispose();
      }
    },
  );

  it('different seeds give different weights, and every kernel is initialised differently', () => {
    const a = createModel('fast-cnn', { seed: 7 });
    const b = createModel('fast-cnn', { seed: 8 });
    try {
      const wa = weightsOf(a);
      const wb = weightsOf(b);
      // Kernels are at even indices (kernel, bias per layer); biases start at zero.
      for (let i = 0; i < wa.length; i += 2) expect(wa[i]).not.toEqual(wb[i]);
      expect(wa[1]!.every((v) => v === 0)).toBe(true);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('kernels have the scale of their initialiser (He-normal for ReLU layers)', () => {
    withModel(createModel('mlp', { seed: 3 }), (model) => {
      const kernel = Array.from(model.layers[1]!.getWeights()[0]!.dataSync());
      const std = Math.sqrt(kernel.reduce((s, v) => s + v * v, 0) / kernel.length);
      // Truncated normal with stddev sqrt(2 / 784) = 0.0505, truncation shrinks it by about 12%.
      expect(std).toBeGreaterThan(0.04);
      expect(std).toBeLessThan(0.052);
    });
  });

  it('without a seed, draws a random one and records it, so the model can be rebuilt', () => {
    const a = createModel('mlp', { hiddenUnits: [8] });
    const seed = getModelProvenance(a)?.seed;
    expect(seed).toBeTypeOf('number');
    const b = createModel('mlp', { hiddenUnits: [8], seed: seed! });
    try {
      expect(weightsOf(b)).toEqual(weightsOf(a));
      expect(getModelProvenance(b)).toEqual({
        model: 'mlp',
        seed,
        hyperparameters: { inputShape: [28, 28, 1], hiddenUnits: [8], numClasses: 10, dropout: 0 },
      });
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('derived seeds are distinct, never 0 (which tfjs would treat as "unseeded"), and stable', () => {
    const seeds = new Set<number>();
    for (const seed of [0, 1, 7, 2 ** 32, 2 ** 40 + 3])
      for (let i = 0; i < 100; i++) seeds.add(deriveSeed(seed, i));
    expect(seeds.size).toBe(500);
    expect(seeds.has(0)).toBe(false);
    expect(deriveSeed(7, 0)).toBe(deriveSeed(7, 0));
  });
});

describe('resources', () => {
  it.each(['seed-cnn', 'mlp', 'fast-cnn'] as const)(
    '%s: building and disposing leaks no tensors',
    (name) => {
      const before = tf.memory().numTensors;
      createModel(name, { seed: 1 }).dispose();
      expect(tf.memory().numTensors).toBe(before);
    },
  );
});

describe('layer names', () => {
  it('do not depend on how many models the process made before', () => {
    const first = createModel('fast-cnn', { seed: 1 });
    const extra = [
      createModel('mlp', { seed: 1 }),
      tf.sequential({ layers: [tf.layers.dense({ units: 1, inputShape: [1] })] }),
    ];
    const second = createModel('fast-cnn', { seed: 1 });
    try {
      expect(second.layers.map((l) => l.name)).toEqual(first.layers.map((l) => l.name));
      // Weight names as saved (originalName) are the same too: conv2d_1/kernel, not conv2d_1/kernel_1.
      const names = (m: tf.LayersModel) => m.weights.map((w) => w.originalName);
      expect(names(second)).toEqual(names(first));
      expect(names(first)[0]).toBe('conv2d_1/kernel');
    } finally {
      for (const m of [first, second, ...extra]) m.dispose();
    }
  });
});

describe('formatSummary', () => {
  it('prints the Keras table with the totals', () => {
    const text = withModel(createModel('seed-cnn', { seed: 1 }), (m) => formatSummary(m));
    const lines = text.split('\n');
    expect(lines[0]).toBe('Model: "seed-cnn"');
    expect(lines[2]).toMatch(/^ Layer \(type\) +Output Shape +Param #$/);
    expect(lines).toContainEqual(
      expect.stringMatching(/^ conv2d_1 \(Conv2D\) +\(None, 28, 28, 64\) +3,200$/),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(/^ max_pooling2d_3 \(MaxPooling2D\) +\(None, 3, 3, 256\) +0$/),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(/^ flatten_1 \(Flatten\) +\(None, 2304\) +0$/),
    );
    // Columns line up: every row's shape starts where the header's "Output Shape" does.
    const column = lines[2]!.indexOf('Output Shape');
    for (const line of lines.filter((l) => l.includes('(None')))
      expect(line.indexOf('(None')).toBe(column);
    expect(text).toContain(
      'Total params: 1,413,834\nTrainable params: 1,413,834\nNon-trainable params: 0',
    );
    expect(lines.filter((l) => l.includes('(Conv2D)'))).toHaveLength(5);
  });

  it('summarises functional models too: input layer, shared layers counted once, several outputs', () => {
    const input = tf.input({ shape: [4], name: 'in' });
    const shared = tf.layers.dense({ units: 4, name: 'shared' });
    const a = shared.apply(input) as tf.SymbolicTensor;
    const b = shared.apply(a) as tf.SymbolicTensor;
    const head = tf.layers.dense({ units: 2, name: 'head' }).apply(b) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: [b, head], name: 'functional' });
    const s = withModel(model, summary);
    expect(s.layers.map((l) => [l.name, l.className, l.params])).toEqual([
      ['in', 'InputLayer', 0],
      ['shared', 'Dense', 20],
      ['head', 'Dense', 10],
    ]);
    expect(s.totalParams).toBe(30);
    expect(formatSummary(s)).toContain('Total params: 30');
  });

  it('widens columns for long names instead of cutting them', () => {
    const model = tf.sequential({
      name: 'long',
      layers: [
        tf.layers.dense({
          units: 2,
          inputShape: [3],
          name: 'a_very_long_layer_name_that_does_not_fit',
        }),
      ],
    });
    const text = withModel(model, (m) => formatSummary(summary(m)));
    expect(text).toContain(' a_very_long_layer_name_that_does_not_fit (Dense) (None, 2)');
  });
});
