// `evaluate` and `predict` on real files: a small model saved as a run saves it, image folders of
// real PNGs, Fashion-MNIST from /usr/share/datasets. Every number is checked against
// model.predict on the same pixels, computed here independently of the code under test.
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { createLogger } from '@shardline/core';
import { fashionMnist, loadDataset, loadImageFolder } from '@shardline/datasets';
import { createModel, loadPlugin, saveModel } from '@shardline/models';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluateSavedModel } from '../src/evaluate.js';
import { predictImages } from '../src/predict.js';
import { runCli } from '../src/program.js';

const SIZE = 8;
const PER_CLASS = 8;
// Not in code-point order (blue, green, red), so a loader left to sort the folders would put
// labels out of line with the model's outputs.
const CLASSES = ['red', 'green', 'blue'] as const;
const BASE: Record<(typeof CLASSES)[number], readonly [number, number, number]> = {
  red: [200, 40, 40],
  green: [40, 200, 40],
  blue: [40, 40, 200],
};

// PNG by hand (node:zlib for deflate): the coordinator does not depend on sharp, and a file
// written here independently of the decoder is a fairer test of it.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function pngChunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const out = Buffer.alloc(body.length + 8);
  out.writeUInt32BE(data.length, 0);
  body.copy(out, 4);
  out.writeUInt32BE(crc32(body), body.length + 4);
  return out;
}
/** An 8-bit RGB PNG of `rgb` (HWC). */
function encodePng(width: number, height: number, rgb: Uint8Array): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // bit depth 8, colour type RGB, no interlace
  const raw = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y++) {
    raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (1 + width * 3) + 1);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', header),
    pngChunk('IDAT', deflateSync(raw)),
    pngChunk('IEND', new Uint8Array(0)),
  ]);
}

/** Deterministic noisy pixels around a class colour; a few images lean to another class. */
function colourImage(classIndex: number, i: number, size = SIZE): Uint8Array {
  let state = (classIndex * 7919 + i * 104729 + 1) >>> 0;
  const next = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  // Every fourth image is half another class's colour, so the model gets some wrong.
  const other = (classIndex + 1) % CLASSES.length;
  const mix = i % 4 === 3 ? 0.55 : 0;
  const base = BASE[CLASSES[classIndex]!];
  const otherBase = BASE[CLASSES[other]!];
  const pixels = new Uint8Array(size * size * 3);
  for (let p = 0; p < size * size; p++) {
    for (let c = 0; c < 3; c++) {
      const v = base[c]! * (1 - mix) + otherBase[c]! * mix + (next() - 0.5) * 100;
      pixels[p * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
    }
  }
  return pixels;
}

interface Sample {
  path: string;
  label: number;
  pixels: Uint8Array;
}

/** Writes `root/<class>/img<i>.png` for every class; returns what was written. */
async function writeColourFolder(root: string, count = PER_CLASS, offset = 0): Promise<Sample[]> {
  const samples: Sample[] = [];
  for (const [label, name] of CLASSES.entries()) {
    await mkdir(join(root, name), { recursive: true });
    for (let i = offset; i < offset + count; i++) {
      const pixels = colourImage(label, i);
      const path = join(root, name, `img${String(i).padStart(2, '0')}.png`);
      await writeFile(path, encodePng(SIZE, SIZE, pixels));
      samples.push({ path, label, pixels });
    }
  }
  return samples;
}

/** model.predict on the samples' pixels / 255: the reference the commands must agree with. */
function directProbabilities(model: tf.LayersModel, samples: readonly Sample[]): Float32Array {
  return tf.tidy(() => {
    const xs = new Float32Array(samples.length * SIZE * SIZE * 3);
    samples.forEach((s, k) => {
      for (let j = 0; j < s.pixels.length; j++) xs[k * s.pixels.length + j] = s.pixels[j]! / 255;
    });
    const out = model.predict(tf.tensor4d(xs, [samples.length, SIZE, SIZE, 3])) as tf.Tensor;
    return out.dataSync() as Float32Array;
  });
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
  return best;
}

/** Accuracy, mean cross-entropy (Keras' 1e-7 clip) and confusion matrix, computed directly. */
function directScores(probabilities: Float32Array, labels: readonly number[], numClasses: number) {
  const confusion = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  let correct = 0;
  let loss = 0;
  labels.forEach((label, k) => {
    const row = probabilities.subarray(k * numClasses, (k + 1) * numClasses);
    const predicted = argmax(row);
    confusion[label]![predicted]! += 1;
    if (predicted === label) correct += 1;
    loss -= Math.log(Math.min(1 - 1e-7, Math.max(1e-7, row[label]!)));
  });
  return { accuracy: correct / labels.length, loss: loss / labels.length, confusion };
}

let root: string;
let env: NodeJS.ProcessEnv;
let colours: string;
let samples: Sample[];
let model: tf.LayersModel;
let runDir: string;
const SPLIT = { validationSplit: 0.25, seed: 7 };

/** The model's run metadata as train records it (runOutputs.ts). */
function runMetadata(fingerprint: string, folder = colours) {
  return {
    run: {
      dataset: folder,
      classNames: [...CLASSES],
      testAccuracy: 0.9,
      input: { height: SIZE, width: SIZE, channels: 3, colorMode: 'rgb' },
      imageFolder: { folder, fingerprint, ...SPLIT },
    },
  };
}

/** runCli in this process, output collected. */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(
    ['node', 'shardline-coordinator', ...args],
    {
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) },
    },
    { env },
  );
  return { code, stdout, stderr };
}

