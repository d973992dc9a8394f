import { describe, expect, it } from 'vitest';
import { confusionMatrix, precisionRecallF1 } from '../src/index.js';
import { expectShardlineError } from './helpers.js';

describe('confusionMatrix', () => {
  it('counts rows = true class, columns = predicted class', () => {
    // (true, pred): (0,0) (1,1) (1,0) (2,2) (2,2) (0,2)
    const m = confusionMatrix({
      labels: Uint8Array.of(0, 1, 1, 2, 2, 0),
      predictions: Int32Array.of(0, 1, 0, 2, 2, 2),
      numClasses: 3,
    });
    expect(m).toEqual([
      [1, 0, 1],
      [1, 1, 0],
      [0, 0, 2],
    ]);
  });

  it('rejects predictions out of range and mismatched lengths', () => {
    expectShardlineError(
      () =>
        confusionMatrix({ labels: Uint8Array.of(0), predictions: Int32Array.of(2), numClasses: 2 }),
      'INVALID_ARGUMENT',
      'predictions[0] is 2: expected a class index, an integer in [0, 1]',
    );
    expectShardlineError(
      () =>
        confusionMatrix({
          labels: Uint8Array.of(0, 1),
          predictions: Int32Array.of(0),
          numClasses: 2,
        }),
      'INVALID_ARGUMENT',
      'predictions has 1 entries, expected 2 (one per sample)',
    );
  });
});

describe('precisionRecallF1 zero-division rules (scikit-learn zero_division=0)', () => {
  it('scores a class that occurs but is never predicted as 0 and keeps it in the macro average', () => {
    // y_true = [0, 0, 1], y_pred = [0, 0, 0]; class 2 never occurs and is never predicted.
    //   class 0: tp 2, support 2, predicted 3 -> P 2/3, R 1, F1 = 4/5
    //   class 1: tp 0, support 1, predicted 0 -> P 0 (0/0), R 0, F1 0
    //   class 2: all zero -> 0, and left out of the macro average
    // macro over {0, 1}: P = (2/3 + 0)/2 = 1/3, R = (1 + 0)/2 = 0.5, F1 = (0.8 + 0)/2 = 0.4
    // weighted (support 2, 1, 0 of 3): P = (2·2/3)/3 = 4/9, R = 2/3, F1 = (2·0.8)/3 = 8/15
    const s = precisionRecallF1([
      [2, 0, 0],
      [1, 0, 0],
      [0, 0, 0],
    ]);
    expect(s.count).toBe(3);
    expect(s.accuracy).toBeCloseTo(2 / 3, 12);
    expect(s.perClass[1]).toEqual({
      index: 1,
      name: '1',
      precision: 0,
      recall: 0,
      f1: 0,
      support: 1,
      predicted: 0,
    });
    expect(s.perClass[2]).toEqual({
      index: 2,
      name: '2',
      precision: 0,
      recall: 0,
      f1: 0,
      support: 0,
      predicted: 0,
    });
    expect(s.perClass[0]!.precision).toBeCloseTo(2 / 3, 12);
    expect(s.perClass[0]!.f1).toBeCloseTo(0.8, 12);
    expect(s.macro.precision).toBeCloseTo(1 / 3, 12);
    expect(s.macro.recall).toBeCloseTo(0.5, 12);
    expect(s.macro.f1).toBeCloseTo(0.4, 12);
    expect(s.weighted.precision).toBeCloseTo(4 / 9, 12);
    expect(s.weighted.recall).toBeCloseTo(2 / 3, 12);
    expect(s.weighted.f1).toBeCloseTo(8 / 15, 12);
  });

  it('scores a class that is predicted but never occurs as 0 and keeps it in the macro average', () => {
    // y_true = [0, 0], y_pred = [0, 1]
    //   class 0: tp 1, support 2, predicted 1 -> P 1, R 1/2, F1 2/3
    //   class 1: tp 0, support 0, predicted 1 -> P 0/1 = 0, R 0 (0/0), F1 0
    // macro: P 0.5, R 0.25, F1 1/3; weighted (support 2, 0): P 1, R 0.5, F1 2/3
    const s = precisionRecallF1(
      [
        [1, 1],
        [0, 0],
      ],
      { classNames: ['cat', 'dog'] },
    );
    expect(s.perClass[1]).toEqual({
      index: 1,
      name: 'dog',
      precision: 0,
      recall: 0,
      f1: 0,
      support: 0,
      predicted: 1,
    });
    expect(s.macro).toEqual({ precision: 0.5, recall: 0.25, f1: expect.closeTo(1 / 3, 12) });
    expect(s.weighted).toEqual({ precision: 1, recall: 0.5, f1: expect.closeTo(2 / 3, 12) });
  });

  it('reports all zeros for an empty matrix', () => {
    const s = precisionRecallF1([
      [0, 0],
      [0, 0],
    ]);
    expect(s.count).toBe(0);
    expect(s.accuracy).toBe(0);
    expect(s.macro).toEqual({ precision: 0, recall: 0, f1: 0 });
    expect(s.weighted).toEqual({ precision: 0, recall: 0, f1: 0 });
  });

  it('rejects matrices that are not square arrays of non-negative counts', () => {
    expectShardlineError(() => precisionRecallF1([]), 'INVALID_ARGUMENT', 'non-empty square');
    expectShardlineError(
      () => precisionRecallF1([[1, 2], [3]]),
      'INVALID_ARGUMENT',
      'matrix[1] must be an array of 2 counts',
    );
    expectShardlineError(
      () =>
        precisionRecallF1([
          [1, -1],
          [0, 0],
        ]),
      'INVALID_ARGUMENT',
      'matrix[0][1] must be a finite count >= 0, found -1',
    );
  });
});
