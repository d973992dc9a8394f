/**
 * Classification metrics on plain typed arrays: one-shot functions (argmax, accuracy, top-k)
 * and a streaming accumulator that evaluates batch by batch and merges across workers.
 */
import { formatCount, ShardlineError } from '@shardline/core/errors';
import {
  type AverageScores,
  type ClassScore,
  type ConfusionMatrix,
  countsToMatrix,
  safeRatio,
  scoresFromCounts,
} from './confusion.js';
import { DEFAULT_EPSILON, type ModelOutputs, requireEpsilon, scoreBatch } from './scoring.js';
import {
  describeValue,
  invalidArgument,
  requireFinite,
  requireInteger,
  requireLabels,
  requireNumberArray,
  resolveClassNames,
} from './validation.js';

/**
 * The predicted class of each row of a row-major `batch x numClasses` score array
 * (probabilities or logits): the index of the row maximum, the first one on ties.
 *
 * @example
 * ```ts
 * argmaxRows(Float32Array.of(0.1, 0.9, 0.7, 0.3), 2); // Int32Array [1, 0]
 * ```
 */
export function argmaxRows(scores: ArrayLike<number>, numClasses: number): Int32Array {
  requireInteger('numClasses', numClasses, 1);
  const values = requireNumberArray('scores', scores);
  if (values.length % numClasses !== 0) {
    invalidArgument(
      `scores has ${formatCount(values.length)} values, expected a multiple of numClasses = ${formatCount(numClasses)} ` +
        '(row-major, batch x numClasses). Check numClasses.',
    );
  }
  const rows = values.length / numClasses;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    let bestValue = Number.NEGATIVE_INFINITY;
    for (let c = 0; c < numClasses; c++) {
      const v = values[r * numClasses + c]!;
      if (Number.isNaN(v)) {
        invalidArgument(
          `scores[${r * numClasses + c}] (row ${r}, class ${c}) is NaN: expected numbers. ` +
            'NaN outputs usually mean the model diverged: check the loss and the learning rate.',
        );
      }
      if (v > bestValue) {
        bestValue = v;
        best = c;
      }
    }
    out[r] = best;
  }
  return out;
}

/**
 * Fraction of predictions equal to their labels; 0 for empty input.
 *
 * @example
 * ```ts
 * accuracy({ labels: Uint8Array.of(0, 1, 1, 2), predictions: Int32Array.of(0, 1, 2, 2) }); // 3 / 4 = 0.75
 * ```
 */
export function accuracy(options: {
  /** True class indices. */
  labels: ArrayLike<number>;
  /** Predicted class indices (for example from {@link argmaxRows}), one per label. */
  predictions: ArrayLike<number>;
}): number {
  const labels = requireLabels('labels', options.labels, Number.POSITIVE_INFINITY);
  const predictions = requireLabels(
    'predictions',
    options.predictions,
    Number.POSITIVE_INFINITY,
    labels.length,
  );
  let correct = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] === predictions[i]) correct += 1;
  return safeRatio(correct, labels.length);
}

/**
 * Fraction of samples whose true class is among the `k` highest scores of its row; 0 for empty
 * input. Ties rank the lower class index first, the same rule as {@link argmaxRows}, so top-1
 * accuracy always equals accuracy. (`tf.math.in_top_k` instead counts every tied class as in
 * the top k, so a constant output would score 100%.)
 *
 * @example
 * ```ts
 * // Row 0: label 2 has the 2nd-highest score -> in the top 2. Row 1: label 0 is 3rd -> not.
 * topKAccuracy({ scores: Float32Array.of(0.5, 0.1, 0.4, 0.1, 0.5, 0.4), labels: Uint8Array.of(2, 0), numClasses: 3, k: 2 }); // 0.5
 * ```
 */
export function topKAccuracy(options: {
  /** Row-major `batch x numClasses` probabilities or logits (only their order matters). */
  scores: ArrayLike<number>;
  /** True class indices, one per row. */
  labels: ArrayLike<number>;
  numClasses: number;
  k: number;
}): number {
  const numClasses = requireInteger('numClasses', options.numClasses, 1);
  const k = requireInteger('k', options.k, 1, numClasses);
  // Scored as logits: any finite scores are allowed, and only the ranks are used.
  const scored = scoreBatch(
    { logits: options.scores },
    options.labels,
    numClasses,
    DEFAULT_EPSILON,
    'scores',
  );
  let hits = 0;
  for (let i = 0; i < scored.count; i++) if (scored.rank[i]! < k) hits += 1;
  return safeRatio(hits, scored.count);
}

