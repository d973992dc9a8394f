import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasErrorCode, type ShardlineError, type ShardlineErrorCode } from '@shardline/core';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFilesAtomically } from '../src/atomicWrite.js';
import {
  createFileLoadHandler,
  createFileSaveHandler,
  createModel,
  getModelProvenance,
  loadModel,
  type ModelJson,
  saveModel,
  summary,
} from '../src/index.js';

let root: string;
let images: tf.Tensor;

beforeAll(async () => {
  await tf.setBackend('cpu');
  root = await mkdtemp(join(tmpdir(), 'shardline-models-'));
  images = tf.randomUniform([2, 28, 28, 1], 0, 1, 'float32', 42);
});

afterAll(async () => {
  images.dispose();
  await rm(root, { recursive: true, force: true });
});

let dirCount = 0;
const freshDir = () => join(root, `model-${++dirCount}`);

/** The ShardlineError with `code` that `promise` rejects with. */
async function rejection(
  promise: Promise<unknown>,
  code: ShardlineErrorCode,
): Promise<ShardlineError> {
  try {
    await promise;
  } catch (error) {
    if (hasErrorCode(error, code)) return error;
    throw error;
  }
  throw new Error(`expected a ${code} error, the promise resolved`);
}

function predict(model: tf.LayersModel): number[] {
  return tf.tidy(() => Array.from((model.predict(images) as tf.Tensor).dataSync()));
}

const weightsByName = (model: tf.LayersModel) =>
  Object.fromEntries(model.weights.map((w) => [w.originalName, Array.from(w.read().dataSync())]));

async function readJson(dir: string): Promise<ModelJson> {
  return JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as ModelJson;
}

/** A small saved model to break in the error tests. */
async function savedMlp(): Promise<string> {
  const dir = freshDir();
  const model = createModel('mlp', { hiddenUnits: [8], seed: 3 });
  await saveModel(model, dir);
  model.dispose();
  return dir;
}

