import { selectBackend } from '@shardline/core';
import type { ImageSet } from '@shardline/datasets';
import { createModel } from '@shardline/models';
import { beforeAll, describe, expect, it } from 'vitest';
import { EVALUATION_TOP_K, evaluationTopK } from '../src/contract.js';
import { evaluateSlice } from '../src/localWorker.js';

beforeAll(async () => {
  await selectBackend('wasm');
});

describe('evaluationTopK', () => {
  it('keeps top-1 always and drops the k that are not below the class count', () => {
    expect(evaluationTopK(2)).toEqual([1]);
    expect(evaluationTopK(3)).toEqual([1]);
    expect(evaluationTopK(4)).toEqual([1, 3]);
    expect(evaluationTopK(10)).toEqual([...EVALUATION_TOP_K]);
  });

  it('lets a 2-class model be evaluated (top-3 of 2 classes used to be refused)', () => {
    const model = createModel('mlp', { inputShape: [4, 4, 1], numClasses: 2, seed: 1 });
    const count = 10;
    const set: ImageSet = {
      images: Uint8Array.from({ length: count * 16 }, (_, i) => (i * 37) % 256),
      labels: Uint8Array.from({ length: count }, (_, i) => i % 2),
      count,
      height: 4,
      width: 4,
      channels: 1,
      numClasses: 2,
    };
    const state = evaluateSlice(model, set, { start: 0, end: count }, ['no', 'yes'], 4);
    expect(state.topK).toEqual([1]);
    expect(state.count).toBe(count);
    expect(state.confusion.reduce((a, b) => a + b, 0)).toBe(count);
    model.dispose();
  });
});
