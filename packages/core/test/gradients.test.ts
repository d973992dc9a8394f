import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { computeGradients, predictProbabilities, type TrainingBatch } from '../src/gradients.js';
import { describeLayout, readWeights, writeWeights } from '../src/params.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** Softmax regression on 2x2x1 images: logits = flatten(x) W + b. */
function softmaxRegression(): tf.Sequential {
  const model = tf.sequential({
    layers: [
      tf.layers.flatten({ inputShape: [2, 2, 1], name: 'flat' }),
      tf.layers.dense({
        units: 3,
        activation: 'softmax',
        name: 'out',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
      }),
    ],
  });
  return model;
}

const batch: TrainingBatch = {
  xs: Float32Array.from([0.1, 0.2, 0.3, 0.4, 1, 0, 0.5, 0.25, 0, 0, 1, 1, 0.9, 0.8, 0.7, 0.6]),
  labels: Int32Array.from([0, 2, 1, 2]),
  shape: [4, 2, 2, 1],
};

describe('computeGradients', () => {
  it('matches the closed form of softmax cross-entropy: dW = x^T (p - y) / n', () => {
    const model = softmaxRegression();
    const layout = describeLayout(model);
    const { gradient, loss, sampleCount, correct } = computeGradients(model, batch, layout);
    const probs = predictProbabilities(model, batch.xs, batch.shape);
    const n = 4;
    const dW = new Float64Array(12);
    const db = new Float64Array(3);
    let expectedLoss = 0;
    let expectedCorrect = 0;
    for (let i = 0; i < n; i++) {
      const row = Array.from(probs.subarray(i * 3, i * 3 + 3));
      const label = batch.labels[i]!;
      expectedLoss -= Math.log(row[label]!) / n;
      if (row.indexOf(Math.max(...row)) === label) expectedCorrect++;
      for (let c = 0; c < 3; c++) {
        const delta = (row[c]! - (c === label ? 1 : 0)) / n;
        db[c]! += delta;
        for (let j = 0; j < 4; j++) dW[j * 3 + c]! += batch.xs[i * 4 + j]! * delta;
      }
    }
    expect(layout.slots.map((s) => s.name)).toEqual(['out/kernel', 'out/bias']);
    for (let k = 0; k < 12; k++) expect(gradient[k]).toBeCloseTo(dW[k]!, 5);
    for (let c = 0; c < 3; c++) expect(gradient[12 + c]).toBeCloseTo(db[c]!, 5);
    expect(loss).toBeCloseTo(expectedLoss, 5);
    expect(sampleCount).toBe(4);
    expect(correct).toBe(expectedCorrect);
  });

  it('gives the sample-weighted average of its halves: the identity data parallelism rests on', () => {
    const model = softmaxRegression();
    const whole = computeGradients(model, batch);
    const half = (from: number, to: number): TrainingBatch => ({
      xs: batch.xs.slice(from * 4, to * 4),
      labels: batch.labels.slice(from, to),
      shape: [to - from, 2, 2, 1],
    });
    const a = computeGradients(model, half(0, 1));
    const b = computeGradients(model, half(1, 4));
    for (let k = 0; k < whole.gradient.length; k++) {
      expect((a.gradient[k]! * 1 + b.gradient[k]! * 3) / 4).toBeCloseTo(whole.gradient[k]!, 6);
    }
    expect((a.loss + 3 * b.loss) / 4).toBeCloseTo(whole.loss, 6);
  });

  it('writes into a given output buffer, the same values as into fresh memory', () => {
    const model = softmaxRegression();
    const layout = describeLayout(model);
    const fresh = computeGradients(model, batch, layout);
    const out = new Float32Array(layout.size).fill(Number.NaN);
    const reused = computeGradients(model, batch, layout, out);
    expect(reused.gradient).toBe(out);
    expect(Array.from(out)).toEqual(Array.from(fresh.gradient));
    expect(() => computeGradients(model, batch, layout, new Float32Array(3))).toThrow(
      /expected 15 values \(the model's parameter count\), found 3/,
    );
  });

  it('leaks no tensors', () => {
    const model = softmaxRegression();
    computeGradients(model, batch);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) computeGradients(model, batch);
    predictProbabilities(model, batch.xs, batch.shape);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('refuses an inconsistent batch', () => {
    expect(() =>
      computeGradients(softmaxRegression(), { ...batch, labels: Int32Array.from([1]) }),
    ).toThrow(
      /shape \[4, 2, 2, 1\] needs 16 pixel values and 4 labels \(at least one\), found 16 and 1/,
    );
  });
});

describe('flat weights', () => {
  it('round-trips through readWeights/writeWeights and refuses a wrong length', () => {
    const model = softmaxRegression();
    const layout = describeLayout(model);
    expect(layout.size).toBe(15);
    expect(layout.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    const flat = Float32Array.from({ length: 15 }, (_, i) => i / 10);
    const before = tf.memory().numTensors;
    writeWeights(model, flat, layout);
    expect(tf.memory().numTensors).toBe(before);
    expect(Array.from(readWeights(model, layout))).toEqual(Array.from(flat));
    expect(() => writeWeights(model, new Float32Array(14), layout)).toThrow(
      /expected 15 float32 values, found 14/,
    );
  });

  it('gives the same fingerprint to the same model built twice in one process', () => {
    // tfjs renames the second model's variables (out/kernel_1); the layout must not care.
    expect(describeLayout(softmaxRegression()).fingerprint).toBe(
      describeLayout(softmaxRegression()).fingerprint,
    );
  });

  it('gives different fingerprints to different shapes or orders', () => {
    const a = describeLayout(softmaxRegression());
    const b = describeLayout({
      trainableWeights: [...softmaxRegression().trainableWeights].reverse(),
    });
    expect(a.fingerprint).not.toBe(b.fingerprint);
  });
});
