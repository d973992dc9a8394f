/**
 * The programmatic API as a user's program sees it: `train()` from @shardline/coordinator and
 * `runWorker()` from @shardline/worker, imported by package name, in one process. The data is
 * built in memory and the model by a function, neither of which the worker process side ever
 * sees as files: the coordinator caches the sets and ships the model's topology.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ModelBuildContext, type TrainEvent, train } from '@shardline/coordinator';
import { createLogger } from '@shardline/core';
import { type ImageSet, loadImageFolder, writeShapesFolder } from '@shardline/datasets';
import { runWorker } from '@shardline/worker';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let root: string;
let sets: { train: ImageSet; test: ImageSet; classNames: readonly string[] };
const savedCache = process.env.XDG_CACHE_HOME;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'shardline-api-'));
  process.env.XDG_CACHE_HOME = join(root, 'cache');
  const folder = await writeShapesFolder(join(root, 'shapes'), { perClass: 40, size: 16, seed: 9 });
  // Sets in memory: the API must not care where they came from.
  const loaded = await loadImageFolder(folder.dir, { validationSplit: 0.25, cache: false });
  sets = { train: loaded.train, test: loaded.test, classNames: loaded.classNames };
});
afterAll(async () => {
  if (savedCache === undefined) delete process.env.XDG_CACHE_HOME;
  else process.env.XDG_CACHE_HOME = savedCache;
  await rm(root, { recursive: true, force: true });
});

/**
 * A small CNN built in code, shaped by what train() tells it about the data and seeded with the
 * run's seed, so the run is the same every time (tfjs's default initialisers are not seeded).
 */
function buildModel({ inputShape, numClasses, seed }: ModelBuildContext): tf.LayersModel {
  const init = (offset: number) => tf.initializers.glorotUniform({ seed: seed + offset });
  return tf.sequential({
    name: 'api_cnn',
    layers: [
      tf.layers.conv2d({
        inputShape: [...inputShape],
        filters: 8,
        kernelSize: 3,
        activation: 'relu',
        kernelInitializer: init(0),
        name: 'conv',
      }),
      tf.layers.maxPooling2d({ poolSize: 2, name: 'pool' }),
      tf.layers.flatten({ name: 'flat' }),
      tf.layers.dense({
        units: numClasses,
        activation: 'softmax',
        kernelInitializer: init(1),
        name: 'out',
      }),
    ],
  });
}

/** Enough steps for the seeded model to be well above chance (0.25) on the held-out quarter. */
const EPOCHS = 8;

describe('train() and runWorker() from code', () => {
  it('trains in-memory sets with a model function and one remote worker run by runWorker', async () => {
    const events: TrainEvent[] = [];
    const logger = createLogger({ level: 'warn', format: 'text', sink: { write: () => true } });
    let worker: ReturnType<typeof runWorker> | undefined;
    const out = join(root, 'run');
    const result = await train({
      model: buildModel,
      dataset: sets,
      epochs: EPOCHS,
      batchSize: 16,
      seed: 4,
      backend: 'wasm',
      out,
      distributed: { localWorkers: 0, minWorkers: 1 },
      logger,
      onEvent(event) {
        events.push(event);
        if (event.event === 'started') {
          worker = runWorker({
            coordinator: String(event.listen),
            name: 'api-worker',
            backend: 'wasm',
            download: false,
            connectTimeoutMs: 20_000,
            logger,
          });
        }
      },
    });
    expect(result.completed).toBe(true);
    expect(await worker).toMatchObject({
      reason: 'job-done',
      steps: EPOCHS * Math.ceil(sets.train.count / 16),
    });
    // The worker's stream closes as the job ends, so worker_left may come before done.
    expect(events.map((e) => e.event).filter((e) => e !== 'worker_left')).toEqual([
      'started',
      'worker_joined',
      ...Array.from({ length: EPOCHS }, () => 'epoch_end'),
      'done',
    ]);
    expect(events[0]).toMatchObject({
      model: 'api_cnn',
      dataset: 'in-memory',
      train_samples: sets.train.count,
    });
    const done = events.at(-1)!;
    expect(done.test_accuracy).toBeGreaterThan(0.4);
    const summary = JSON.parse(await readFile(result.summaryPath!, 'utf8'));
    expect(summary.evaluation.count).toBe(sets.test.count);
  });

  it('refuses a model that does not fit the sets before any step, in-process too', async () => {
    const wrong = () =>
      tf.sequential({
        layers: [
          tf.layers.flatten({ inputShape: [28, 28, 1] }),
          tf.layers.dense({ units: 4, activation: 'softmax' }),
        ],
      });
    await expect(
      train({ model: wrong, dataset: sets, inProcess: true, epochs: 1, out: join(root, 'wrong') }),
    ).rejects.toThrow("The model's input is 28x28x1 but the dataset's images are 16x16x3");
  });
});
