import { describe, expect, it } from 'vitest';
import {
  accuracy,
  argmaxRows,
  type ClassificationState,
  createClassificationAccumulator,
  evaluateClassification,
  topKAccuracy,
} from '../src/index.js';
import { expectShardlineError, randomBatch, seededRandom } from './helpers.js';

// The hand-computed case used throughout: 3 classes, 5 samples.
//
//   row  probabilities        label  argmax  correct  rank of label (ties -> lower index first)
//   0    0.7  0.2  0.1        0      0       yes      0
//   1    0.1  0.3  0.6        1      2       no       1   (0.6 above)
//   2    0.2  0.5  0.3        1      1       yes      0
//   3    0.5  0.25 0.25       2      0       no       2   (0.5 above; class 1 ties and has the lower index)
//   4    0.1  0.1  0.8        2      2       yes      0
//
// accuracy = 3/5 = 0.6; top-2 = ranks < 2: 4/5 = 0.8; top-3 = 5/5 = 1.
// loss = -(ln 0.7 + ln 0.3 + ln 0.5 + ln 0.25 + ln 0.8) / 5
//      = (0.356675 + 1.203973 + 0.693147 + 1.386294 + 0.223144) / 5 = 0.7726466
// confusion (rows true, cols predicted): [[1,0,0], [0,1,1], [1,0,1]]
// support [1,2,2], predicted [2,1,2], tp [1,1,1]
// precision [1/2, 1/1, 1/2]; recall [1/1, 1/2, 1/2]; f1 = 2tp/(support+predicted) = [2/3, 2/3, 1/2]
// macro: P = (0.5+1+0.5)/3 = 2/3; R = (1+0.5+0.5)/3 = 2/3; F1 = (2/3+2/3+1/2)/3 = 11/18
// weighted by support: P = (1·0.5 + 2·1 + 2·0.5)/5 = 0.7; R = (1·1 + 2·0.5 + 2·0.5)/5 = 0.6;
//   F1 = (1·2/3 + 2·2/3 + 2·0.5)/5 = 0.6
const probabilities = Float64Array.of(
  0.7,
  0.2,
  0.1,
  0.1,
  0.3,
  0.6,
  0.2,
  0.5,
  0.3,
  0.5,
  0.25,
  0.25,
  0.1,
  0.1,
  0.8,
);
const labels = Uint8Array.of(0, 1, 1, 2, 2);
const expectedLoss =
  -(Math.log(0.7) + Math.log(0.3) + Math.log(0.5) + Math.log(0.25) + Math.log(0.8)) / 5;

describe('one-shot functions', () => {
  it('argmaxRows takes the first maximum of each row', () => {
    expect(Array.from(argmaxRows(probabilities, 3))).toEqual([0, 2, 1, 0, 2]);
    // Ties: row [0.5, 0.5] -> 0.
    expect(Array.from(argmaxRows(Float32Array.of(0.5, 0.5), 2))).toEqual([0]);
  });

  it('accuracy counts equal entries: 3 of 5', () => {
    expect(accuracy({ labels, predictions: argmaxRows(probabilities, 3) })).toBe(0.6);
    expect(accuracy({ labels: new Uint8Array(0), predictions: new Int32Array(0) })).toBe(0);
  });

  it('topKAccuracy ranks ties by lower class index, so top-1 equals accuracy', () => {
    expect(topKAccuracy({ scores: probabilities, labels, numClasses: 3, k: 1 })).toBe(0.6);
    expect(topKAccuracy({ scores: probabilities, labels, numClasses: 3, k: 2 })).toBe(0.8);
    expect(topKAccuracy({ scores: probabilities, labels, numClasses: 3, k: 3 })).toBe(1);
    // A constant output is not "always in the top 1" (unlike tf.math.in_top_k): only label 0 wins.
    const constant = new Float32Array(4 * 4).fill(0.25);
    expect(
      topKAccuracy({ scores: constant, labels: Uint8Array.of(0, 1, 2, 3), numClasses: 4, k: 1 }),
    ).toBe(0.25);
  });
});

