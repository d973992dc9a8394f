/**
 * Confusion matrices and the scores derived from them: per-class precision, recall and F1,
 * and their macro and support-weighted averages.
 *
 * Zero-denominator rule (scikit-learn's `zero_division=0`): a ratio whose denominator is zero
 * is reported as 0, never NaN, so reports stay JSON-serialisable and sortable.
 */
import { formatCount } from '@shardline/core/errors';
import {
  describeValue,
  invalidArgument,
  requireInteger,
  requireLabels,
  resolveClassNames,
} from './validation.js';

/**
 * A confusion matrix as nested arrays: `matrix[t][p]` counts samples whose true class is `t`
 * and whose predicted class is `p` (rows = true class, columns = predicted class).
 */
export type ConfusionMatrix = number[][];

/** Precision, recall and F1 of one class, with the counts they came from. */
export interface ClassScore {
  /** Class index. */
  index: number;
  /** Class name (the index as a string when no names were given). */
  name: string;
  /** `tp / predicted`; 0 when the class was never predicted. */
  precision: number;
  /** `tp / support`; 0 when the class never occurs in the labels. */
  recall: number;
  /** `2·tp / (support + predicted)`, the harmonic mean of precision and recall; 0 when both counts are 0. */
  f1: number;
  /** Samples whose true class is this one (the row sum). */
  support: number;
  /** Samples predicted as this class (the column sum). */
  predicted: number;
}

/** Precision, recall and F1 averaged over classes. */
export interface AverageScores {
  precision: number;
  recall: number;
  f1: number;
}

/** Everything {@link precisionRecallF1} derives from a confusion matrix. */
export interface ClassScores {
  /** Samples counted (the matrix total). */
  count: number;
  /** Correct predictions / count (the trace over the total); 0 when count is 0. */
  accuracy: number;
  /** One entry per class, in class-index order. */
  perClass: ClassScore[];
  /**
   * Unweighted mean over the classes that occur in the labels or the predictions (scikit-learn's
   * default label set). Classes that occur in neither are left out rather than counted as 0, so
   * a small evaluation that happens to miss a class is not penalised for it.
   */
  macro: AverageScores;
  /** Mean over classes weighted by support (true-class count); 0 when count is 0. */
  weighted: AverageScores;
}

/** `numerator / denominator`, or 0 when the denominator is 0 (scikit-learn `zero_division=0`). */
export function safeRatio(numerator: number, denominator: number): number {
  return denominator === 0 ? 0 : numerator / denominator;
}

/**
 * Counts a confusion matrix from class-index labels and predictions.
 *
 * @example
 * ```ts
 * confusionMatrix({ labels: Uint8Array.of(0, 1, 1), predictions: Int32Array.of(0, 1, 0), numClasses: 2 });
 * // [[1, 0],
 * //  [1, 1]]
 * ```
 */
export function confusionMatrix(options: {
  /** True class indices. */
  labels: ArrayLike<number>;
  /** Predicted class indices (for example from {@link argmaxRows}), one per label. */
  predictions: ArrayLike<number>;
  numClasses: number;
}): ConfusionMatrix {
  const numClasses = requireInteger('numClasses', options.numClasses, 1);
  const labels = requireLabels('labels', options.labels, numClasses);
  const predictions = requireLabels('predictions', options.predictions, numClasses, labels.length);
  const counts = new Float64Array(numClasses * numClasses);
  for (let i = 0; i < labels.length; i++) counts[labels[i]! * numClasses + predictions[i]!]! += 1;
  return countsToMatrix(counts, numClasses);
}

/**
 * Per-class precision, recall and F1, their macro and weighted averages, and accuracy, from a
 * confusion matrix (rows = true class, columns = predicted class).
 *
 * @example
 * ```ts
 * const scores = precisionRecallF1([[1, 0], [1, 1]], { classNames: ['cat', 'dog'] });
 * scores.perClass[0]; // { index: 0, name: 'cat', precision: 0.5, recall: 1, f1: 0.666…, support: 1, predicted: 2 }
 * ```
 */