/** Options of {@link createClassificationAccumulator}. */
export interface ClassificationOptions {
  /** Number of classes (10 for Fashion-MNIST). */
  numClasses: number;
  /** Extra top-k accuracies to track, e.g. `[5]`; each k in `[1, numClasses]`. Default none. */
  topK?: readonly number[];
  /** One name per class, in index order, used in the report and the text tables. */
  classNames?: readonly string[];
  /** Probability clip for cross-entropy; default {@link DEFAULT_EPSILON} (1e-7). */
  epsilon?: number;
  /**
   * How many misclassified samples to keep (default 0): those with the lowest `indices`, so the
   * kept set does not depend on how the samples were split into batches or shards. Batches must
   * then pass `indices`.
   */
  keepMisclassified?: number;
}

/** A sample the model got wrong, as {@link ClassificationState.misclassified} keeps it. */
export interface MisclassifiedSample {
  /** The sample's index in its dataset (the batch's `indices` entry). */
  index: number;
  /** True class. */
  label: number;
  /** Predicted class (the argmax). */
  predicted: number;
  /** The predicted class's probability. */
  confidence: number;
}

/** One batch for {@link ClassificationAccumulator.update}. */
export type ClassificationBatch = ModelOutputs & {
  /** Class indices, one per row of the outputs (`Uint8Array` as the datasets produce, `Int32Array`, ...). */
  labels: ArrayLike<number>;
  /**
   * The loss the model reported for this batch (the mean over its samples, possibly including
   * regularisation). Averaged into `reportedLoss`, weighted by batch size; the cross-entropy in
   * `loss` is computed from the outputs either way.
   */
  loss?: number;
  /**
   * Each row's index in its dataset (whole numbers), needed when the accumulator keeps
   * misclassified samples (`keepMisclassified`), which it names by these indices.
   */
  indices?: ArrayLike<number>;
};

/** What {@link ClassificationAccumulator.update} found in one batch. */
export interface BatchSummary {
  /** Samples in the batch. */
  count: number;
  /** Accuracy on this batch alone. */
  accuracy: number;
  /** Mean cross-entropy on this batch alone. */
  loss: number;
}

/** Top-k accuracy for one k. */
export interface TopKAccuracy {
  k: number;
  accuracy: number;
}

/**
 * The plain, JSON-serialisable report of a {@link ClassificationAccumulator}. Every ratio whose
 * denominator is zero is 0 (see the package README); `count` tells an empty report apart.
 */
export interface ClassificationReport {
  numClasses: number;
  classNames: string[];
  /** Samples seen. */
  count: number;
  /** Fraction of samples whose argmax is the label. */
  accuracy: number;
  /** Mean cross-entropy computed from the outputs. */
  loss: number;
  /**
   * Mean of the losses passed to `update`, weighted by batch size, over the batches that passed
   * one (`count` says how many samples that covers); `null` when none did.
   */
  reportedLoss: { mean: number; count: number } | null;
  /** One entry per tracked k, ascending. */
  topK: TopKAccuracy[];
  /** Rows = true class, columns = predicted class. */
  confusionMatrix: ConfusionMatrix;
  /** The misclassified samples kept (`keepMisclassified`), lowest indices first. */
  misclassified?: MisclassifiedSample[];
  /** Precision, recall, F1, support and predicted count per class. */
  perClass: ClassScore[];
  /** Unweighted mean over classes seen in the labels or the predictions. */
  macro: AverageScores;
  /** Mean over classes weighted by support. */
  weighted: AverageScores;
}

/**
 * The plain-data state of a {@link ClassificationAccumulator}: what a worker sends so the
 * coordinator can merge it. Counts are exact up to 2^53.
 */
export interface ClassificationState {
  /** Format version; bumped on any incompatible change. */
  version: 1;
  numClasses: number;
  classNames: string[];
  topK: number[];
  epsilon: number;
  count: number;
  /** Confusion counts, flat row-major (`numClasses²` entries). */
  confusion: number[];
  /** Sum of per-sample cross-entropies. */
  lossSum: number;
  /** Hits per entry of `topK`. */
  topKHits: number[];
  /** Σ reported batch loss × batch size. */
  reportedLossSum: number;
  /** Samples covered by reported losses. */
  reportedLossCount: number;
  /**
   * Up to `keepMisclassified` misclassified samples, the lowest indices first; absent when the
   * accumulator keeps none.
   */
  misclassified?: MisclassifiedSample[];
}

