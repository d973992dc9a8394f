import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeShapesFolder } from '@shardline/datasets';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killStarted, startProcess, within, workerCli } from './processes.js';
import { cliPath, runCli } from './runCli.js';

let root: string;
let shapes: string;
let cache: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'shardline-model-files-'));
  shapes = join(root, 'shapes');
  cache = join(root, 'cache');
  await writeShapesFolder(shapes, { perClass: 60, size: 16, seed: 5 });
});
afterAll(async () => {
  killStarted();
  await rm(root, { recursive: true, force: true });
});

const RUN_MS = 120_000;

/** A Keras-style Sequential CNN for 16x16 RGB and 4 classes, as tensorflowjs_converter writes it, without weights. */
const HAND_MODEL_JSON = {
  format: 'layers-model',
  generatedBy: 'keras v2.15.0',
  convertedBy: 'TensorFlow.js Converter v4.22.0',
  modelTopology: {
    class_name: 'Sequential',
    keras_version: '2.15.0',
    backend: 'tensorflow',
    config: {
      name: 'hand_written_cnn',
      layers: [
        {
          class_name: 'Conv2D',
          config: {
            name: 'conv',
            batch_input_shape: [null, 16, 16, 3],
            filters: 8,
            kernel_size: [3, 3],
            padding: 'same',
            activation: 'relu',
          },
        },
        { class_name: 'MaxPooling2D', config: { name: 'pool', pool_size: [2, 2] } },
        { class_name: 'Flatten', config: { name: 'flat' } },
        { class_name: 'Dense', config: { name: 'out', units: 4, activation: 'softmax' } },
      ],
    },
  },
};

/** A plugin registering a custom layer: multiplies its input by a constant. */
const SCALE_PLUGIN = `export default (tf) => {
  class E2eScale extends tf.layers.Layer {
    static className = 'E2eScale';
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
  tf.serialization.registerClass(E2eScale);
};
`;

/** A model spec in code that uses the plugin's layer; inputShape and numClasses come from the data. */
const MODULE_MODEL = `export default (tf) => ({
  name: 'scaled-cnn',
  description: 'Scale -> Conv2D -> MaxPool -> Flatten -> Dense(softmax).',
  hyperparameters: {
    inputShape: { type: 'integer[]', default: [28, 28, 1], min: 1, minLength: 3, maxLength: 3, description: 'Image shape.' },
    numClasses: { type: 'integer', default: 10, min: 2, description: 'Classes.' },
    filters: { type: 'integer', default: 4, min: 1, description: 'Convolution filters.' },
  },
  build: ({ inputShape, numClasses, filters }, ctx) => {
    const [Scale] = tf.serialization.SerializationMap.getMap().classNameMap.E2eScale;
    return tf.sequential({
      name: 'scaled_cnn',
      layers: [
        new Scale({ inputShape: [...inputShape], factor: 0.5, name: ctx.layerName('scale') }),
        tf.layers.conv2d({ filters, kernelSize: 3, padding: 'same', activation: 'relu',
          name: ctx.layerName('conv'), kernelInitializer: ctx.initializer('heNormal') }),
        tf.layers.maxPooling2d({ poolSize: 2, name: ctx.layerName('pool') }),
        tf.layers.flatten({ name: ctx.layerName('flatten') }),
        tf.layers.dense({ units: numClasses, activation: 'softmax', name: ctx.layerName('dense'),
          kernelInitializer: ctx.initializer('glorotUniform') }),
      ],
    });
  },
});
`;

function trainFlags(model: string, out: string, extra: string[] = []): string[] {
  return [
    'train',
    '--model',
    model,
    '--dataset',
    shapes,
    '--validation-split',
    '0.25',
    '--epochs',
    '2',
    '--batch-size',
    '16',
    '--listen',
    '127.0.0.1:0',
    '--log-format',
    'json',
    '--out',
    out,
    ...extra,
  ];
}

