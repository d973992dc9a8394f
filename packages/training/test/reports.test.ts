import { hasErrorCode } from '@shardline/core';
import { type ClassificationState, createClassificationAccumulator } from '@shardline/metrics';
import { describe, expect, it } from 'vitest';
import type { EvalAssignment, ShareAssignment } from '../src/contract.js';
import { checkEvaluationReport, checkShareReport, classCounts } from '../src/reports.js';

const assignment: ShareAssignment = {
  epoch: 0,
  step: 3,
  stepInEpoch: 3,
  rank: 1,
  worldSize: 2,
  samples: 16,
};
const honest = { sampleCount: 16, loss: 0.7, correct: 9, computeSeconds: 0.02 };

/** The message of what `fn` throws, after checking it is an INVALID_ARGUMENT. */
function refusal(fn: () => void): string {
  try {
    fn();
  } catch (error) {
    expect(hasErrorCode(error, 'INVALID_ARGUMENT')).toBe(true);
    return (error as Error).message;
  }
  throw new Error('expected a refusal, got none');
}

describe('checkShareReport', () => {
  it('accepts the numbers of an honest share, and an empty share', () => {
    expect(() => checkShareReport(honest, assignment, 'w')).not.toThrow();
    const empty = { sampleCount: 0, loss: 0, correct: 0, computeSeconds: 0 };
    expect(() => checkShareReport(empty, { ...assignment, samples: 0 }, 'w')).not.toThrow();
  });

  it('refuses each lie, naming the field, the value and what was expected', () => {
    const cases: Array<[Partial<typeof honest>, string]> = [
      [
        { sampleCount: 4_294_967_295 },
        'Worker rogue reported sample_count 4294967295 for step 3, expected 16, the size of its share (rank 1 of 2).',
      ],
      [{ sampleCount: 15 }, 'reported sample_count 15 for step 3, expected 16'],
      [{ correct: 17 }, 'reported correct 17 for step 3, expected an integer from 0 to 16'],
      [{ correct: -1 }, 'reported correct -1'],
      [{ correct: 2.5 }, 'reported correct 2.5'],
      [{ loss: Number.NaN }, 'reported loss NaN for step 3, expected a finite number, 0 or more'],
      [{ loss: -0.1 }, 'reported loss -0.1'],
      [{ loss: Number.POSITIVE_INFINITY }, 'reported loss Infinity'],
      [{ computeSeconds: -1 }, 'reported compute_seconds -1'],
      [{ computeSeconds: Number.NaN }, 'reported compute_seconds NaN'],
    ];
    for (const [lie, message] of cases) {
      const text = refusal(() => checkShareReport({ ...honest, ...lie }, assignment, 'rogue'));
      expect(text).toContain(message);
      expect(text).toContain('The report was rejected and the work is redone without this worker.');
    }
  });
});

const CLASSES = ['a', 'b', 'c'];
const labels = Uint8Array.from([0, 1, 2, 0, 1, 2, 0, 0, 1, 2]);

/** The state an honest worker reports for `labels[start, end)`, predicting label+1 for odd images. */
function evaluation(slice: EvalAssignment): ClassificationState {
  const accumulator = createClassificationAccumulator({
    numClasses: 3,
    classNames: CLASSES,
    topK: [1, 3],
    keepMisclassified: 32,
  });
  const n = slice.end - slice.start;
  const probabilities = new Float32Array(n * 3);
  for (let i = 0; i < n; i++) {
    const label = labels[slice.start + i]!;
    const predicted = i % 2 === 0 ? label : (label + 1) % 3;
    probabilities.set([0.1, 0.1, 0.1], i * 3);
    probabilities[i * 3 + predicted] = 0.8;
  }
  accumulator.update({
    probabilities,
    labels: labels.subarray(slice.start, slice.end),
    indices: Array.from({ length: n }, (_, i) => slice.start + i),
  });
  return accumulator.snapshot();
}