describe('save and load round trip', () => {
  it('seed-cnn loads with the same layers, weights and predictions, and metadata', async () => {
    const dir = freshDir();
    const model = createModel('seed-cnn', { seed: 11 });
    const before = predict(model);
    const tensors = tf.memory().numTensors;
    const info = await saveModel(model, dir, { metadata: { epoch: 30, note: 'round trip' } });
    expect(tf.memory().numTensors).toBe(tensors);
    expect(info.weightBytes).toBe(1_413_834 * 4);
    expect(info.weightsPath).toBe(join(dir, 'weights.bin'));

    const loaded = await loadModel(dir);
    try {
      expect(summary(loaded)).toEqual(summary(model));
      expect(weightsByName(loaded)).toEqual(weightsByName(model));
      expect(predict(loaded)).toEqual(before);
      expect(loaded.getUserDefinedMetadata()).toMatchObject({ epoch: 30, note: 'round trip' });
      expect(getModelProvenance(loaded)).toEqual(getModelProvenance(model));
      expect(getModelProvenance(loaded)?.seed).toBe(11);
    } finally {
      loaded.dispose();
      model.dispose();
    }
    expect(tf.memory().numTensors).toBe(tensors - model.weights.length);
  });

  it('writes the TensorFlow.js layers format: model.json + weights.bin, and nothing else', async () => {
    const dir = freshDir();
    const model = createModel('fast-cnn', { seed: 2 });
    const info = await saveModel(model, dir);
    const json = await readJson(dir);
    expect(json.format).toBe('layers-model');
    expect(json.generatedBy).toMatch(/^TensorFlow\.js tfjs-layers v4\./);
    expect(json.convertedBy).toBeNull();
    expect(json.modelTopology).toMatchObject({ class_name: 'Sequential' });
    expect(json.weightsManifest).toHaveLength(1);
    expect(json.weightsManifest[0]?.paths).toEqual(['weights.bin']);
    expect(json.weightsManifest[0]?.weights.map((w) => [w.name, w.shape, w.dtype])).toEqual(
      model.weights.map((w) => [w.originalName, w.shape, 'float32']),
    );
    expect(json.weightsManifest[0]?.sha256).toBe(info.weightsSha256);
    expect((await readFile(join(dir, 'weights.bin'))).byteLength).toBe(421_642 * 4);
    expect((await readdir(dir)).sort()).toEqual(['model.json', 'weights.bin']);
    model.dispose();
  });

  it("loads unchanged with stock tf.loadLayersModel from the files' contents (tf.io.fromMemory)", async () => {
    const dir = freshDir();
    const model = createModel('fast-cnn', { seed: 5 });
    await saveModel(model, dir);
    const json = await readJson(dir);
    const bin = await readFile(join(dir, 'weights.bin'));
    const weightData = bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength);
    const loaded = await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: json.modelTopology,
        weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
        weightData,
      }),
    );
    expect(predict(loaded)).toEqual(predict(model));
    loaded.dispose();
    model.dispose();
  });

  it('loads unchanged with stock tf.loadLayersModel over HTTP, as a browser would', async () => {
    const dir = freshDir();
    const model = createModel('mlp', { seed: 6 });
    await saveModel(model, dir);
    const server: Server = createServer((request, response) => {
      readFile(join(dir, (request.url ?? '/').slice(1)))
        .then((body) => response.writeHead(200).end(body))
        .catch(() => response.writeHead(404).end());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const loaded = await tf.loadLayersModel(`http://127.0.0.1:${port}/model.json`);
      expect(weightsByName(loaded)).toEqual(weightsByName(model));
      expect(predict(loaded)).toEqual(predict(model));
      loaded.dispose();
    } finally {
      await new Promise((resolve) => server.close(resolve));
      model.dispose();
    }
  });

  it('works as raw handlers with model.save and tf.loadLayersModel, and accepts the model.json path', async () => {
    const dir = freshDir();
    const model = createModel('mlp', { hiddenUnits: [16], seed: 8 });
    const result = await model.save(createFileSaveHandler(dir, { metadata: { run: 'abc' } }));
    expect(result.modelArtifactsInfo.weightDataBytes).toBe(model.countParams() * 4);
    const viaHandler = await tf.loadLayersModel(createFileLoadHandler(dir));
    const viaJsonPath = await loadModel(join(dir, 'model.json'));
    expect(predict(viaHandler)).toEqual(predict(model));
    expect(predict(viaJsonPath)).toEqual(predict(model));
    expect(viaHandler.getUserDefinedMetadata()).toMatchObject({ run: 'abc' });
    for (const m of [viaHandler, viaJsonPath, model]) m.dispose();
  });

  it('keeps the training config, and the optimizer state when asked', async () => {
    const dir = freshDir();
    const model = createModel('mlp', { hiddenUnits: [8], seed: 9 });
    model.compile({
      optimizer: tf.train.adam(1e-3),
      loss: 'sparseCategoricalCrossentropy',
      metrics: ['accuracy'],
    });
    const labels = tf.tensor1d([1, 7], 'float32');
    await model.fit(images, labels, { epochs: 1, verbose: 0 });
    labels.dispose();
    await saveModel(model, dir, { includeOptimizer: true });
    expect((await readJson(dir)).trainingConfig).toMatchObject({
      loss: 'sparse_categorical_crossentropy',
    });
    const loaded = await loadModel(dir);
    expect(loaded.optimizer).toBeDefined();
    const stateOf = async (m: tf.LayersModel) =>
      (await m.optimizer.getWeights()).map((w) => Array.from(w.tensor.dataSync()));
    expect(await stateOf(loaded)).toEqual(await stateOf(model));
    expect(predict(loaded)).toEqual(predict(model));
    loaded.dispose();
    model.dispose();
  });

  it('creates missing directories and replaces a model saved earlier', async () => {
    const dir = join(freshDir(), 'nested', 'deeper');
    const first = createModel('mlp', { hiddenUnits: [4], seed: 1 });
    const second = createModel('mlp', { hiddenUnits: [4], seed: 2 });
    await saveModel(first, dir);
    await saveModel(second, dir);
    const loaded = await loadModel(dir);
    expect(predict(loaded)).toEqual(predict(second));
    expect(predict(loaded)).not.toEqual(predict(first));
    expect((await readdir(dir)).sort()).toEqual(['model.json', 'weights.bin']);
    for (const m of [first, second, loaded]) m.dispose();
  });
});

