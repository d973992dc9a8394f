import { describe, expect, it } from 'vitest';
import { EVALUATION_TOP_K, evaluationTopK } from '../src/contract.js';

describe('evaluationTopK', () => {
  it('keeps top-1 always and drops the k that are not below the class count', () => {
    expect(evaluationTopK(2)).toEqual([1]);
    expect(evaluationTopK(3)).toEqual([1]);
    expect(evaluationTopK(4)).toEqual([1, 3]);
    expect(evaluationTopK(10)).toEqual([...EVALUATION_TOP_K]);
  });
});
