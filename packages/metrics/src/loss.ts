/**
 * Loss: cross-entropy computed from model outputs, and a weighted mean for losses that were
 * already computed elsewhere (each worker reports the mean loss of its share and its size).
 */
import { DEFAULT_EPSILON, type ModelOutputs, requireEpsilon, scoreBatch } from './scoring.js';
import { describeValue, invalidArgument, requireFinite, requireInteger } from './validation.js';

export type { ModelOutputs } from './scoring.js';
export { DEFAULT_EPSILON } from './scoring.js';

/**
 * Mean categorical cross-entropy of a batch, `−mean(log p[label])`.
 *
 * With `probabilities`, each row is renormalised to sum to 1 and clipped to
 * `[epsilon, 1 − epsilon]` before the log (as Keras and TensorFlow.js do), so a confident wrong
 * answer costs at most `−log(epsilon)` ≈ 16.1 instead of infinity. With `logits`, the loss is
 * computed exactly with a shifted log-sum-exp and nothing is clipped. Returns 0 for an empty batch.
 *
 * @example
 * ```ts
 * // Two samples, two classes: −(log 0.8 + log 0.4) / 2 ≈ 0.5697
 * crossEntropy({ probabilities: Float32Array.of(0.8, 0.2, 0.6, 0.4), labels: Uint8Array.of(0, 1), numClasses: 2 });
 * ```
 */
export function crossEntropy(
  options: ModelOutputs & {
    /** Class indices, one per row. */
    labels: ArrayLike<number>;
    numClasses: number;
    /** Probability clip; default {@link DEFAULT_EPSILON}. Ignored for logits. */
    epsilon?: number;
  },
): number {
  const numClasses = requireInteger('numClasses', options.numClasses, 1);
  const epsilon = requireEpsilon(options.epsilon ?? DEFAULT_EPSILON);
  const scored = scoreBatch(options, options.labels, numClasses, epsilon);
  return scored.count === 0 ? 0 : scored.lossSum / scored.count;
}

/** The plain-data state of a {@link MeanAccumulator}, for sending between processes. */
export interface MeanState {
  /** Sum of `mean × count` over everything added. */
  sum: number;
  /** Total count (weight). */
  count: number;
}

/** What a {@link MeanAccumulator} reports. */
export interface MeanResult {
  /** Weighted mean; 0 when count is 0. */
  mean: number;
  /** Total count (weight) behind the mean. */
  count: number;
}

/** A running mean of reported values weighted by their sample counts. */
export interface MeanAccumulator {
  /**
   * Adds a value that is itself the mean over `count` samples (default 1), such as the loss a
   * worker reports for its share of a batch. A count of 0 is accepted and changes nothing.
   */
  add(mean: number, count?: number): void;
  /** Folds in another accumulator or its {@link MeanState}, as if its values had been added here. */
  merge(other: MeanAccumulator | MeanState): void;
  /** The weighted mean so far. */
  result(): MeanResult;
  /** The plain-data state, JSON-serialisable; `merge` accepts it. */
  snapshot(): MeanState;
  /** Forgets everything added. */
  reset(): void;
}

/**
 * Creates a {@link MeanAccumulator}: `Σ meanᵢ·countᵢ / Σ countᵢ`, the mean over all samples,
 * which is what averaging per-batch losses should give when batches differ in size.
 *
 * @example
 * ```ts
 * const trainLoss = createMeanAccumulator();
 * trainLoss.add(0.5, 64); // worker 1: mean loss 0.5 over 64 samples
 * trainLoss.add(0.8, 32); // worker 2: mean loss 0.8 over 32 samples
 * trainLoss.result(); // { mean: (0.5·64 + 0.8·32) / 96 = 0.6, count: 96 }
 * ```
 */
export function createMeanAccumulator(): MeanAccumulator {
  let sum = 0;
  let count = 0;
  const accumulator: MeanAccumulator = {
    add(mean, n = 1) {
      requireFinite('mean', mean);
      requireFinite('count', n, { nonNegative: true });
      sum += mean * n;
      count += n;
    },
    merge(other) {
      const state = isMeanAccumulator(other) ? other.snapshot() : requireMeanState(other);
      sum += state.sum;
      count += state.count;
    },
    result() {
      return { mean: count === 0 ? 0 : sum / count, count };
    },
    snapshot() {
      return { sum, count };
    },
    reset() {
      sum = 0;
      count = 0;
    },
  };
  return accumulator;
}

function isMeanAccumulator(value: MeanAccumulator | MeanState): value is MeanAccumulator {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<MeanAccumulator>).snapshot === 'function'
  );
}

function requireMeanState(value: unknown): MeanState {
  if (typeof value !== 'object' || value === null) {
    invalidArgument(
      `merge expects a MeanAccumulator or a { sum, count } state from snapshot(), found ${describeValue(value)}.`,
    );
  }
  const { sum, count } = value as Record<string, unknown>;
  return {
    sum: requireFinite('state.sum', sum),
    count: requireFinite('state.count', count, { nonNegative: true }),
  };
}