describe('load errors say what was expected, what was found, what to do', () => {
  it('missing directory: NOT_FOUND', async () => {
    const error = await rejection(loadModel(join(root, 'no-such-model')), 'NOT_FOUND');
    expect(error.message).toContain(
      'no-such-model does not exist: expected a directory with model.json and weights.bin',
    );
  });

  it('directory without model.json: NOT_FOUND, listing what is there', async () => {
    const dir = freshDir();
    await mkdir(dir);
    await writeFile(join(dir, 'notes.txt'), 'x');
    const error = await rejection(loadModel(dir), 'NOT_FOUND');
    expect(error.message).toContain('has no model.json');
    expect(error.message).toContain('it holds notes.txt');
  });

  it('a file that is not model.json: INVALID_ARGUMENT', async () => {
    const dir = await savedMlp();
    await rejection(loadModel(join(dir, 'weights.bin')), 'INVALID_ARGUMENT');
  });

  it('bad JSON: DATA_CORRUPT', async () => {
    const dir = await savedMlp();
    const text = await readFile(join(dir, 'model.json'), 'utf8');
    await writeFile(join(dir, 'model.json'), text.slice(0, 100));
    const error = await rejection(loadModel(dir), 'DATA_CORRUPT');
    expect(error.message).toMatch(/model\.json in .* is not valid JSON \(.*; 100 characters\)/);
    expect(error.message).toContain('save the model again');
  });

  it('JSON that is not a layers model: DATA_CORRUPT or INVALID_ARGUMENT for a graph model', async () => {
    const dir = await savedMlp();
    await writeFile(join(dir, 'model.json'), JSON.stringify({ weightsManifest: [] }));
    expect((await rejection(loadModel(dir), 'DATA_CORRUPT')).message).toContain(
      'expected a "modelTopology" object',
    );
    await writeFile(
      join(dir, 'model.json'),
      JSON.stringify({ format: 'graph-model', modelTopology: {}, weightsManifest: [] }),
    );
    expect((await rejection(loadModel(dir), 'INVALID_ARGUMENT')).message).toContain(
      'tf.loadGraphModel',
    );
  });

  it('missing weights.bin: NOT_FOUND with the size the manifest expects', async () => {
    const dir = await savedMlp();
    await rm(join(dir, 'weights.bin'));
    const error = await rejection(loadModel(dir), 'NOT_FOUND');
    const bytes = (784 * 8 + 8 + 8 * 10 + 10) * 4;
    expect(error.message).toContain(`weights.bin is missing from ${dir}`);
    expect(error.message).toContain(`(${bytes.toLocaleString('en-US')} bytes of weights in all)`);
  });

  it('short weights.bin: DATA_CORRUPT, expected N bytes per manifest, found M', async () => {
    const dir = await savedMlp();
    const bin = await readFile(join(dir, 'weights.bin'));
    await writeFile(join(dir, 'weights.bin'), bin.subarray(0, 1024));
    const error = await rejection(loadModel(dir), 'DATA_CORRUPT');
    expect(error.message).toContain(
      `weights.bin in ${dir} is truncated: expected 25,480 bytes per model.json's weightsManifest, found 1,024.`,
    );
    expect(error.details).toMatchObject({ expectedBytes: 25_480, foundBytes: 1_024 });
    await writeFile(join(dir, 'weights.bin'), Buffer.concat([bin, Buffer.alloc(4)]));
    expect((await rejection(loadModel(dir), 'DATA_CORRUPT')).message).toContain(
      'is too long: expected 25,480',
    );
  });

  it('weights.bin from another save (same size): DATA_CORRUPT by checksum', async () => {
    const dir = await savedMlp();
    const other = freshDir();
    const model = createModel('mlp', { hiddenUnits: [8], seed: 4 });
    await saveModel(model, other);
    model.dispose();
    await writeFile(join(dir, 'weights.bin'), await readFile(join(other, 'weights.bin')));
    const error = await rejection(loadModel(dir), 'DATA_CORRUPT');
    expect(error.message).toContain('does not match model.json: expected SHA-256');
    expect(error.message).toContain('come from different saves');
  });

  it('a manifest pointing outside the directory is refused', async () => {
    const dir = await savedMlp();
    const json = await readJson(dir);
    json.weightsManifest[0]!.paths = ['../model-1/weights.bin'];
    await writeFile(join(dir, 'model.json'), JSON.stringify(json));
    expect((await rejection(loadModel(dir), 'DATA_CORRUPT')).message).toContain(
      "outside the model's directory",
    );
  });

  it('a topology tfjs cannot build: DATA_CORRUPT naming the cause', async () => {
    const dir = await savedMlp();
    const json = await readJson(dir);
    const topology = json.modelTopology as { config: { layers: { class_name: string }[] } };
    topology.config.layers[1]!.class_name = 'NoSuchLayer';
    await writeFile(join(dir, 'model.json'), JSON.stringify(json));
    const error = await rejection(loadModel(dir), 'DATA_CORRUPT');
    expect(error.message).toContain('could not be built');
    expect(error.message).toContain('NoSuchLayer');
  });
});