describe('checkEvaluationReport', () => {
  const slice = { start: 2, end: 9, classCounts: classCounts(labels, 2, 9, 3) };
  const expected = { numClasses: 3, topK: [1, 3] };

  it('counts the classes of a slice', () => {
    expect(slice.classCounts).toEqual([3, 2, 2]);
  });

  it('an honest slice names its misclassified images: the odd positions, in order', () => {
    expect(evaluation(slice).misclassified!.map((m) => m.index)).toEqual([3, 5, 7]);
  });

  it('accepts an honest slice, with and without the class counts', () => {
    expect(() => checkEvaluationReport(evaluation(slice), slice, 'w', expected)).not.toThrow();
    const { classCounts: _, ...bare } = slice;
    expect(() => checkEvaluationReport(evaluation(bare), bare, 'w', expected)).not.toThrow();
  });

  it('refuses inflated or inconsistent counts, naming the field', () => {
    const honestState = evaluation(slice);
    const lies: Array<[(s: ClassificationState) => void, string]> = [
      [(s) => (s.count = 1_000_000), 'reported count 1000000 for test images 2 to 9, expected 7'],
      [(s) => (s.confusion[0] = -1), 'reported confusion[0][0] -1'],
      [(s) => (s.confusion[4] = 0.5), 'reported confusion[1][1] 0.5'],
      [(s) => s.confusion.push(0), 'reported confusion with 10 entries'],
      // A row moved to another class: the total still adds up, the rows do not.
      [
        (s) => {
          s.confusion[0]!--;
          s.confusion[3]!++;
        },
        'reported confusion row 0 (sum) 2 for test images 2 to 9, expected 3, the images of class 0',
      ],
      [(s) => (s.topKHits[1] = 8), 'reported top_k_hits[1] (k = 3) 8'],
      [(s) => (s.topKHits[0] = 0), 'reported top_k_hits[0] (k = 1) 0'],
      [(s) => s.topKHits.pop(), 'reported top_k_hits with 1 entries'],
      [(s) => (s.lossSum = Number.NaN), 'reported loss_sum NaN'],
      [(s) => (s.lossSum = -3), 'reported loss_sum -3'],
      [(s) => (s.reportedLossSum = Number.POSITIVE_INFINITY), 'reported reported_loss_sum'],
      [(s) => (s.reportedLossCount = 8), 'reported reported_loss_count 8'],
      // Misclassified images: in the slice, ascending, two different classes, no more than wrong.
      [(s) => (s.misclassified![0]!.index = 1), 'reported misclassified[0].index 1'],
      [(s) => (s.misclassified![1]!.index = 3), 'reported misclassified[1].index 3'],
      [
        (s) => (s.misclassified![0]!.predicted = s.misclassified![0]!.label),
        'misclassified[0] label',
      ],
      [(s) => (s.misclassified![0]!.predicted = 3), 'expected two different classes from 0 to 2'],
      [(s) => (s.misclassified![0]!.confidence = 2), 'reported misclassified[0].confidence 2'],
      [
        (s) => s.misclassified!.push({ index: 8, label: 1, predicted: 2, confidence: 0.8 }),
        'reported misclassified with 4 entries for test images 2 to 9, expected at most 3',
      ],
    ];
    for (const [lie, message] of lies) {
      const state = structuredClone(honestState);
      lie(state);
      expect(refusal(() => checkEvaluationReport(state, slice, 'rogue', expected))).toContain(
        message,
      );
    }
  });

  it('refuses a confusion matrix whose total is off when the class counts are unknown', () => {
    const { classCounts: _, ...bare } = slice;
    const state = evaluation(bare);
    state.confusion[0]!++;
    expect(refusal(() => checkEvaluationReport(state, bare, 'rogue', expected))).toContain(
      'reported confusion (sum) 8 for test images 2 to 9, expected 7',
    );
  });
});