beforeAll(async () => {
  root = await mkdtemp('/tmp/evp-');
  env = { ...process.env, XDG_CACHE_HOME: join(root, 'cache') };
  colours = join(root, 'colours');
  samples = await writeColourFolder(colours);

  // Fitted on the plain images only: the mixed ones then lean to the other class, so the report
  // has mistakes to count.
  const plain = samples.filter((_, k) => (k % PER_CLASS) % 4 !== 3);
  model = createModel('mlp', {
    seed: 5,
    inputShape: [SIZE, SIZE, 3],
    numClasses: CLASSES.length,
    hiddenUnits: [16],
  });
  model.compile({ optimizer: tf.train.adam(0.02), loss: 'categoricalCrossentropy' });
  const xs = tf.tensor4d(
    Float32Array.from(plain.flatMap((s) => Array.from(s.pixels, (v) => v / 255))),
    [plain.length, SIZE, SIZE, 3],
  );
  const ys = tf.oneHot(
    tf.tensor1d(
      plain.map((s) => s.label),
      'int32',
    ),
    CLASSES.length,
  );
  await model.fit(xs, ys, { epochs: 15, batchSize: 8, verbose: 0 });
  tf.dispose([xs, ys]);

  // What train would record for the folder: the loader's fingerprint with these options.
  const loaded = await loadImageFolder(colours, {
    classNames: [...CLASSES],
    ...SPLIT,
    env,
  });
  runDir = join(root, 'run');
  await saveModel(model, join(runDir, 'model'), { metadata: runMetadata(loaded.fingerprint) });
});