describe('createClassificationAccumulator', () => {
  it('reports the hand-computed case', () => {
    const acc = createClassificationAccumulator({
      numClasses: 3,
      topK: [3, 2],
      classNames: ['a', 'b', 'c'],
    });
    const batch = acc.update({ probabilities, labels, loss: 0.5 });
    expect(batch.count).toBe(5);
    expect(batch.accuracy).toBe(0.6);
    expect(batch.loss).toBeCloseTo(expectedLoss, 12);

    const r = acc.result();
    expect(r.count).toBe(5);
    expect(r.accuracy).toBe(0.6);
    expect(r.loss).toBeCloseTo(0.7726465682517428, 12);
    expect(r.reportedLoss).toEqual({ mean: 0.5, count: 5 });
    expect(r.topK).toEqual([
      { k: 2, accuracy: 0.8 },
      { k: 3, accuracy: 1 },
    ]);
    expect(r.confusionMatrix).toEqual([
      [1, 0, 0],
      [0, 1, 1],
      [1, 0, 1],
    ]);
    expect(r.perClass.map((c) => c.name)).toEqual(['a', 'b', 'c']);
    expect(r.perClass.map((c) => c.support)).toEqual([1, 2, 2]);
    expect(r.perClass.map((c) => c.predicted)).toEqual([2, 1, 2]);
    expect(r.perClass.map((c) => c.precision)).toEqual([0.5, 1, 0.5]);
    expect(r.perClass.map((c) => c.recall)).toEqual([1, 0.5, 0.5]);
    const f1 = r.perClass.map((c) => c.f1);
    for (const [i, v] of [2 / 3, 2 / 3, 1 / 2].entries()) expect(f1[i]).toBeCloseTo(v, 12);
    expect(r.macro.precision).toBeCloseTo(2 / 3, 12);
    expect(r.macro.recall).toBeCloseTo(2 / 3, 12);
    expect(r.macro.f1).toBeCloseTo(11 / 18, 12);
    expect(r.weighted.precision).toBeCloseTo(0.7, 12);
    expect(r.weighted.recall).toBeCloseTo(0.6, 12);
    expect(r.weighted.f1).toBeCloseTo(0.6, 12);
  });

  it('gives the same loss from logits as from the probabilities they softmax to', () => {
    // softmax(ln p + 5) = p, so the logits path must reproduce the probability loss without clipping.
    const logits = Float64Array.from(probabilities, (p) => Math.log(p) + 5);
    const fromLogits = evaluateClassification({ numClasses: 3, logits, labels });
    expect(fromLogits.loss).toBeCloseTo(expectedLoss, 12);
    expect(fromLogits.confusionMatrix).toEqual(
      evaluateClassification({ numClasses: 3, probabilities, labels }).confusionMatrix,
    );
  });

  it('clips probabilities to [1e-7, 1 - 1e-7], so a confident mistake costs -ln(1e-7) = 16.118', () => {
    const acc = createClassificationAccumulator({ numClasses: 2 });
    // Row 0: p(label 1) = 0 -> clipped to 1e-7 -> 16.11809565. Row 1: p(label 0) = 1 -> 1 - 1e-7 -> ~1e-7.
    acc.update({ probabilities: Float32Array.of(1, 0, 1, 0), labels: Uint8Array.of(1, 0) });
    expect(acc.result().loss).toBeCloseTo((16.11809565095832 + 1.0000000494736474e-7) / 2, 10);
  });

  it('renormalises rows before clipping, as tfjs-layers does', () => {
    // Row sums to 0.997 (within tolerance): p = 0.5 / 0.997, loss = ln(0.997 / 0.5) = 0.69014267.
    const r = evaluateClassification({
      numClasses: 2,
      probabilities: Float64Array.of(0.5, 0.497),
      labels: Uint8Array.of(0),
    });
    expect(r.loss).toBeCloseTo(0.6901426715396466, 12);
  });

  it('averages reported losses weighted by batch size, only over batches that reported one', () => {
    const acc = createClassificationAccumulator({ numClasses: 3 });
    acc.update({
      probabilities: probabilities.subarray(0, 6),
      labels: labels.subarray(0, 2),
      loss: 1,
    });
    acc.update({ probabilities: probabilities.subarray(6), labels: labels.subarray(2), loss: 2 });
    acc.update({ probabilities: probabilities.subarray(0, 3), labels: labels.subarray(0, 1) });
    // (1·2 + 2·3) / 5 = 1.6 over 5 samples; the third batch reported nothing.
    expect(acc.result().reportedLoss).toEqual({ mean: 1.6, count: 5 });
    expect(acc.result().count).toBe(6);
  });

  it('reports zeros, an all-zero matrix and no reported loss before any batch', () => {
    const r = createClassificationAccumulator({ numClasses: 2, topK: [1] }).result();
    expect(r).toEqual({
      numClasses: 2,
      classNames: ['0', '1'],
      count: 0,
      accuracy: 0,
      loss: 0,
      reportedLoss: null,
      topK: [{ k: 1, accuracy: 0 }],
      confusionMatrix: [
        [0, 0],
        [0, 0],
      ],
      perClass: [
        { index: 0, name: '0', precision: 0, recall: 0, f1: 0, support: 0, predicted: 0 },
        { index: 1, name: '1', precision: 0, recall: 0, f1: 0, support: 0, predicted: 0 },
      ],
      macro: { precision: 0, recall: 0, f1: 0 },
      weighted: { precision: 0, recall: 0, f1: 0 },
    });
  });

  it('produces a JSON-serialisable report that survives a round trip unchanged', () => {
    const acc = createClassificationAccumulator({ numClasses: 3, topK: [2] });
    acc.update({ probabilities, labels });
    const r = acc.result();
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  it('reset forgets batches but keeps options', () => {
    const acc = createClassificationAccumulator({ numClasses: 3, topK: [2] });
    acc.update({ probabilities, labels });
    acc.reset();
    expect(acc.result().count).toBe(0);
    expect(acc.result().topK).toEqual([{ k: 2, accuracy: 0 }]);
  });

  it('accepts an empty batch as a no-op', () => {
    const acc = createClassificationAccumulator({ numClasses: 3 });
    expect(
      acc.update({ probabilities: new Float32Array(0), labels: new Uint8Array(0), loss: 3 }),
    ).toEqual({
      count: 0,
      accuracy: 0,
      loss: 0,
    });
    expect(acc.result().reportedLoss).toBeNull();
  });
});

describe('merge', () => {
  const numClasses = 10;
  const options = { numClasses, topK: [1, 3, 5] };

  it('merging shards equals a single pass over all batches (property, 50 seeds)', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const random = seededRandom(seed);
      const single = createClassificationAccumulator(options);
      const shards = [0, 1, 2].map(() => createClassificationAccumulator(options));
      const batches = 1 + Math.floor(random() * 8);
      for (let b = 0; b < batches; b++) {
        const size = Math.floor(random() * 40); // includes empty batches
        const { probabilities: p, logits, labels: l } = randomBatch(random, size, numClasses);
        const loss = random();
        const useLogits = random() < 0.5;
        const batch = useLogits
          ? { logits, labels: l, loss }
          : { probabilities: p, labels: l, loss };
        single.update(batch);
        shards[Math.floor(random() * 3)]!.update(batch);
      }
      const merged = createClassificationAccumulator(options);
      // One shard in-process, one as a JSON round trip (as from a worker), one left in place.
      merged.merge(shards[0]!);
      merged.merge(JSON.parse(JSON.stringify(shards[1]!.snapshot())) as ClassificationState);
      shards[2]!.merge(merged);

      const a = single.result();
      const b = shards[2]!.result();
      // Counts are integers: exactly equal. Loss sums are float sums in another order: 1e-12.
      expect(b.confusionMatrix).toEqual(a.confusionMatrix);
      expect(b.count).toBe(a.count);
      expect(b.accuracy).toBe(a.accuracy);
      expect(b.topK).toEqual(a.topK);
      expect(b.perClass).toEqual(a.perClass);
      expect(b.macro).toEqual(a.macro);
      expect(b.weighted).toEqual(a.weighted);
      expect(b.loss).toBeCloseTo(a.loss, 12);
      expect(b.reportedLoss?.count).toBe(a.reportedLoss?.count);
      expect(b.reportedLoss?.mean ?? 0).toBeCloseTo(a.reportedLoss?.mean ?? 0, 12);
    }
  });

  it('refuses to merge accumulators with different options (MISMATCH)', () => {
    const a = createClassificationAccumulator({ numClasses: 10, topK: [5] });
    expectShardlineError(
      () => a.merge(createClassificationAccumulator({ numClasses: 10, topK: [3] })),
      'MISMATCH',
      'topK [3] vs [5]',
    );
    expectShardlineError(
      () => a.merge(createClassificationAccumulator({ numClasses: 9, topK: [5] })),
      'MISMATCH',
      'numClasses 9 vs 10',
    );
    expectShardlineError(
      () => a.merge(createClassificationAccumulator({ numClasses: 10, topK: [5], epsilon: 1e-6 })),
      'MISMATCH',
      'epsilon',
    );
  });

  it('rejects malformed states (INVALID_ARGUMENT) without changing anything', () => {
    const a = createClassificationAccumulator({ numClasses: 3 });
    a.update({ probabilities, labels });
    const good = a.snapshot();
    expectShardlineError(
      () => a.merge({ ...good, version: 2 } as unknown as ClassificationState),
      'INVALID_ARGUMENT',
      'version',
    );
    expectShardlineError(
      () => a.merge({ ...good, confusion: [1, 2] }),
      'INVALID_ARGUMENT',
      'confusion',
    );
    expectShardlineError(() => a.merge({ ...good, count: -1 }), 'INVALID_ARGUMENT', 'count');
    expectShardlineError(
      () => a.merge(null as unknown as ClassificationState),
      'INVALID_ARGUMENT',
      'snapshot()',
    );
    expectShardlineError(() => a.merge({ ...good, classNames: [] }), 'MISMATCH', 'classNames');
    expect(a.snapshot()).toEqual(good);
  });
});

