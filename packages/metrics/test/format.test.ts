import { describe, expect, it } from 'vitest';
import {
  createClassificationAccumulator,
  formatClassificationReport,
  formatConfusionMatrix,
  precisionRecallF1,
} from '../src/index.js';
import { expectShardlineError } from './helpers.js';

describe('formatConfusionMatrix', () => {
  it('labels rows with index and name, columns with the index', () => {
    expect(
      formatConfusionMatrix(
        [
          [850, 3],
          [12, 1000],
        ],
        { classNames: ['T-shirt/top', 'Trouser'] },
      ),
    ).toBe(
      ['true \\ pred      0     1', '0 T-shirt/top  850     3', '1 Trouser       12  1000'].join(
        '\n',
      ),
    );
  });

  it('uses bare indices without names', () => {
    expect(formatConfusionMatrix([[1]])).toBe('true \\ pred  0\n0            1');
  });

  it('rejects class names of the wrong length', () => {
    expectShardlineError(
      () => formatConfusionMatrix([[1]], { classNames: ['a', 'b'] }),
      'INVALID_ARGUMENT',
      'classNames has 2 entries',
    );
  });
});

describe('formatClassificationReport', () => {
  it('prints per-class scores, averages, loss and top-k in aligned columns', () => {
    const acc = createClassificationAccumulator({
      numClasses: 2,
      topK: [2],
      classNames: ['cat', 'dog'],
    });
    // Rows (label): [0.9 0.1] (0) correct; [0.6 0.4] (1) wrong; [0.2 0.8] (1) correct.
    // loss = -(ln 0.9 + ln 0.4 + ln 0.8)/3 = (0.1054 + 0.9163 + 0.2231)/3 = 0.4149
    // cat: P 1/2, R 1, F1 2/3; dog: P 1, R 1/2, F1 2/3; weighted by support 1, 2.
    acc.update({
      probabilities: Float64Array.of(0.9, 0.1, 0.6, 0.4, 0.2, 0.8),
      labels: Uint8Array.of(0, 1, 1),
      loss: 0.5,
    });
    expect(formatClassificationReport(acc.result(), { digits: 3 })).toBe(
      [
        '                precision  recall  f1-score  support',
        '0 cat               0.500   1.000     0.667        1',
        '1 dog               1.000   0.500     0.667        2',
        '',
        'accuracy                              0.667        3',
        'macro avg           0.750   0.750     0.667        3',
        'weighted avg        0.833   0.667     0.667        3',
        '',
        'loss                                  0.415',
        'reported loss                         0.500',
        'top-2 accuracy                        1.000',
      ].join('\n'),
    );
  });

  it('formats the scores of a bare confusion matrix, without loss lines', () => {
    const text = formatClassificationReport(
      precisionRecallF1([
        [2, 0],
        [1, 1],
      ]),
      { digits: 2 },
    );
    expect(text.split('\n')).toEqual([
      '              precision  recall  f1-score  support',
      '0                  0.67    1.00      0.80        2',
      '1                  1.00    0.50      0.67        2',
      '',
      'accuracy                             0.75        4',
      'macro avg          0.83    0.75      0.73        4',
      'weighted avg       0.83    0.75      0.73        4',
    ]);
  });
});
