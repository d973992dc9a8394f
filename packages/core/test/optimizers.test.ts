import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { createOptimizer } from '../src/optimizers.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('createOptimizer', () => {
  it('sgd takes lr x (gradient + weight decay x param)', () => {
    const p = Float32Array.from([1, -2]);
    const opt = createOptimizer({ kind: 'sgd', size: 2, weightDecay: 0.1 });
    opt.apply(p, Float32Array.from([0.5, 0.5]), 0.1);
    // 1 - 0.1 * (0.5 + 0.1) = 0.94 ; -2 - 0.1 * (0.5 - 0.2) = -2.03
    expect(p[0]).toBeCloseTo(0.94, 6);
    expect(p[1]).toBeCloseTo(-2.03, 6);
    expect(opt.step).toBe(1);
  });

  it('momentum follows the PyTorch recurrence', () => {
    const p = Float32Array.from([0]);
    const opt = createOptimizer({ kind: 'momentum', size: 1, momentum: 0.9 });
    opt.apply(p, Float32Array.from([1]), 0.1); // v = 1, p = -0.1
    opt.apply(p, Float32Array.from([1]), 0.1); // v = 1.9, p = -0.29
    expect(p[0]).toBeCloseTo(-0.29, 6);
  });

  it('adam matches tf.train.adam step for step', () => {
    const init = [0.5, -1.5, 2, 0.01];
    const grads = [
      [0.1, -0.2, 0.3, 0],
      [-0.5, 0.4, 0.1, 1e-3],
      [2, -3, 0.5, 0.2],
    ];
    const ours = Float32Array.from(init);
    const opt = createOptimizer({ kind: 'adam', size: init.length, epsilon: 1e-7 });
    const reference = tf.variable(tf.tensor1d(init));
    const tfOpt = tf.train.adam(0.01, 0.9, 0.999, 1e-7);
    for (const g of grads) {
      opt.apply(ours, Float32Array.from(g), 0.01);
      tfOpt.applyGradients([{ name: reference.name, tensor: tf.tensor1d(g) }]);
    }
    const expected = reference.dataSync();
    for (let i = 0; i < init.length; i++) expect(ours[i]).toBeCloseTo(expected[i]!, 5);
  });

  it('restores state exactly, so a resumed run continues identically', () => {
    const g = Float32Array.from([0.3, -0.7, 1.1]);
    const a = Float32Array.from([1, 2, 3]);
    const optA = createOptimizer({ kind: 'adam', size: 3 });
    optA.apply(a, g, 0.01);
    const saved = optA.getState();
    const b = a.slice();
    const optB = createOptimizer({ kind: 'adam', size: 3 });
    optB.setState(saved);
    optA.apply(a, g, 0.01);
    optB.apply(b, g, 0.01);
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(optB.step).toBe(2);
  });

  it('refuses mismatched sizes, kinds and learning rates with clear errors', () => {
    const opt = createOptimizer({ kind: 'sgd', size: 3 });
    expect(() => opt.apply(new Float32Array(3), new Float32Array(2), 0.1)).toThrow(
      /expected parameters and gradient of 3 values, found 3 and 2/,
    );
    expect(() => opt.apply(new Float32Array(3), new Float32Array(3), Number.NaN)).toThrow(
      /finite, non-negative learning rate/,
    );
    expect(() => createOptimizer({ kind: 'rmsprop' as 'sgd', size: 3 })).toThrow(
      /expected one of sgd, momentum, adam/,
    );
    expect(() => opt.setState(createOptimizer({ kind: 'adam', size: 3 }).getState())).toThrow(
      /for "adam", expected "sgd"/,
    );
  });
});
