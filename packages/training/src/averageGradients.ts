/**
 * The aggregation of synchronous data-parallel SGD: the sample-weighted mean of the members'
 * gradients, which equals the gradient of the whole global batch.
 */
import { ShardlineError } from '@shardline/core';
import type { ShareResult } from './contract.js';

/**
 * Weighted average of the members' gradients: sum(n_i * g_i) / sum(n_i), written into `out`
 * (fresh memory when left out). The trainer passes one buffer for every step, so averaging
 * allocates nothing; the result is then overwritten by the next call.
 *
 * @example
 * ```ts
 * const { gradient, samples } = averageGradients(results, layout.size, buffer);
 * optimizer.apply(params, gradient, learningRate);
 * ```
 */
export function averageGradients(
  results: readonly ShareResult[],
  size: number,
  out: Float32Array = new Float32Array(size),
): { gradient: Float32Array; samples: number } {
  if (out.length !== size) {
    throw new ShardlineError(
      'INTERNAL',
      `The gradient average buffer has ${out.length} values, expected ${size}.`,
    );
  }
  let samples = 0;
  for (const r of results) samples += r.sampleCount;
  let first = true;
  for (const r of results) {
    if (r.sampleCount === 0) continue;
    if (r.gradient.length !== size) {
      throw new ShardlineError(
        'MISMATCH',
        `A gradient has ${r.gradient.length} values, expected ${size}.`,
      );
    }
    const w = r.sampleCount / samples;
    const g = r.gradient;
    // The first share overwrites what the previous step left (0 + x: the same float32 rounding,
    // and the same +0 for -0, as adding it to zeros), so no separate clearing pass is needed.
    if (first) for (let i = 0; i < size; i++) out[i] = 0 + w * g[i]!;
    else for (let i = 0; i < size; i++) out[i]! += w * g[i]!;
    first = false;
  }
  if (first) out.fill(0);
  return { gradient: out, samples };
}
