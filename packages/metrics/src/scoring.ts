/**
 * One pass over a batch of model outputs: validates every value and works out, per sample, the
 * predicted class, the rank of the true class and the cross-entropy. Internal: the public
 * one-shot functions and the streaming accumulator are built on it, so they agree exactly.
 */
import { formatCount } from '@shardline/core/errors';
import {
  describeValue,
  invalidArgument,
  requireFinite,
  requireLabels,
  requireNumberArray,
} from './validation.js';

/**
 * The default probability clip for cross-entropy, 1e-7: Keras' `backend.epsilon()`, which
 * TensorFlow.js' `categoricalCrossentropy` uses too, so losses match what `model.evaluate` reports.
 */
export const DEFAULT_EPSILON = 1e-7;

/**
 * How far a probability row's sum may stray from 1. Loose enough for float16 softmax outputs,
 * tight enough that logits or unnormalised scores passed as probabilities are caught.
 */
export const ROW_SUM_TOLERANCE = 0.01;

/**
 * Model outputs for a batch: either `probabilities` (softmax outputs) or `logits` (pre-softmax
 * scores), row-major `batch x numClasses`. Exactly one must be given.
 */
export type ModelOutputs =
  | { probabilities: ArrayLike<number>; logits?: undefined }
  | { logits: ArrayLike<number>; probabilities?: undefined };

/** What {@link scoreBatch} found for each sample of a batch. */
export interface ScoredBatch {
  /** Samples in the batch. */
  count: number;
  /** Validated labels. */
  labels: ArrayLike<number>;
  /** Predicted class per sample: the first index of the row maximum (like `argmax`). */
  predicted: Int32Array;
  /**
   * Rank of the true class per sample: how many classes score higher, ties going to the lower
   * index (so rank 0 means "the argmax is correct", and top-k holds when rank < k).
   */
  rank: Int32Array;
  /** The predicted class's probability per sample (softmax of the logits, or the renormalised row). */
  confidence: Float64Array;
  /** Sum of the per-sample cross-entropies, in float64. */
  lossSum: number;
}

/** Validates the epsilon used to clip probabilities. */
export function requireEpsilon(value: unknown): number {
  const eps = requireFinite('epsilon', value);
  if (!(eps > 0 && eps < 0.5)) {
    invalidArgument(
      `epsilon must be in (0, 0.5), found ${describeValue(value)}. ` +
        `It clips probabilities to [epsilon, 1 - epsilon] before the log; the default is ${DEFAULT_EPSILON}.`,
    );
  }
  return eps;
}

/**
 * Scores a batch. Throws `INVALID_ARGUMENT` before anything is returned when any input is
 * malformed, so callers can apply the result all-or-nothing.
 */
export function scoreBatch(
  outputs: ModelOutputs,
  labelsInput: unknown,
  numClasses: number,
  epsilon: number,
  /** Overrides the name used in messages for the output array (e.g. `scores`). */
  outputsName?: string,
): ScoredBatch {
  const hasProbabilities = outputs.probabilities !== undefined;
  const hasLogits = outputs.logits !== undefined;
  if (hasProbabilities === hasLogits) {
    invalidArgument(
      hasProbabilities
        ? 'Both probabilities and logits were given: pass exactly one of them.'
        : 'Neither probabilities nor logits were given: pass the model outputs as one of them ' +
            '(row-major, batch x numClasses).',
    );
  }
  const name = outputsName ?? (hasProbabilities ? 'probabilities' : 'logits');
  const values = requireNumberArray(
    name,
    hasProbabilities ? outputs.probabilities : outputs.logits,
  );
  const labels = requireLabels('labels', labelsInput, numClasses);
  const count = labels.length;
  if (values.length !== count * numClasses) {
    const hint =
      labels.length === values.length && numClasses > 1
        ? ' One value per label suggests predicted class indices: pass the full score rows instead.'
        : values.length % numClasses === 0
          ? ` That is ${formatCount(values.length / numClasses)} rows for ${formatCount(count)} labels: pass one label per row.`
          : ' Check numClasses and that the array is row-major (batch x classes).';
    invalidArgument(
      `${name} has ${formatCount(values.length)} values, expected labels.length x numClasses = ` +
        `${formatCount(count)} x ${formatCount(numClasses)} = ${formatCount(count * numClasses)}.${hint}`,
    );
  }

  const predicted = new Int32Array(count);
  const rank = new Int32Array(count);
  const confidence = new Float64Array(count);
  let lossSum = 0;
  for (let r = 0; r < count; r++) {
    const base = r * numClasses;
    const label = labels[r]!;
    const target = values[base + label]!;
    let best = 0;
    let bestValue = Number.NEGATIVE_INFINITY;
    let above = 0;
    let sum = 0;
    for (let c = 0; c < numClasses; c++) {
      const v = values[base + c]!;
      if (hasProbabilities ? !(v >= 0 && v <= 1) : !Number.isFinite(v)) {
        invalidValue(name, hasProbabilities, values, base + c, r, c);
      }
      if (v > bestValue) {
        bestValue = v;
        best = c;
      }
      if (v > target || (v === target && c < label)) above += 1;
      sum += hasProbabilities ? v : 0;
    }
    predicted[r] = best;
    rank[r] = above;
    if (hasProbabilities) {
      if (Math.abs(sum - 1) > ROW_SUM_TOLERANCE) {
        invalidArgument(
          `probabilities row ${r} sums to ${sum}, expected 1 (within ${ROW_SUM_TOLERANCE}): these look like ` +
            'logits or unnormalised scores. Pass them as logits instead, or apply softmax first.',
          { row: r, sum },
        );
      }
      // Renormalise, then clip, exactly as tfjs-layers' categoricalCrossentropy does.
      const p = Math.min(Math.max(target / sum, epsilon), 1 - epsilon);
      lossSum -= Math.log(p);
      confidence[r] = bestValue / sum;
    } else {
      // log-sum-exp shifted by the row maximum: exact and overflow-free; no clipping needed.
      let expSum = 0;
      for (let c = 0; c < numClasses; c++) expSum += Math.exp(values[base + c]! - bestValue);
      lossSum += bestValue + Math.log(expSum) - target;
      confidence[r] = 1 / expSum;
    }
  }
  return { count, labels, predicted, rank, confidence, lossSum };
}

function invalidValue(
  name: string,
  probabilities: boolean,
  values: ArrayLike<number>,
  index: number,
  row: number,
  col: number,
): never {
  const v = values[index]!;
  const expected = probabilities ? 'probabilities in [0, 1]' : 'finite numbers';
  const what = Number.isNaN(v) ? 'NaN' : describeValue(v);
  const todo = Number.isFinite(v)
    ? 'Pass softmax outputs as probabilities, or raw scores as logits.'
    : 'Non-finite outputs usually mean the model diverged: check the loss and the learning rate.';
  invalidArgument(
    `${name}[${index}] (row ${row}, class ${col}) is ${what}: expected ${expected}. ${todo}`,
    {
      index,
      row,
      class: col,
      value: v,
    },
  );
}
