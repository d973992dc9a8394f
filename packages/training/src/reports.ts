/**
 * Checks of the numbers a worker reports beside its tensors. The coordinator can compute every
 * one of them itself (it assigns each share and each evaluation slice), so a report that does
 * not match its assignment is refused outright: one buggy or hostile worker claiming 4,294,967,295
 * samples would otherwise outweigh every honest worker in the sample-weighted average, and
 * inflated evaluation counts would make a model that learned nothing report 0.9999995 accuracy.
 *
 * Each check throws an INVALID_ARGUMENT {@link ShardlineError} that names the field (as the wire
 * spells it), the value and what was expected; `details.field` carries the field for counting.
 */
import { ShardlineError } from '@shardline/core';
import type { ClassificationState } from '@shardline/metrics';
import {
  type EvalAssignment,
  MISCLASSIFIED_KEPT,
  type ShareAssignment,
  type ShareResult,
} from './contract.js';

/** The numbers of a share's result, without its gradient. */
export type ShareNumbers = Pick<ShareResult, 'sampleCount' | 'loss' | 'correct' | 'computeSeconds'>;

const REMEDY = 'The report was rejected and the work is redone without this worker.';

function refuse(worker: string, what: string, field: string, value: unknown, expected: string) {
  return new ShardlineError(
    'INVALID_ARGUMENT',
    `Worker ${worker} reported ${field} ${String(value)} for ${what}, expected ${expected}. ${REMEDY}`,
    { details: { field, value: String(value) } },
  );
}

const isCount = (x: number) => Number.isSafeInteger(x) && x >= 0;
const isNonNegativeFinite = (x: number) => Number.isFinite(x) && x >= 0;

/**
 * Checks a share's numbers against its assignment: `sample_count` equals the share's size,
 * `correct` is an integer from 0 to it, `loss` and `compute_seconds` are finite and not negative.
 *
 * @example
 * ```ts
 * checkShareReport(numbers, assignment, 'gpu-box-2'); // throws INVALID_ARGUMENT on a lie
 * ```
 */
export function checkShareReport(
  numbers: ShareNumbers,
  assignment: ShareAssignment,
  worker: string,
): void {
  const what = `step ${assignment.step}`;
  if (numbers.sampleCount !== assignment.samples) {
    throw refuse(
      worker,
      what,
      'sample_count',
      numbers.sampleCount,
      `${assignment.samples}, the size of its share (rank ${assignment.rank} of ${assignment.worldSize})`,
    );
  }
  if (!isCount(numbers.correct) || numbers.correct > numbers.sampleCount) {
    throw refuse(
      worker,
      what,
      'correct',
      numbers.correct,
      `an integer from 0 to ${numbers.sampleCount}`,
    );
  }
  if (!isNonNegativeFinite(numbers.loss)) {
    throw refuse(worker, what, 'loss', numbers.loss, 'a finite number, 0 or more');
  }
  if (!isNonNegativeFinite(numbers.computeSeconds)) {
    throw refuse(
      worker,
      what,
      'compute_seconds',
      numbers.computeSeconds,
      'a finite number of seconds, 0 or more',
    );
  }
}

/**
 * Checks an evaluation slice's counts: `count` equals the slice's size, the confusion matrix has
 * `numClasses²` non-negative integers adding up to it, each row adds up to the images of that
 * class in the slice (when `slice.classCounts` is known), each top-k hit count lies between the
 * matrix's diagonal and the count, and the loss sums are finite and not negative.
 */
