import { describeLayout, readWeights } from '@shardline/core';
import type { ImageSet } from '@shardline/datasets';
import { createModel } from '@shardline/models';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { warmUp } from '../src/localWorker.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** A small set of 28x28 greyscale images with varied pixels, as Fashion-MNIST's. */
function images(count: number): ImageSet {
  const size = 28 * 28;
  const pixels = new Uint8Array(count * size);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 37 + (i >> 5)) & 0xff;
  return {
    images: pixels,
    labels: Uint8Array.from({ length: count }, (_, i) => i % 10),
    count,
    height: 28,
    width: 28,
    channels: 1,
    numClasses: 10,
  };
}

describe('warmUp', () => {
  it('runs a step and a forward pass without changing the weights or leaking tensors', () => {
    const model = createModel('mlp', { seed: 7 });
    const layout = describeLayout(model);
    const before = readWeights(model, layout);
    const tensors = tf.memory().numTensors;
    const seconds = warmUp(model, layout, images(16), 8);
    expect(seconds).toBeGreaterThan(0);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(readWeights(model, layout)).toEqual(before);
  });

  it('uses what a small set has when it holds fewer images than the batch', () => {
    const model = createModel('mlp', { seed: 7 });
    const layout = describeLayout(model);
    expect(warmUp(model, layout, images(3), 32)).toBeGreaterThan(0);
    expect(warmUp(model, layout, images(0), 32)).toBe(0);
  });
});
