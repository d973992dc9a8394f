import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '@shardline/models';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './runCli.js';

let out: string;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-train-'));
});
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});

describe('shardline-coordinator train --in-process', () => {
  it('trains on real Fashion-MNIST, prints the JSON event contract and saves a loadable model', async () => {
    const run = await runCli([
      'train',
      '--in-process',
      '--model',
      'fast-cnn',
      '--epochs',
      '2',
      '--batch-size',
      '64',
      '--limit-train',
      '1024',
      '--limit-test',
      '500',
      '--out',
      out,
      '--log-format',
      'json',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const events = run.events();
    expect(events.map((e) => e.event)).toEqual(['started', 'epoch_end', 'epoch_end', 'done']);
    const fields = [
      'epoch',
      'train_loss',
      'train_accuracy',
      'test_loss',
      'test_accuracy',
      'images_per_second',
      'workers',
      'step',
    ];
    for (const e of events.slice(1))
      for (const f of fields) expect(typeof e[f], `${e.event}.${f}`).toBe('number');
    const done = events[3]!;
    expect(done).toMatchObject({ epoch: 2, step: 32, workers: 1, model_path: join(out, 'model') });
    // Two epochs on 1,024 images already beat chance (10%) by far.
    expect(done.test_accuracy).toBeGreaterThan(0.5);
    expect(events[0]).toMatchObject({
      mode: 'in-process',
      backend: 'wasm',
      train_samples: 1024,
      test_samples: 500,
    });

    const summary = JSON.parse(await readFile(join(out, 'summary.json'), 'utf8'));
    expect(summary.final.test_accuracy).toBe(done.test_accuracy);
    expect(summary.evaluation.confusionMatrix).toHaveLength(10);
    expect((await readdir(join(out, 'model'))).sort()).toEqual(['model.json', 'weights.bin']);

    await tf.setBackend('cpu');
    const model = await loadModel(join(out, 'model'));
    expect(model.countParams()).toBe(events[0]!.parameters);
  });

  it('reproduces the same run exactly with the same seed', async () => {
    const args = (dir: string) => [
      'train',
      '--in-process',
      '--model',
      'mlp',
      '--epochs',
      '1',
      '--limit-train',
      '256',
      '--limit-test',
      '100',
      '--seed',
      '7',
      '--out',
      dir,
      '--log-format',
      'json',
    ];
    const [a, b] = [await runCli(args(join(out, 'a'))), await runCli(args(join(out, 'b')))];
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const pick = (r: typeof a) => r.events().find((e) => e.event === 'done')!;
    expect(pick(b).train_loss).toBe(pick(a).train_loss);
    expect(pick(b).test_accuracy).toBe(pick(a).test_accuracy);
    const weights = async (dir: string) => readFile(join(dir, 'model', 'weights.bin'));
    expect(Buffer.compare(await weights(join(out, 'a')), await weights(join(out, 'b')))).toBe(0);
  });

  it('refuses bad flags with a one-line reason and a non-zero status', async () => {
    const bad = await runCli(['train', '--in-process', '--epochs', 'zero']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(
      /--epochs <n>.*'zero' is invalid\. Expected a whole number of at least 1\./,
    );
    const model = await runCli(['train', '--in-process', '--model', 'resnet']);
    expect(model.code).not.toBe(0);
    expect(model.stderr).toMatch(
      /'resnet' is invalid\. Expected one of seed-cnn, mlp, fast-cnn, or the path of a model file/,
    );
  });

  it('says where it looked when the dataset is missing, and writes nothing', async () => {
    const empty = join(out, 'empty');
    // MNIST is installed nowhere here, and --no-download keeps the test off the network.
    const run = await runCli(
      [
        'train',
        '--in-process',
        '--dataset',
        'mnist',
        '--no-download',
        '--data-dir',
        empty,
        '--out',
        join(out, 'never'),
      ],
      {
        XDG_CACHE_HOME: join(out, 'cache'),
      },
    );
    expect(run.code).toBe(1);
    const lines = run.stderr.trim().split('\n');
    const reason = lines[lines.length - 1]!;
    expect(reason).toMatch(/^shardline-coordinator: /);
    expect(reason).toContain(empty);
    expect(reason).toContain(join(out, 'cache', 'shardline', 'mnist'));
    await expect(readdir(join(out, 'never'))).rejects.toThrow(/ENOENT/);
  });
});
