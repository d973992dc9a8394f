import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { makeBatch } from '../src/batch.js';
import type { ImageSet } from '../src/imageSet.js';
import { toTensors } from '../src/tensors.js';

const set: ImageSet = {
  images: Uint8Array.from({ length: 3 * 2 * 2 }, (_, i) => i * 20),
  labels: Uint8Array.from([2, 0, 1]),
  count: 3,
  height: 2,
  width: 2,
  channels: 1,
  numClasses: 3,
};

describe('toTensors', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
    await tf.ready();
  });

  it('wraps a batch as a float32 NHWC tensor and int32 labels, without leaking', () => {
    const before = tf.memory().numTensors;
    const batch = makeBatch(set, [2, 0]);
    const t = toTensors(batch);
    expect(t.xs.shape).toEqual([2, 2, 2, 1]);
    expect(t.xs.dtype).toBe('float32');
    expect(t.labels.dtype).toBe('int32');
    expect(Array.from(t.labels.dataSync())).toEqual([1, 2]);
    const xs = t.xs.dataSync();
    expect(xs[0]).toBeCloseTo(160 / 255, 6);
    expect(t.oneHot).toBeUndefined();
    tf.dispose(t);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('includes one-hot labels when the batch has them', () => {
    const before = tf.memory().numTensors;
    const t = toTensors(makeBatch(set, [0, 1, 2], { oneHot: true }));
    expect(t.oneHot!.shape).toEqual([3, 3]);
    expect(t.oneHot!.arraySync()).toEqual([
      [0, 0, 1],
      [1, 0, 0],
      [0, 1, 0],
    ]);
    tf.dispose(t);
    expect(tf.memory().numTensors).toBe(before);
  });
});