/** A streaming classification evaluator. Create with {@link createClassificationAccumulator}. */
export interface ClassificationAccumulator {
  /** Number of classes it was created with. */
  readonly numClasses: number;
  /** Class names, one per class (the indices as strings when none were given). */
  readonly classNames: readonly string[];
  /** The tracked top-k values, sorted ascending and deduplicated. */
  readonly topK: readonly number[];
  /**
   * Adds one batch. All inputs are validated before anything is counted, so a batch that throws
   * leaves the accumulator unchanged.
   * @throws ShardlineError `INVALID_ARGUMENT` on wrong lengths, out-of-range labels, NaN or
   *   out-of-range probabilities, or rows that do not sum to 1.
   */
  update(batch: ClassificationBatch): BatchSummary;
  /**
   * Folds in another accumulator, or a {@link ClassificationState} from `snapshot()` (e.g. from
   * another worker), as if its batches had been added here. Merging is exact: counts add, and
   * the result equals a single pass over all batches up to float rounding of the loss sums.
   * @throws ShardlineError `MISMATCH` when numClasses, classNames, topK or epsilon differ;
   *   `INVALID_ARGUMENT` when a state is malformed.
   */
  merge(other: ClassificationAccumulator | ClassificationState): void;
  /** The report so far: a fresh plain object, safe to keep, mutate or `JSON.stringify`. */
  result(): ClassificationReport;
  /** The plain-data state, JSON-serialisable; `merge` accepts it. */
  snapshot(): ClassificationState;
  /** Forgets every batch, keeping the options. */
  reset(): void;
}

/**
 * Creates a streaming classification evaluator: feed it batches of model outputs and labels,
 * merge shards from several workers, and read accuracy, loss, top-k, the confusion matrix and
 * per-class precision / recall / F1.
 *
 * @example
 * ```ts
 * const acc = createClassificationAccumulator({ numClasses: 3, topK: [2] });
 * acc.update({ probabilities: Float32Array.of(0.7, 0.2, 0.1, 0.1, 0.3, 0.6), labels: Uint8Array.of(0, 1) });
 * acc.update({ logits: Float32Array.of(0, 2, 1), labels: Uint8Array.of(1) });
 * acc.result().accuracy; // 2 / 3
 * ```
 */
export function createClassificationAccumulator(
  options: ClassificationOptions,
): ClassificationAccumulator {
  const numClasses = requireInteger('numClasses', options.numClasses, 1);
  const classNames = resolveClassNames(options.classNames, numClasses);
  const topK = resolveTopK(options.topK, numClasses);
  const epsilon = requireEpsilon(options.epsilon ?? DEFAULT_EPSILON);
  // A bound keeps a state small enough for one message whatever the caller asks for.
  const keep = requireInteger('keepMisclassified', options.keepMisclassified ?? 0, 0, 10_000);
  let misclassified: MisclassifiedSample[] = [];

  const confusion = new Float64Array(numClasses * numClasses);
  const topKHits = new Float64Array(topK.length);
  let count = 0;
  let lossSum = 0;
  let reportedLossSum = 0;
  let reportedLossCount = 0;

  const snapshot = (): ClassificationState => ({
    version: 1,
    numClasses,
    classNames: [...classNames],
    topK: [...topK],
    epsilon,
    count,
    confusion: Array.from(confusion),
    lossSum,
    topKHits: Array.from(topKHits),
    reportedLossSum,
    reportedLossCount,
    ...(keep > 0 ? { misclassified: misclassified.map((m) => ({ ...m })) } : {}),
  });

  const accumulator: ClassificationAccumulator = {
    numClasses,
    classNames: Object.freeze([...classNames]),
    topK: Object.freeze([...topK]),
    update(batch) {
      if (typeof batch !== 'object' || batch === null) {
        invalidArgument(
          `update expects { probabilities | logits, labels, loss? }, found ${describeValue(batch)}.`,
        );
      }
      const loss = batch.loss === undefined ? undefined : requireFinite('loss', batch.loss);
      const scored = scoreBatch(batch, batch.labels, numClasses, epsilon);
      const indices = keep > 0 ? requireIndices(batch.indices, scored.count) : undefined;
      // Validation is done: from here on nothing throws, so the update is all-or-nothing.
      let correct = 0;
      for (let i = 0; i < scored.count; i++) {
        const predicted = scored.predicted[i]!;
        const label = scored.labels[i]!;
        confusion[label * numClasses + predicted]! += 1;
        if (predicted === label) correct += 1;
        const rank = scored.rank[i]!;
        for (let j = 0; j < topK.length; j++) if (rank < topK[j]!) topKHits[j]! += 1;
      }
      if (indices) {
        const wrong: MisclassifiedSample[] = [];
        for (let i = 0; i < scored.count; i++) {
          const predicted = scored.predicted[i]!;
          const label = scored.labels[i]!;
          if (predicted !== label) {
            wrong.push({ index: indices[i]!, label, predicted, confidence: scored.confidence[i]! });
          }
        }
        misclassified = lowestIndices(misclassified, wrong, keep);
      }
      count += scored.count;
      lossSum += scored.lossSum;
      if (loss !== undefined && scored.count > 0) {
        reportedLossSum += loss * scored.count;
        reportedLossCount += scored.count;
      }
      return {
        count: scored.count,
        accuracy: safeRatio(correct, scored.count),
        loss: safeRatio(scored.lossSum, scored.count),
      };
    },
    merge(other) {
      const state = isAccumulator(other) ? other.snapshot() : requireState(other);
      requireCompatible(state, { numClasses, classNames, topK, epsilon });
      for (let i = 0; i < confusion.length; i++) confusion[i]! += state.confusion[i]!;
      for (let j = 0; j < topK.length; j++) topKHits[j]! += state.topKHits[j]!;
      count += state.count;
      lossSum += state.lossSum;
      reportedLossSum += state.reportedLossSum;
      reportedLossCount += state.reportedLossCount;
      if (keep > 0 && state.misclassified) {
        misclassified = lowestIndices(misclassified, state.misclassified, keep);
      }
    },
    result() {
      const scores = scoresFromCounts(confusion, numClasses, classNames);
      return {
        numClasses,
        classNames: [...classNames],
        count,
        accuracy: scores.accuracy,
        loss: safeRatio(lossSum, count),
        reportedLoss:
          reportedLossCount === 0
            ? null
            : { mean: reportedLossSum / reportedLossCount, count: reportedLossCount },
        topK: topK.map((k, j) => ({ k, accuracy: safeRatio(topKHits[j]!, count) })),
        confusionMatrix: countsToMatrix(confusion, numClasses),
        ...(keep > 0 ? { misclassified: misclassified.map((m) => ({ ...m })) } : {}),
        perClass: scores.perClass,
        macro: scores.macro,
        weighted: scores.weighted,
      };
    },
    snapshot,
    reset() {
      confusion.fill(0);
      topKHits.fill(0);
      count = 0;
      lossSum = 0;
      reportedLossSum = 0;
      reportedLossCount = 0;
      misclassified = [];
    },
  };
  return accumulator;
}