afterAll(async () => {
  model?.dispose();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('evaluateSavedModel', () => {
  it("scores every image of a folder that is not the run's, exactly as model.predict does", async () => {
    const other = join(root, 'copy-all');
    await cp(colours, other, { recursive: true });
    const before = tf.memory().numTensors;
    const result = await evaluateSavedModel({ model: runDir, dataset: other, env });
    expect(tf.memory().numTensors).toBe(before);

    const direct = directScores(
      directProbabilities(model, samples),
      samples.map((s) => s.label),
      CLASSES.length,
    );
    expect(result.split).toBe('every image');
    expect(result.model).toBe(join(runDir, 'model'));
    expect(result.report.count).toBe(samples.length);
    expect(result.report.classNames).toEqual([...CLASSES]);
    expect(result.report.accuracy).toBeCloseTo(direct.accuracy, 12);
    expect(result.report.loss).toBeCloseTo(direct.loss, 5);
    expect(result.report.confusionMatrix).toEqual(direct.confusion);
    // Good but not perfect: labels line up with outputs, and there are mistakes to count.
    expect(direct.accuracy).toBeGreaterThan(0.6);
    expect(direct.accuracy).toBeLessThan(1);
  });

  it("evaluates exactly the run's held-out images on its own folder, and warns once the folder changed", async () => {
    const held = await loadImageFolder(colours, { classNames: [...CLASSES], ...SPLIT, env });
    const warnings: string[] = [];
    const logger = createLogger({
      level: 'warn',
      format: 'text',
      sink: { write: (s: string) => warnings.push(s) },
    });
    const result = await evaluateSavedModel({ model: runDir, env, logger });
    expect(result.dataset).toBe(colours);
    expect(result.split).toBe("the run's held-out 25% (seed 7)");
    expect(result.report.count).toBe(held.test.count);
    expect(held.test.count).toBe(6);
    // Stratified: two of each class's eight.
    expect(result.report.confusionMatrix.map((row) => row.reduce((a, b) => a + b))).toEqual([
      2, 2, 2,
    ]);
    expect(warnings).toEqual([]);

    // The same metadata pointing at a copy that gained an image since.
    const changed = join(root, 'colours-changed');
    await cp(colours, changed, { recursive: true });
    await writeFile(join(changed, 'red', 'zz-new.png'), encodePng(SIZE, SIZE, colourImage(0, 99)));
    const changedRun = join(root, 'run-changed');
    await saveModel(model, changedRun, {
      metadata: runMetadata(held.fingerprint, changed),
    });
    await evaluateSavedModel({ model: changedRun, env, logger });
    expect(warnings.join('')).toMatch(/changed since the run trained on it/);
  });

  it('takes test/ of a folder with train/ and test/, and resizes images of another size to the model input', async () => {
    const split = join(root, 'split');
    await writeColourFolder(join(split, 'train'), 3);
    const test = await writeColourFolder(join(split, 'test'), 2, 20);
    const result = await evaluateSavedModel({ model: runDir, dataset: split, env });
    expect(result.split).toBe('test/');
    expect(result.report.count).toBe(test.length);
    const direct = directScores(
      directProbabilities(model, test),
      test.map((s) => s.label),
      CLASSES.length,
    );
    expect(result.report.confusionMatrix).toEqual(direct.confusion);

    const big = join(root, 'big');
    for (const [label, name] of CLASSES.entries()) {
      await mkdir(join(big, name), { recursive: true });
      await writeFile(join(big, name, 'a.png'), encodePng(16, 16, colourImage(label, 0, 16)));
      await writeFile(join(big, name, 'b.png'), encodePng(16, 16, colourImage(label, 1, 16)));
    }
    const resized = await evaluateSavedModel({
      model: runDir,
      dataset: big,
      validationSplit: 0.5,
      env,
    });
    expect(resized.split).toBe('held-out 50% (seed 42)');
    expect(resized.report.count).toBe(3);
  });
});

describe('predictImages', () => {
  it('ranks the classes of each image as model.predict does on the same pixels', async () => {
    const picked = [samples[0]!, samples[9]!, samples[19]!, samples[3]!];
    const results = await predictImages({ model: runDir, images: picked.map((s) => s.path) });
    const direct = directProbabilities(model, picked);
    expect(results).toHaveLength(picked.length);
    results.forEach((r, k) => {
      if ('error' in r) throw new Error(r.error);
      const row = direct.subarray(k * 3, (k + 1) * 3);
      expect(r.path).toBe(picked[k]!.path);
      expect(r.predictions).toHaveLength(3);
      expect(r.predictions[0]!.className).toBe(CLASSES[argmax(row)]);
      for (const p of r.predictions) {
        expect(p.probability).toBeCloseTo(row[CLASSES.indexOf(p.className as 'red')]!, 5);
      }
      const probabilities = r.predictions.map((p) => p.probability);
      expect(probabilities).toEqual([...probabilities].sort((a, b) => b - a));
    });
  });
});

describe('shardline-coordinator evaluate', () => {
  it('prints the per-class table and the confusion matrix for a run folder', async () => {
    const run = await cli(['evaluate', '--model', runDir, '--backend', 'cpu']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`dataset  ${colours} (the run's held-out 25% (seed 7), 6 images)`);
    expect(run.stdout).toContain('backend  cpu');
    expect(run.stdout).toMatch(/precision\s+recall\s+f1-score\s+support/);
    expect(run.stdout).toMatch(/0 red\s/);
    expect(run.stdout).toContain('top-1 accuracy');
    // Three classes: top-3 would always be 100%, so it is not reported (evaluationTopK).
    expect(run.stdout).not.toContain('top-3 accuracy');
    expect(run.stdout).toMatch(/true \\ pred\s+0\s+1\s+2/);
  });

  it('prints one JSON object with --json', async () => {
    const run = await cli([
      'evaluate',
      '--model',
      join(runDir, 'model'),
      '--dataset',
      colours,
      '--validation-split',
      '0.5',
      '--seed',
      '3',
      '--json',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const json = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(json).toMatchObject({
      dataset: colours,
      split: 'held-out 50% (seed 3)',
      count: 12,
      classNames: [...CLASSES],
    });
    expect(typeof json.accuracy).toBe('number');
    expect(json.perClass).toHaveLength(3);
  });

  it('refuses a --model that does not exist, a folder that is not a model, --seed alone, and no --model', async () => {
    const missing = await cli(['evaluate', '--model', join(root, 'nope')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`--model ${join(root, 'nope')} does not exist`);

    const notModel = await cli(['evaluate', '--model', colours]);
    expect(notModel.code).toBe(1);
    expect(notModel.stderr).toMatch(/is not a model folder: expected model\.json in it/);

    const seedAlone = await cli(['evaluate', '--model', runDir, '--seed', '3']);
    expect(seedAlone.code).toBe(1);
    expect(seedAlone.stderr).toContain('pass --validation-split too, or drop --seed');

    const none = await cli(['evaluate']);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("required option '--model <dir>' not specified");
  });

  it('asks for --class-names when model.json has no run metadata, and works with them', async () => {
    const bare = join(root, 'bare');
    await saveModel(model, bare);
    const run = await cli(['evaluate', '--model', bare, '--dataset', colours]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /model\.json has no Shardline run metadata \(classNames\).*pass --class-names a,b,c/,
    );
    const named = await cli([
      'evaluate',
      '--model',
      bare,
      '--dataset',
      colours,
      '--class-names',
      CLASSES.join(','),
      '--json',
    ]);
    expect(named.code, named.stderr).toBe(0);
    expect(JSON.parse(named.stdout)).toMatchObject({ count: samples.length, split: 'every image' });
  });

  it("says what to do when a folder lacks one of the model's classes", async () => {
    const odd = join(root, 'odd');
    await cp(colours, odd, { recursive: true });
    await rm(join(odd, 'blue'), { recursive: true });
    await mkdir(join(odd, 'purple'));
    const run = await cli(['evaluate', '--model', runDir, '--dataset', odd]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /has no folder for class blue of the model: the model's classes are red, green, blue/,
    );
    expect(run.stderr).toMatch(/Evaluate on a folder with one subfolder per class of the model/);
  });

  it("refuses a dataset whose images differ from the model's input", async () => {
    const run = await cli([
      'evaluate',
      '--model',
      runDir,
      '--dataset',
      'fashion-mnist',
      '--limit-test',
      '50',
      '--no-download',
    ]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /takes 8x8x3 images with 3 classes, but fashion-mnist has 28x28x1 images with 10 classes/,
    );
  });

  it('scores a fresh Fashion-MNIST model on the first 200 test images as model.predict does', async () => {
    const mlp = createModel('mlp', { seed: 11, hiddenUnits: [32] });
    const dir = join(root, 'fmnist');
    await saveModel(mlp, dir, {
      metadata: {
        run: {
          dataset: 'fashion-mnist',
          classNames: [...fashionMnist.classNames],
          input: { height: 28, width: 28, channels: 1, colorMode: 'grayscale' },
        },
      },
    });
    const run = await cli([
      'evaluate',
      '--model',
      dir,
      '--limit-test',
      '200',
      '--json',
      '--no-download',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const json = JSON.parse(run.stdout) as { count: number; accuracy: number; split: string };
    expect(json).toMatchObject({ dataset: 'fashion-mnist', split: 'test split', count: 200 });

    const { test } = await loadDataset('fashion-mnist', { limitTest: 200, download: false, env });
    const probabilities = tf.tidy(() => {
      const xs = tf.tensor4d(
        Float32Array.from(test.images, (v) => v / 255),
        [200, 28, 28, 1],
      );
      return (mlp.predict(xs) as tf.Tensor).dataSync() as Float32Array;
    });
    const direct = directScores(probabilities, Array.from(test.labels), 10);
    expect(json.accuracy).toBeCloseTo(direct.accuracy, 12);
    mlp.dispose();
  });
});

describe('shardline-coordinator predict', () => {
  it('prints one line per image, names the unreadable one on stderr and exits 1', async () => {
    const bad = join(root, 'not-an-image.png');
    await writeFile(bad, 'this is text, not a PNG\n');
    const images = [samples[0]!.path, bad, samples[10]!.path];
    const run = await cli(['predict', '--model', runDir, '--top', '2', ...images]);
    expect(run.code).toBe(1);
    const lines = run.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(
      new RegExp(
        `^${samples[0]!.path}: (red|green|blue) \\(\\d\\.\\d\\d\\), (red|green|blue) \\(\\d\\.\\d\\d\\)$`,
      ),
    );
    expect(lines[1]!.startsWith(`${samples[10]!.path}: `)).toBe(true);
    expect(run.stderr).toContain(`shardline-coordinator: ${bad}: not a readable image`);
    expect(run.stderr).toContain('1 of 3 images could not be read');

    const json = await cli(['predict', '--model', runDir, '--json', ...images]);
    expect(json.code).toBe(1);
    const parsed = JSON.parse(json.stdout) as Array<{
      path: string;
      error?: string;
      predictions?: unknown[];
    }>;
    expect(parsed.map((p) => p.path)).toEqual(images);
    expect(parsed[1]!.error).toMatch(/not a readable image/);
    expect(parsed[0]!.predictions).toHaveLength(3);
  });

  it('names the plugin a custom layer needs, and predicts once it is given', async () => {
    const pluginPath = join(root, 'evp-scale.mjs');
    await writeFile(
      pluginPath,
      `export default (tf) => {
  class EvpScale extends tf.layers.Layer {
    static className = 'EvpScale';
    constructor(config) { super(config); this.factor = config.factor ?? 1; }
    call(inputs) { return tf.tidy(() => tf.mul(Array.isArray(inputs) ? inputs[0] : inputs, this.factor)); }
    computeOutputShape(shape) { return shape; }
    getConfig() { return { ...super.getConfig(), factor: this.factor }; }
  }
  tf.serialization.registerClass(EvpScale);
};
`,
    );
    const plugin = await loadPlugin(pluginPath);
    const Scale = tf.serialization.SerializationMap.getMap().classNameMap
      .EvpScale![0] as unknown as new (
      config: object,
    ) => tf.layers.Layer;
    const custom = tf.sequential({
      layers: [
        new Scale({ inputShape: [SIZE, SIZE, 3], factor: 0.5 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 3, activation: 'softmax' }),
      ],
    });
    const dir = join(root, 'custom');
    await saveModel(custom, dir, {
      metadata: {
        run: {
          dataset: colours,
          classNames: [...CLASSES],
          plugins: [{ name: 'evp-scale', path: pluginPath, sha256: plugin.sha256 }],
        },
      },
    });
    const without = await cli(['predict', '--model', dir, samples[0]!.path]);
    expect(without.code).toBe(1);
    expect(without.stderr).toContain('needs the plugin evp-scale');
    expect(without.stderr).toContain(`pass --plugin ${pluginPath}`);

    const withPlugin = await cli([
      'predict',
      '--model',
      dir,
      '--plugin',
      pluginPath,
      samples[0]!.path,
    ]);
    expect(withPlugin.code, withPlugin.stderr).toBe(0);
    const top = custom.predict(
      tf.tensor4d(
        Float32Array.from(samples[0]!.pixels, (v) => v / 255),
        [1, SIZE, SIZE, 3],
      ),
    ) as tf.Tensor;
    expect(withPlugin.stdout).toMatch(
      new RegExp(`^${samples[0]!.path}: ${CLASSES[argmax(top.dataSync())]} \\(`),
    );
    tf.dispose(top);
    custom.dispose();
  });
});
