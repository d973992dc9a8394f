import { describe, expect, it } from 'vitest';
import { cut, firstNonFinite, MAX_WORKER_ERROR_CHARS } from '../src/distributed/remoteWorker.js';

describe('firstNonFinite', () => {
  it('finds the first NaN or infinity wherever it sits, and -1 when there is none', () => {
    const values = Float32Array.from({ length: 11 }, (_, i) => (i - 5) * 1e30);
    expect(firstNonFinite(values)).toBe(-1);
    expect(firstNonFinite(new Float32Array(0))).toBe(-1);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      for (const at of [0, 3, 4, 9, 10]) {
        const copy = values.slice();
        copy[at] = bad;
        if (at < 10) copy[10] = bad; // a later one must not hide the first
        expect(firstNonFinite(copy)).toBe(at);
      }
    }
    // The largest finite float32 and the smallest subnormal are finite.
    expect(firstNonFinite(Float32Array.from([3.4028234663852886e38, -1.401298464324817e-45]))).toBe(
      -1,
    );
    // A view at an offset into a larger buffer reads only its own values.
    const backing = Float32Array.from([Number.NaN, 1, 2, Number.NaN]);
    expect(firstNonFinite(backing.subarray(1, 3))).toBe(-1);
  });
});

describe('cut', () => {
  it('keeps short text and cuts long text with a marker saying how much was left out', () => {
    expect(cut('short', 10)).toBe('short');
    expect(cut('x'.repeat(MAX_WORKER_ERROR_CHARS + 5), MAX_WORKER_ERROR_CHARS)).toBe(
      `${'x'.repeat(MAX_WORKER_ERROR_CHARS)}… (5 more characters)`,
    );
  });
});