describe('models from files', () => {
  it('trains a hand-written model.json (no weights) with 2 local workers, seeded from --seed', async () => {
    const dir = join(root, 'hand');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'model.json'), JSON.stringify(HAND_MODEL_JSON));
    const run = await runCli(
      trainFlags(join(dir, 'model.json'), join(root, 'hand-run'), ['--local-workers', '2']),
      { XDG_CACHE_HOME: cache },
    );
    expect(run.code, run.stderr).toBe(0);
    const started = run.events()[0]!;
    expect(started).toMatchObject({
      model: 'model.json',
      parameters: 8 * 27 + 8 + 8 * 8 * 8 * 4 + 4,
    });
    expect(run.events().at(-1)).toMatchObject({ event: 'done', workers: 2 });
    const saved = JSON.parse(await readFile(join(root, 'hand-run', 'model', 'model.json'), 'utf8'));
    expect(saved.modelTopology.config.name).toBe('hand_written_cnn');
  });

  it('trains an ES module model with a custom layer when --plugin is given to the coordinator and the workers', async () => {
    const plugin = join(root, 'e2e-scale.mjs');
    const module = join(root, 'scaled-cnn.mjs');
    await writeFile(plugin, SCALE_PLUGIN);
    await writeFile(module, MODULE_MODEL);
    const out = join(root, 'module-run');
    const coordinator = startProcess(
      cliPath,
      trainFlags(module, out, [
        '--plugin',
        plugin,
        '--hp',
        'filters=6',
        '--local-workers',
        '1',
        '--min-workers',
        '2',
      ]),
      { env: { XDG_CACHE_HOME: cache } },
    );
    const started = await within(coordinator.event('started'), RUN_MS, 'coordinator start');
    expect(started).toMatchObject({ model: 'scaled-cnn.mjs' });

    // A remote worker without the plugin is refused at Join, with the file and the flag to pass.
    const without = startProcess(workerCli, [
      '--coordinator',
      String(started.listen),
      '--name',
      'no-plugin',
      '--backend',
      'wasm',
    ]);
    expect(await within(without.closed, RUN_MS, 'worker without plugin')).toBe(1);
    expect(without.stderr()).toContain("This job's model needs the plugin e2e-scale.mjs");
    expect(without.stderr()).toContain('registering E2eScale');
    expect(without.stderr()).toContain('--plugin <path to e2e-scale.mjs>');

    const withPlugin = startProcess(workerCli, [
      '--coordinator',
      String(started.listen),
      '--name',
      'with-plugin',
      '--backend',
      'wasm',
      '--plugin',
      plugin,
    ]);
    expect(await within(coordinator.closed, RUN_MS, 'module run'), coordinator.stderr()).toBe(0);
    expect(await withPlugin.closed, withPlugin.stderr()).toBe(0);
    const done = coordinator.events.at(-1)!;
    expect(done).toMatchObject({ event: 'done', workers: 2 });
    const saved = JSON.parse(await readFile(join(out, 'model', 'model.json'), 'utf8'));
    expect(JSON.stringify(saved.modelTopology)).toContain('E2eScale');
    expect(saved.userDefinedMetadata.run.plugins).toEqual([
      expect.objectContaining({ name: 'e2e-scale.mjs', path: plugin }),
    ]);
  });

  it('refuses, before any step, a model that does not fit the data, saying what to change', async () => {
    const dir = join(root, 'misfit');
    await mkdir(dir, { recursive: true });
    const misfit = structuredClone(HAND_MODEL_JSON);
    misfit.modelTopology.config.layers[0]!.config.batch_input_shape = [null, 28, 28, 1];
    await writeFile(join(dir, 'model.json'), JSON.stringify(misfit));
    const run = await runCli(trainFlags(dir, join(root, 'misfit-run'), ['--in-process']), {
      XDG_CACHE_HOME: cache,
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      "The model's input is 28x28x1 but the dataset's images are 16x16x3: rebuild the model with inputShape [16, 16, 3] or pass --image-size 28x28 --color-mode grayscale.",
    );
  });
});