describe('atomic saves', () => {
  it('a save that fails after writing its files, before committing, leaves the previous model intact', async () => {
    const dir = freshDir();
    const model = createModel('mlp', { hiddenUnits: [8], seed: 12 });
    await saveModel(model, dir);
    const before = {
      json: await readFile(join(dir, 'model.json')),
      bin: await readFile(join(dir, 'weights.bin')),
    };
    const failure = writeFilesAtomically(
      dir,
      [
        { name: 'weights.bin', data: new Uint8Array(16) },
        { name: 'model.json', data: '{"half":' },
      ],
      {
        beforeCommit: (temps) => {
          expect(temps).toHaveLength(2);
          throw new Error('disk unplugged');
        },
      },
    );
    const error = await rejection(failure, 'INTERNAL');
    expect(error.message).toContain('disk unplugged');
    expect(error.message).toContain('Files already there were left unchanged.');
    expect(await readFile(join(dir, 'model.json'))).toEqual(before.json);
    expect(await readFile(join(dir, 'weights.bin'))).toEqual(before.bin);
    expect((await readdir(dir)).sort()).toEqual(['model.json', 'weights.bin']);
    const loaded = await loadModel(dir);
    expect(predict(loaded)).toEqual(predict(model));
    loaded.dispose();
    model.dispose();
  });

  it('a save that fails while serialising leaves the previous model intact', async () => {
    const dir = freshDir();
    const model = createModel('mlp', { hiddenUnits: [8], seed: 13 });
    await saveModel(model, dir);
    const json = await readFile(join(dir, 'model.json'));
    const error = await rejection(
      saveModel(model, dir, { metadata: { step: 10n } }),
      'INVALID_ARGUMENT',
    );
    expect(error.message).toContain('must be JSON-serialisable');
    expect(await readFile(join(dir, 'model.json'))).toEqual(json);
    expect((await readdir(dir)).sort()).toEqual(['model.json', 'weights.bin']);
    model.dispose();
  });

  it('a save the file system refuses reports the errno and writes nothing', async () => {
    const file = join(freshDir());
    await writeFile(file, 'not a directory');
    const model = createModel('mlp', { hiddenUnits: [2], seed: 1 });
    const error = await rejection(saveModel(model, join(file, 'model')), 'INTERNAL');
    expect(error.details.errno).toBe('ENOTDIR');
    expect(error.message).toContain('Files already there were left unchanged.');
    model.dispose();
  });

  it('leftovers of a crashed save do not disturb loading or the next save', async () => {
    const dir = await savedMlp();
    await writeFile(join(dir, '.model.json.0123456789ab.tmp'), '{"half":');
    await writeFile(join(dir, '.weights.bin.0123456789ab.tmp'), new Uint8Array(3));
    const loaded = await loadModel(dir);
    await saveModel(loaded, dir);
    const again = await loadModel(dir);
    expect(predict(again)).toEqual(predict(loaded));
    loaded.dispose();
    again.dispose();
  });
});
