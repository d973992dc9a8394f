import { describeLayout, readWeights, selectBackend, silentLogger } from '@shardline/core';
import { type LoadedDataset, loadDataset } from '@shardline/datasets';
import { createModel } from '@shardline/models';
import { beforeAll, describe, expect, it } from 'vitest';
import { averageGradients } from '../src/averageGradients.js';
import { fixedMembership } from '../src/contract.js';
import type { EpochMetrics, TrainingEvents } from '../src/events.js';
import { createLocalWorker } from '../src/localWorker.js';
import { runSynchronousTraining, type TrainerConfig } from '../src/syncTrainer.js';

let data: LoadedDataset;
beforeAll(async () => {
  await selectBackend('wasm');
  data = await loadDataset('fashion-mnist', { limitTrain: 256, limitTest: 64, download: false });
});

/** The trainer's settings plus what the test's workers are built with. */
type TestConfig = TrainerConfig & {
  model: string;
  seed: number;
  augment: boolean;
  evalBatchSize: number;
};

const config = (over: Partial<TestConfig> = {}): TestConfig => ({
  model: 'fast-cnn',
  epochs: 1,
  batchSize: 64,
  learningRate: 0.01,
  optimizer: 'momentum',
  momentum: 0.9,
  weightDecay: 0,
  schedule: 'constant',
  warmupEpochs: 0,
  seed: 3,
  evalBatchSize: 64,
  augment: false,
  ...over,
});

const quiet: TrainingEvents = { progress() {}, epochEnd() {} };

/** Trains with `workers` local workers (each its own model replica) and returns the final weights. */
async function train(workers: number, cfg: TestConfig) {
  const replicas = Array.from({ length: workers }, () =>
    createModel(cfg.model, { seed: cfg.seed }),
  );
  const layout = describeLayout(replicas[0]!);
  const params = readWeights(replicas[0]!, layout);
  const members = replicas.map((model, i) =>
    createLocalWorker({
      id: `w${i}`,
      model,
      layout,
      train: data.train,
      test: data.test,
      classNames: data.descriptor.classNames,
      seed: cfg.seed,
      batchSize: cfg.batchSize,
      augment: cfg.augment,
      evalBatchSize: cfg.evalBatchSize,
    }),
  );
  const epochs: EpochMetrics[] = [];
  const result = await runSynchronousTraining({
    config: cfg,
    layout,
    params,
    trainCount: data.train.count,
    testCount: data.test.count,
    classNames: data.descriptor.classNames,
    membership: fixedMembership(members),
    reporter: { ...quiet, epochEnd: (m) => epochs.push(m) },
    logger: silentLogger,
  });
  for (const m of replicas) m.dispose();
  return {
    params: result.weights.params,
    version: result.weights.version,
    epochs,
    evaluation: result.evaluation!,
  };
}

function maxRelativeDifference(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(1e-3, Math.abs(a[i]!)));
  }
  return worst;
}

describe('synchronous data-parallel training', () => {
  it('2 workers on a global batch of 2b end with the weights of 1 process on batch 2b, step after step', async () => {
    // 256 images at global batch 64: four steps. Each of two workers computes 32 images a step.
    const one = await train(1, config());
    const two = await train(2, config());
    expect(two.version).toBe(4);
    // float32 sums in another order differ in the last bits; four momentum steps keep it tiny.
    expect(maxRelativeDifference(one.params, two.params)).toBeLessThan(1e-3);
    expect(two.epochs[0]!.workers).toBe(2);
    expect(two.epochs[0]!.train_loss).toBeCloseTo(one.epochs[0]!.train_loss, 4);
    // Three workers get uneven shares (22, 21, 21): only a sample-weighted average stays exact.
    const three = await train(3, config());
    expect(maxRelativeDifference(one.params, three.params)).toBeLessThan(1e-3);
  });

  it('evaluates the test set split across workers exactly as one worker does', async () => {
    const one = await train(1, config({ learningRate: 0.001 }));
    const three = await train(3, config({ learningRate: 0.001 }));
    expect(three.evaluation.count).toBe(64);
    expect(three.evaluation.confusionMatrix).toEqual(one.evaluation.confusionMatrix);
  });
});

describe('averageGradients', () => {
  it('weights each gradient by its sample count and skips empty shares', () => {
    const { gradient, samples } = averageGradients(
      [
        {
          gradient: Float32Array.from([1, 2]),
          sampleCount: 1,
          loss: 0,
          correct: 0,
          computeSeconds: 0,
        },
        {
          gradient: Float32Array.from([4, 8]),
          sampleCount: 3,
          loss: 0,
          correct: 0,
          computeSeconds: 0,
        },
        { gradient: new Float32Array(0), sampleCount: 0, loss: 0, correct: 0, computeSeconds: 0 },
      ],
      2,
    );
    expect(samples).toBe(4);
    // (1*1 + 3*4)/4 = 3.25 ; (1*2 + 3*8)/4 = 6.5
    expect(Array.from(gradient)).toEqual([3.25, 6.5]);
  });

  it('overwrites a reused output buffer instead of adding to what it held', () => {
    const share = (values: number[], sampleCount: number) => ({
      gradient: Float32Array.from(values),
      sampleCount,
      loss: 0,
      correct: 0,
      computeSeconds: 0,
    });
    const out = Float32Array.from([100, -100]);
    const first = averageGradients([share([1, 2], 1), share([3, 4], 1)], 2, out);
    expect(first.gradient).toBe(out);
    expect(Array.from(out)).toEqual([2, 3]);
    averageGradients([share([-1, -0], 2)], 2, out);
    expect(Object.is(out[1], 0)).toBe(true); // +0, as a fresh sum of -0 would be
    expect(out[0]).toBe(-1);
    averageGradients([share([], 0)], 2, out);
    expect(Array.from(out)).toEqual([0, 0]);
    expect(() => averageGradients([share([1], 1)], 1, out)).toThrow(/2 values, expected 1/);
  });
});
