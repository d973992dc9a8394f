import { hasErrorCode, type ShardlineErrorCode } from '@shardline/core/errors';
import { expect } from 'vitest';

/**
 * Asserts that `fn` throws a ShardlineError with `code` whose message contains every `part`.
 * Errors are identified by code, as the project's conventions ask, not by class.
 */
export function expectShardlineError(
  fn: () => unknown,
  code: ShardlineErrorCode,
  ...parts: string[]
): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected a throw').toBeDefined();
  expect(hasErrorCode(caught, code), `expected code ${code}, got ${String(caught)}`).toBe(true);
  for (const part of parts) expect((caught as Error).message).toContain(part);
}

/** A small seeded PRNG (mulberry32), so property tests are reproducible. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random batch of softmax rows (float32) and labels. */
export function randomBatch(
  random: () => number,
  batch: number,
  numClasses: number,
): { probabilities: Float32Array; logits: Float32Array; labels: Uint8Array } {
  const logits = new Float32Array(batch * numClasses);
  const probabilities = new Float32Array(batch * numClasses);
  const labels = new Uint8Array(batch);
  for (let r = 0; r < batch; r++) {
    labels[r] = Math.floor(random() * numClasses);
    let sum = 0;
    for (let c = 0; c < numClasses; c++) {
      // Scores biased towards the label, so accuracy is neither 0 nor 1.
      const z = 3 * random() + (c === labels[r] ? 1.5 : 0);
      logits[r * numClasses + c] = z;
      sum += Math.exp(z);
    }
    for (let c = 0; c < numClasses; c++) {
      probabilities[r * numClasses + c] = Math.exp(logits[r * numClasses + c]!) / sum;
    }
  }
  return { probabilities, logits, labels };
}
