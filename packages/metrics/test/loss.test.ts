import { describe, expect, it } from 'vitest';
import { createMeanAccumulator, crossEntropy, type MeanState } from '../src/index.js';
import { expectShardlineError } from './helpers.js';

describe('crossEntropy', () => {
  it('is -mean(ln p[label]) from probabilities', () => {
    // -(ln 0.8 + ln 0.4) / 2 = (0.223144 + 0.916291) / 2 = 0.5697171
    const loss = crossEntropy({
      probabilities: Float64Array.of(0.8, 0.2, 0.6, 0.4),
      labels: Uint8Array.of(0, 1),
      numClasses: 2,
    });
    expect(loss).toBeCloseTo(0.5697171415941824, 12);
  });

  it('is logsumexp(z) - z[label] from logits, stable for large logits', () => {
    // z = [1000, 1000]: softmax [0.5, 0.5], loss ln 2 = 0.693147 (a naive exp would overflow).
    expect(
      crossEntropy({
        logits: Float32Array.of(1000, 1000),
        labels: Uint8Array.of(1),
        numClasses: 2,
      }),
    ).toBeCloseTo(Math.LN2, 12);
  });

  it('honours a custom epsilon', () => {
    // p(label) = 0 clipped to 1e-3: -ln(1e-3) = 6.907755
    expect(
      crossEntropy({
        probabilities: Float32Array.of(1, 0),
        labels: Uint8Array.of(1),
        numClasses: 2,
        epsilon: 1e-3,
      }),
    ).toBeCloseTo(-Math.log(1e-3), 12);
  });

  it('is 0 for an empty batch', () => {
    expect(
      crossEntropy({
        probabilities: new Float32Array(0),
        labels: new Uint8Array(0),
        numClasses: 10,
      }),
    ).toBe(0);
  });
});

describe('createMeanAccumulator', () => {
  it('weights each reported mean by its count', () => {
    const m = createMeanAccumulator();
    m.add(0.5, 64); // 32
    m.add(0.8, 32); // 25.6
    m.add(9, 0); // weight 0: ignored
    // (32 + 25.6) / 96 = 0.6
    expect(m.result().mean).toBeCloseTo(0.6, 12);
    expect(m.result().count).toBe(96);
  });

  it('merges accumulators and JSON states into the same mean as one accumulator', () => {
    const one = createMeanAccumulator();
    const a = createMeanAccumulator();
    const b = createMeanAccumulator();
    for (const [v, n, target] of [
      [1, 10, a],
      [2, 30, b],
      [4, 5, a],
    ] as const) {
      one.add(v, n);
      target.add(v, n);
    }
    const merged = createMeanAccumulator();
    merged.merge(a);
    merged.merge(JSON.parse(JSON.stringify(b.snapshot())) as MeanState);
    // (10 + 60 + 20) / 45 = 2
    expect(merged.result()).toEqual(one.result());
    expect(merged.result().mean).toBe(2);
  });

  it('reports 0 over 0 samples, and resets', () => {
    const m = createMeanAccumulator();
    expect(m.result()).toEqual({ mean: 0, count: 0 });
    m.add(3);
    m.reset();
    expect(m.result()).toEqual({ mean: 0, count: 0 });
  });

  it('rejects non-finite values, negative counts and malformed states', () => {
    const m = createMeanAccumulator();
    expectShardlineError(
      () => m.add(Number.NaN, 3),
      'INVALID_ARGUMENT',
      'mean must be a finite number, found NaN',
    );
    expectShardlineError(
      () => m.add(1, -3),
      'INVALID_ARGUMENT',
      'count must be a finite number >= 0, found -3',
    );
    expectShardlineError(() => m.merge({ sum: 1 } as MeanState), 'INVALID_ARGUMENT', 'state.count');
    expect(m.result()).toEqual({ mean: 0, count: 0 });
  });
});