describe('invalid input', () => {
  const acc = () => createClassificationAccumulator({ numClasses: 3 });

  it('rejects a probabilities length that does not match labels x classes', () => {
    expectShardlineError(
      () => acc().update({ probabilities: new Float32Array(5), labels: Uint8Array.of(0, 1) }),
      'INVALID_ARGUMENT',
      'probabilities has 5 values, expected labels.length x numClasses = 2 x 3 = 6',
    );
    expectShardlineError(
      () => acc().update({ probabilities: probabilities, labels: Uint8Array.of(0, 1) }),
      'INVALID_ARGUMENT',
      'That is 5 rows for 2 labels',
    );
    expectShardlineError(
      () => acc().update({ probabilities: Float32Array.of(0, 1), labels: Uint8Array.of(0, 1) }),
      'INVALID_ARGUMENT',
      'predicted class indices',
    );
  });

  it('rejects labels out of range or not integers', () => {
    expectShardlineError(
      () =>
        acc().update({ probabilities: probabilities.subarray(0, 6), labels: Int32Array.of(0, 3) }),
      'INVALID_ARGUMENT',
      'labels[1] is 3: expected a class index, an integer in [0, 2]',
    );
    expectShardlineError(
      () =>
        acc().update({ probabilities: probabilities.subarray(0, 3), labels: Float32Array.of(0.5) }),
      'INVALID_ARGUMENT',
      'labels[0] is 0.5',
    );
    expectShardlineError(
      () =>
        acc().update({ probabilities: probabilities.subarray(0, 3), labels: Int32Array.of(-1) }),
      'INVALID_ARGUMENT',
      'labels[0] is -1',
    );
  });

  it('rejects NaN, negative and above-one probabilities, and rows that do not sum to 1', () => {
    expectShardlineError(
      () =>
        acc().update({
          probabilities: Float32Array.of(0.5, Number.NaN, 0.5),
          labels: Uint8Array.of(0),
        }),
      'INVALID_ARGUMENT',
      'probabilities[1] (row 0, class 1) is NaN',
      'diverged',
    );
    expectShardlineError(
      () =>
        acc().update({ probabilities: Float32Array.of(-0.5, 1, 0.5), labels: Uint8Array.of(0) }),
      'INVALID_ARGUMENT',
      'is -0.5: expected probabilities in [0, 1]',
    );
    expectShardlineError(
      () =>
        acc().update({ probabilities: Float32Array.of(0.5, 0.4, 0.05), labels: Uint8Array.of(0) }),
      'INVALID_ARGUMENT',
      'row 0 sums to',
      'logits',
    );
    expectShardlineError(
      () =>
        acc().update({
          logits: Float32Array.of(1, Number.POSITIVE_INFINITY, 0),
          labels: Uint8Array.of(0),
        }),
      'INVALID_ARGUMENT',
      'logits[1] (row 0, class 1) is Infinity',
    );
  });

  it('leaves the accumulator unchanged when a batch is rejected', () => {
    const a = acc();
    a.update({ probabilities, labels });
    const before = a.snapshot();
    const bad = Float64Array.from(probabilities);
    bad[14] = Number.NaN; // the last value of the last row
    expectShardlineError(() => a.update({ probabilities: bad, labels }), 'INVALID_ARGUMENT', 'NaN');
    expect(a.snapshot()).toEqual(before);
  });

  it('requires exactly one of probabilities and logits, and a finite loss', () => {
    expectShardlineError(
      () => acc().update({ labels: Uint8Array.of(0) } as never),
      'INVALID_ARGUMENT',
      'Neither probabilities nor logits',
    );
    expectShardlineError(
      () =>
        acc().update({
          probabilities: probabilities.subarray(0, 3),
          logits: probabilities.subarray(0, 3),
          labels: Uint8Array.of(0),
        } as never),
      'INVALID_ARGUMENT',
      'Both probabilities and logits',
    );
    expectShardlineError(
      () =>
        acc().update({
          probabilities: probabilities.subarray(0, 3),
          labels: Uint8Array.of(0),
          loss: Number.NaN,
        }),
      'INVALID_ARGUMENT',
      'loss must be a finite number, found NaN',
    );
  });

  it('validates options', () => {
    expectShardlineError(
      () => createClassificationAccumulator({ numClasses: 0 }),
      'INVALID_ARGUMENT',
      'numClasses must be an integer >= 1',
    );
    expectShardlineError(
      () => createClassificationAccumulator({ numClasses: 3, topK: [4] }),
      'INVALID_ARGUMENT',
      'in [1, 3]',
    );
    expectShardlineError(
      () => createClassificationAccumulator({ numClasses: 3, classNames: ['a'] }),
      'INVALID_ARGUMENT',
      'classNames has 1 entries, expected numClasses = 3',
    );
    expectShardlineError(
      () => createClassificationAccumulator({ numClasses: 3, epsilon: 0 }),
      'INVALID_ARGUMENT',
      'epsilon must be in (0, 0.5)',
    );
    expectShardlineError(
      () => topKAccuracy({ scores: probabilities, labels, numClasses: 3, k: 0 }),
      'INVALID_ARGUMENT',
      'k must be',
    );
    expectShardlineError(
      () => topKAccuracy({ scores: probabilities.subarray(1), labels, numClasses: 3, k: 1 }),
      'INVALID_ARGUMENT',
      'scores has 14 values',
    );
    expectShardlineError(
      () => argmaxRows(new Float32Array(5), 3),
      'INVALID_ARGUMENT',
      'multiple of numClasses = 3',
    );
    expectShardlineError(
      () => accuracy({ labels: Uint8Array.of(1, 2), predictions: Int32Array.of(1) }),
      'INVALID_ARGUMENT',
      'predictions has 1 entries, expected 2',
    );
  });
});