/** The `keep` samples with the lowest indices of both lists (copies). */
function lowestIndices(
  kept: readonly MisclassifiedSample[],
  more: readonly MisclassifiedSample[],
  keep: number,
): MisclassifiedSample[] {
  return [...kept, ...more.map((m) => ({ ...m }))].sort((a, b) => a.index - b.index).slice(0, keep);
}

function requireIndices(indices: ArrayLike<number> | undefined, count: number): ArrayLike<number> {
  if (indices === undefined || typeof indices.length !== 'number') {
    invalidArgument(
      `indices are required when the accumulator keeps misclassified samples: expected ${formatCount(count)} ` +
        `sample indices, found ${describeValue(indices)}. Pass each row's index in its dataset as \`indices\`, or create the accumulator without keepMisclassified.`,
    );
  }
  if (indices.length !== count) {
    invalidArgument(
      `indices has ${formatCount(indices.length)} entries, expected one per row (${formatCount(count)}).`,
    );
  }
  for (let i = 0; i < count; i++) requireInteger(`indices[${i}]`, indices[i], 0);
  return indices;
}

/**
 * The full {@link ClassificationReport} for one batch of outputs: shorthand for an accumulator
 * with a single `update`.
 *
 * @example
 * ```ts
 * const report = evaluateClassification({ numClasses: 10, probabilities, labels, classNames });
 * console.log(formatClassificationReport(report));
 * ```
 */
export function evaluateClassification(
  options: ClassificationOptions & ClassificationBatch,
): ClassificationReport {
  const { numClasses, topK, classNames, epsilon, ...batch } = options;
  const accumulator = createClassificationAccumulator({
    numClasses,
    ...(topK === undefined ? {} : { topK }),
    ...(classNames === undefined ? {} : { classNames }),
    ...(epsilon === undefined ? {} : { epsilon }),
  });
  accumulator.update(batch as ClassificationBatch);
  return accumulator.result();
}

function resolveTopK(topK: readonly number[] | undefined, numClasses: number): number[] {
  if (topK === undefined) return [];
  if (!Array.isArray(topK))
    invalidArgument(`topK must be an array of integers, found ${describeValue(topK)}.`);
  for (const k of topK) requireInteger('each topK entry', k, 1, numClasses);
  // Sorted and deduplicated so that reports and merge checks do not depend on the order given.
  return [...new Set(topK)].sort((a, b) => a - b);
}