export function precisionRecallF1(
  matrix: readonly (readonly number[])[],
  options: { classNames?: readonly string[] } = {},
): ClassScores {
  const counts = matrixToCounts(matrix);
  const numClasses = Math.round(Math.sqrt(counts.length));
  return scoresFromCounts(counts, numClasses, resolveClassNames(options.classNames, numClasses));
}

/** Scores from a flat row-major count array. Internal: inputs are already validated. */
export function scoresFromCounts(
  counts: Float64Array,
  numClasses: number,
  classNames: string[],
): ClassScores {
  const support = new Float64Array(numClasses);
  const predicted = new Float64Array(numClasses);
  let total = 0;
  let correct = 0;
  for (let t = 0; t < numClasses; t++) {
    for (let p = 0; p < numClasses; p++) {
      const n = counts[t * numClasses + p]!;
      support[t]! += n;
      predicted[p]! += n;
      total += n;
      if (t === p) correct += n;
    }
  }

  const perClass: ClassScore[] = [];
  const macroSum = { precision: 0, recall: 0, f1: 0 };
  const weightedSum = { precision: 0, recall: 0, f1: 0 };
  let macroClasses = 0;
  for (let c = 0; c < numClasses; c++) {
    const tp = counts[c * numClasses + c]!;
    const s = support[c]!;
    const p = predicted[c]!;
    const score: ClassScore = {
      index: c,
      name: classNames[c]!,
      precision: safeRatio(tp, p),
      recall: safeRatio(tp, s),
      // 2tp / (2tp + fp + fn) equals 2PR / (P + R) wherever both are defined, and needs no
      // special case when precision and recall are both 0 but the counts are not.
      f1: safeRatio(2 * tp, s + p),
      support: s,
      predicted: p,
    };
    perClass.push(score);
    if (s + p > 0) {
      macroClasses += 1;
      macroSum.precision += score.precision;
      macroSum.recall += score.recall;
      macroSum.f1 += score.f1;
    }
    weightedSum.precision += s * score.precision;
    weightedSum.recall += s * score.recall;
    weightedSum.f1 += s * score.f1;
  }

  return {
    count: total,
    accuracy: safeRatio(correct, total),
    perClass,
    macro: {
      precision: safeRatio(macroSum.precision, macroClasses),
      recall: safeRatio(macroSum.recall, macroClasses),
      f1: safeRatio(macroSum.f1, macroClasses),
    },
    weighted: {
      precision: safeRatio(weightedSum.precision, total),
      recall: safeRatio(weightedSum.recall, total),
      f1: safeRatio(weightedSum.f1, total),
    },
  };
}

/** Flat row-major counts -> nested arrays. */
export function countsToMatrix(counts: Float64Array, numClasses: number): ConfusionMatrix {
  const matrix: ConfusionMatrix = [];
  for (let t = 0; t < numClasses; t++) {
    matrix.push(Array.from(counts.subarray(t * numClasses, (t + 1) * numClasses)));
  }
  return matrix;
}

/** Validates a square matrix of non-negative finite counts and flattens it row-major. */
export function matrixToCounts(matrix: unknown, name = 'matrix'): Float64Array {
  if (!Array.isArray(matrix) || matrix.length === 0) {
    invalidArgument(
      `${name} must be a non-empty square array of rows (rows = true class, columns = predicted class), ` +
        `found ${describeValue(matrix)}.`,
    );
  }
  const n = matrix.length;
  const counts = new Float64Array(n * n);
  for (let t = 0; t < n; t++) {
    const row: unknown = matrix[t];
    if (!Array.isArray(row) || row.length !== n) {
      invalidArgument(
        `${name}[${t}] must be an array of ${formatCount(n)} counts (the matrix must be square), ` +
          `found ${describeValue(row)}.`,
      );
    }
    for (let p = 0; p < n; p++) {
      const v: unknown = row[p];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
        invalidArgument(
          `${name}[${t}][${p}] must be a finite count >= 0, found ${describeValue(v)}.`,
        );
      }
      counts[t * n + p] = v;
    }
  }
  return counts;
}