export function checkEvaluationReport(
  state: ClassificationState,
  slice: EvalAssignment,
  worker: string,
  expected: { numClasses: number; topK: readonly number[] },
): void {
  const what = `test images ${slice.start} to ${slice.end}`;
  const size = slice.end - slice.start;
  const { numClasses } = expected;
  if (state.count !== size) throw refuse(worker, what, 'count', state.count, `${size}`);
  const { confusion } = state;
  if (confusion.length !== numClasses * numClasses) {
    throw refuse(
      worker,
      what,
      'confusion',
      `with ${confusion.length} entries`,
      `${numClasses * numClasses} (${numClasses} classes squared)`,
    );
  }
  let total = 0;
  let diagonal = 0;
  for (let row = 0; row < numClasses; row++) {
    let rowSum = 0;
    for (let col = 0; col < numClasses; col++) {
      const entry = confusion[row * numClasses + col]!;
      if (!isCount(entry)) {
        throw refuse(worker, what, `confusion[${row}][${col}]`, entry, 'a count, 0 or more');
      }
      rowSum += entry;
      if (row === col) diagonal += entry;
    }
    const classCount = slice.classCounts?.[row];
    if (classCount !== undefined && rowSum !== classCount) {
      throw refuse(
        worker,
        what,
        `confusion row ${row} (sum)`,
        rowSum,
        `${classCount}, the images of class ${row} in the slice`,
      );
    }
    total += rowSum;
  }
  if (total !== size) throw refuse(worker, what, 'confusion (sum)', total, `${size}`);
  if (state.topKHits.length !== expected.topK.length) {
    throw refuse(
      worker,
      what,
      'top_k_hits',
      `with ${state.topKHits.length} entries`,
      `${expected.topK.length}, one for each k in [${expected.topK.join(', ')}]`,
    );
  }
  state.topKHits.forEach((hits, i) => {
    if (!isCount(hits) || hits < diagonal || hits > size) {
      throw refuse(
        worker,
        what,
        `top_k_hits[${i}] (k = ${expected.topK[i]})`,
        hits,
        `a count from ${diagonal} (the correct top-1 predictions) to ${size}`,
      );
    }
  });
  for (const [field, value] of [
    ['loss_sum', state.lossSum],
    ['reported_loss_sum', state.reportedLossSum],
  ] as const) {
    if (!isNonNegativeFinite(value)) {
      throw refuse(worker, what, field, value, 'a finite number, 0 or more');
    }
  }
  if (!isCount(state.reportedLossCount) || state.reportedLossCount > size) {
    throw refuse(
      worker,
      what,
      'reported_loss_count',
      state.reportedLossCount,
      `a count from 0 to ${size}`,
    );
  }
  checkMisclassified(state, slice, worker, what, size - diagonal, numClasses);
}

/**
 * The misclassified images a slice's report names: at most MISCLASSIFIED_KEPT (and no more than
 * the slice got wrong), in the slice, in ascending order without repeats, each with a label and
 * a different prediction among the classes and a probability.
 */
function checkMisclassified(
  state: ClassificationState,
  slice: EvalAssignment,
  worker: string,
  what: string,
  wrong: number,
  numClasses: number,
): void {
  const list = state.misclassified ?? [];
  const most = Math.min(MISCLASSIFIED_KEPT, wrong);
  if (list.length > most) {
    throw refuse(worker, what, 'misclassified', `with ${list.length} entries`, `at most ${most}`);
  }
  let previous = -1;
  for (const [i, m] of list.entries()) {
    if (!isCount(m.index) || m.index < slice.start || m.index >= slice.end || m.index <= previous) {
      throw refuse(
        worker,
        what,
        `misclassified[${i}].index`,
        m.index,
        `an image of the slice (${slice.start} to ${slice.end - 1}) after ${previous}`,
      );
    }
    previous = m.index;
    const isClass = (c: number) => Number.isInteger(c) && c >= 0 && c < numClasses;
    if (!isClass(m.label) || !isClass(m.predicted) || m.label === m.predicted) {
      throw refuse(
        worker,
        what,
        `misclassified[${i}] label ${m.label}, predicted`,
        m.predicted,
        `two different classes from 0 to ${numClasses - 1}`,
      );
    }
    if (!(m.confidence >= 0 && m.confidence <= 1)) {
      throw refuse(worker, what, `misclassified[${i}].confidence`, m.confidence, 'from 0 to 1');
    }
  }
}

/** How many images of each class `labels[start, end)` holds. */
export function classCounts(
  labels: Uint8Array,
  start: number,
  end: number,
  numClasses: number,
): number[] {
  const counts = new Array<number>(numClasses).fill(0);
  for (let i = start; i < end; i++) counts[labels[i]!]!++;
  return counts;
}