describe('keepMisclassified', () => {
  /** 12 samples of 3 classes; the model is wrong on the samples whose index is a multiple of 3. */
  const labels = Array.from({ length: 12 }, (_, i) => i % 3);
  const predictedOf = (i: number) => (i % 3 === 0 ? (labels[i]! + 1) % 3 : labels[i]!);
  const rows = (from: number, to: number) => {
    const probabilities = new Float32Array((to - from) * 3);
    for (let i = from; i < to; i++) {
      probabilities.fill(0.125, (i - from) * 3, (i - from) * 3 + 3);
      probabilities[(i - from) * 3 + predictedOf(i)] = 0.75;
    }
    return {
      probabilities,
      labels: labels.slice(from, to),
      indices: Array.from({ length: to - from }, (_, k) => 100 + from + k),
    };
  };
  const wrongIndices = [100, 103, 106, 109];

  it('keeps the lowest-indexed misclassified samples, whatever the batches and the merge order', () => {
    const whole = createClassificationAccumulator({ numClasses: 3, keepMisclassified: 3 });
    whole.update(rows(0, 12));
    expect(whole.snapshot().misclassified).toEqual(
      wrongIndices.slice(0, 3).map((index) => ({
        index,
        label: labels[index - 100],
        predicted: predictedOf(index - 100),
        confidence: expect.closeTo(0.75, 6),
      })),
    );
    // Shards merged in reverse order, each fed in uneven batches: the same three samples.
    const shards = [
      [8, 12],
      [4, 8],
      [0, 4],
    ].map(([from, to]) => {
      const shard = createClassificationAccumulator({ numClasses: 3, keepMisclassified: 3 });
      shard.update(rows(from!, from! + 1));
      shard.update(rows(from! + 1, to!));
      return shard.snapshot();
    });
    const merged = createClassificationAccumulator({ numClasses: 3, keepMisclassified: 3 });
    for (const shard of shards) merged.merge(JSON.parse(JSON.stringify(shard)));
    expect(merged.result().misclassified).toEqual(whole.result().misclassified);
    expect(merged.result().confusionMatrix).toEqual(whole.result().confusionMatrix);
  });

  it('takes the confidence from logits as the softmax of the predicted class', () => {
    const acc = createClassificationAccumulator({ numClasses: 2, keepMisclassified: 1 });
    acc.update({ logits: Float32Array.of(0, Math.log(3)), labels: [0], indices: [7] });
    expect(acc.snapshot().misclassified).toEqual([
      { index: 7, label: 0, predicted: 1, confidence: expect.closeTo(0.75, 6) },
    ]);
  });

  it('keeps nothing and needs no indices by default; with keepMisclassified it needs them', () => {
    const plain = createClassificationAccumulator({ numClasses: 3 });
    plain.update({ probabilities: rows(0, 3).probabilities, labels: labels.slice(0, 3) });
    expect(plain.snapshot()).not.toHaveProperty('misclassified');
    const keeping = createClassificationAccumulator({ numClasses: 3, keepMisclassified: 2 });
    expect(() =>
      keeping.update({ probabilities: rows(0, 3).probabilities, labels: labels.slice(0, 3) }),
    ).toThrow(/indices are required .* expected 3 sample indices, found undefined/);
    expect(() => keeping.update({ ...rows(0, 3), indices: [1, 2] })).toThrow(
      /indices has 2 entries, expected one per row \(3\)/,
    );
    expect(keeping.snapshot().count).toBe(0);
  });

  it('refuses a state whose misclassified entries are not samples it could have kept', () => {
    const acc = createClassificationAccumulator({ numClasses: 3, keepMisclassified: 2 });
    const state = createClassificationAccumulator({ numClasses: 3, keepMisclassified: 2 });
    state.update(rows(0, 3));
    const good = state.snapshot();
    for (const bad of [
      { index: 1, label: 1, predicted: 1, confidence: 0.5 },
      { index: 1, label: 1, predicted: 3, confidence: 0.5 },
      { index: -1, label: 1, predicted: 2, confidence: 0.5 },
      { index: 1, label: 1, predicted: 2, confidence: 1.5 },
    ]) {
      expect(() => acc.merge({ ...good, misclassified: [bad] })).toThrow(
        /misclassified is not a list/,
      );
    }
  });
});