function isAccumulator(
  value: ClassificationAccumulator | ClassificationState,
): value is ClassificationAccumulator {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<ClassificationAccumulator>).snapshot === 'function'
  );
}

function requireState(value: unknown): ClassificationState {
  const bad = (what: string): never =>
    invalidArgument(
      `merge expects a ClassificationAccumulator or the state from its snapshot(), but ${what}. ` +
        'Send snapshot() output unchanged (JSON round-trips are fine).',
    );
  if (typeof value !== 'object' || value === null) return bad(`found ${describeValue(value)}`);
  const s = value as Record<string, unknown>;
  if (s.version !== 1) return bad(`version is ${describeValue(s.version)}, expected 1`);
  const isCountArray = (v: unknown): v is number[] =>
    Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0);
  const isCount = (v: unknown): v is number =>
    typeof v === 'number' && Number.isFinite(v) && v >= 0;
  if (typeof s.numClasses !== 'number' || !Number.isInteger(s.numClasses) || s.numClasses < 1) {
    return bad(`numClasses is ${describeValue(s.numClasses)}`);
  }
  if (!Array.isArray(s.classNames) || !s.classNames.every((n) => typeof n === 'string')) {
    return bad('classNames is not an array of strings');
  }
  if (!isCountArray(s.topK)) return bad('topK is not an array of integers');
  if (typeof s.epsilon !== 'number') return bad(`epsilon is ${describeValue(s.epsilon)}`);
  if (!isCountArray(s.confusion) || s.confusion.length !== s.numClasses * s.numClasses) {
    return bad(`confusion is not ${s.numClasses}² = ${s.numClasses * s.numClasses} counts`);
  }
  if (!isCountArray(s.topKHits) || s.topKHits.length !== s.topK.length) {
    return bad('topKHits does not have one count per topK entry');
  }
  for (const key of ['count', 'lossSum', 'reportedLossCount'] as const) {
    if (!isCount(s[key]))
      return bad(`${key} is ${describeValue(s[key])}, expected a finite number >= 0`);
  }
  if (typeof s.reportedLossSum !== 'number' || !Number.isFinite(s.reportedLossSum)) {
    return bad(`reportedLossSum is ${describeValue(s.reportedLossSum)}`);
  }
  if (s.misclassified !== undefined) {
    const classes = s.numClasses;
    const isClass = (v: unknown) =>
      Number.isInteger(v) && (v as number) >= 0 && (v as number) < classes;
    const ok =
      Array.isArray(s.misclassified) &&
      s.misclassified.every(
        (m: Partial<MisclassifiedSample>) =>
          typeof m === 'object' &&
          m !== null &&
          Number.isSafeInteger(m.index) &&
          (m.index as number) >= 0 &&
          isClass(m.label) &&
          isClass(m.predicted) &&
          m.label !== m.predicted &&
          typeof m.confidence === 'number' &&
          m.confidence >= 0 &&
          m.confidence <= 1,
      );
    if (!ok) {
      return bad(
        'misclassified is not a list of { index, label, predicted, confidence } with label ≠ predicted, both classes, and confidence in [0, 1]',
      );
    }
  }
  return value as ClassificationState;
}

function requireCompatible(
  state: ClassificationState,
  mine: { numClasses: number; classNames: string[]; topK: number[]; epsilon: number },
): void {
  const differences: string[] = [];
  if (state.numClasses !== mine.numClasses) {
    differences.push(`numClasses ${state.numClasses} vs ${mine.numClasses}`);
  } else if (
    state.classNames.length !== mine.classNames.length ||
    state.classNames.some((n, i) => n !== mine.classNames[i])
  ) {
    differences.push(
      `classNames ${JSON.stringify(state.classNames)} vs ${JSON.stringify(mine.classNames)}`,
    );
  }
  if (state.topK.length !== mine.topK.length || state.topK.some((k, i) => k !== mine.topK[i])) {
    differences.push(`topK [${state.topK.join(', ')}] vs [${mine.topK.join(', ')}]`);
  }
  if (state.epsilon !== mine.epsilon)
    differences.push(`epsilon ${state.epsilon} vs ${mine.epsilon}`);
  if (differences.length > 0) {
    throw new ShardlineError(
      'MISMATCH',
      `Cannot merge classification accumulators created with different options (other vs this): ` +
        `${differences.join('; ')}. Create every shard's accumulator with the same options.`,
      { details: { other: { ...state, confusion: undefined }, differences } },
    );
  }
}
