import { describe, expect, it } from 'vitest';
import { renderTransformed, sampleTransform } from '../src/augment.js';
import { makeBatch, pixelLut } from '../src/batch.js';
import type { ImageSet } from '../src/imageSet.js';
import { iterateBatches } from '../src/iterate.js';
import { createEpochPlan, epochOrder, shardIndices } from '../src/sampler.js';

/** 6 images of 4x5x1: pixel = 10 * index + row * 5 + column + 1 (never 0, so fills show). */
function makeSet(count = 6, height = 4, width = 5, channels = 1): ImageSet<Uint8Array> {
  const images = new Uint8Array(count * height * width * channels);
  for (let i = 0; i < images.length; i++) {
    const n = Math.floor(i / (height * width * channels));
    images[i] = (10 * n + (i % (height * width * channels)) + 1) % 256;
  }
  const labels = Uint8Array.from({ length: count }, (_, i) => i % 3);
  return { images, labels, count, height, width, channels, numClasses: 3 };
}

/** Pixel (y, x) of image `n` in a batch, channel 0. */
function at(xs: Float32Array, n: number, y: number, x: number, h = 4, w = 5): number {
  return xs[(n * h + y) * w + x]!;
}

describe('makeBatch', () => {
  const set = makeSet();

  it('makes NHWC float32 in [0, 1] in index order, with int32 labels', () => {
    const batch = makeBatch(set, [4, 1]);
    expect(batch.shape).toEqual([2, 4, 5, 1]);
    expect(batch.size).toBe(2);
    expect(batch.xs).toBeInstanceOf(Float32Array);
    expect(batch.xs.length).toBe(2 * 20);
    expect(batch.labels).toEqual(Int32Array.from([1, 1]));
    expect([...batch.indices]).toEqual([4, 1]);
    // Image 4, row 2, column 3 is 10 * 4 + 2 * 5 + 3 + 1 = 54.
    expect(at(batch.xs, 0, 2, 3)).toBeCloseTo(54 / 255, 7);
    expect(at(batch.xs, 1, 0, 0)).toBeCloseTo(11 / 255, 7);
    expect(batch.oneHot).toBeUndefined();
  });

  it('standardises with mean and std', () => {
    const batch = makeBatch(set, [0], { normalize: { mean: 0.5, std: 0.25 } });
    expect(at(batch.xs, 0, 0, 0)).toBeCloseTo((1 / 255 - 0.5) / 0.25, 6);
    expect(() => pixelLut(1, { mean: 0, std: 0 })).toThrow(/positive std/);
    expect(() => pixelLut(3, { mean: [0, 0], std: 1 })).toThrow(/one per channel/);
  });

  it('makes one-hot labels when asked', () => {
    const batch = makeBatch(set, [2, 3], { oneHot: true });
    expect([...batch.oneHot!]).toEqual([0, 0, 1, 1, 0, 0]);
    expect(batch.numClasses).toBe(3);
    expect(() => makeBatch(set, [2], { oneHot: true, numClasses: 2 })).toThrow(/label 2/);
  });

  it('rejects indices outside the set', () => {
    expect(() => makeBatch(set, [6])).toThrow(/outside the set: expected 0 <= index < 6/);
  });

  it('keeps channels interleaved (HWC)', () => {
    const rgb = makeSet(2, 2, 2, 3);
    const batch = makeBatch(rgb, [1], { normalize: { mean: [0, 0, 0], std: [1, 1, 1] } });
    expect([...batch.xs].map((v) => Math.round(v * 255))).toEqual([...rgb.images.subarray(12, 24)]);
  });
});

describe('augmentation', () => {
  const set = makeSet();
  const lut = pixelLut(1);
  const render = (t: Parameters<typeof renderTransformed>[4]) => {
    const out = new Float32Array(20);
    renderTransformed(set.images.subarray(0, 20), 4, 5, 1, t, lut, out, 0);
    return [...out].map((v) => Math.round(v * 255));
  };
  const original = [...set.images.subarray(0, 20)];

  it('shift moves pixels and fills with zero', () => {
    const shifted = render({ dx: 1, dy: -1, flip: false, erase: null });
    // Output (y, x) = input (y + 1, x - 1); column 0 and the last row are filled.
    for (let y = 0; y < 4; y++) {
      for (let x = 0; x < 5; x++) {
        const expected = y === 3 || x === 0 ? 0 : original[(y + 1) * 5 + (x - 1)];
        expect(shifted[y * 5 + x]).toBe(expected);
      }
    }
  });

  it('flip mirrors each row', () => {
    const flipped = render({ dx: 0, dy: 0, flip: true, erase: null });
    for (let y = 0; y < 4; y++) {
      expect(flipped.slice(y * 5, y * 5 + 5)).toEqual(original.slice(y * 5, y * 5 + 5).reverse());
    }
  });

  it('erase zeroes exactly the rectangle', () => {
    const erased = render({
      dx: 0,
      dy: 0,
      flip: false,
      erase: { x: 1, y: 2, width: 3, height: 1 },
    });
    expect(erased).toEqual(original.map((v, i) => (i >= 11 && i <= 13 ? 0 : v)));
  });

  it('same seed and epoch give the same augmented batch; another seed does not', () => {
    const augment = { seed: 5, epoch: 1, shift: 2, flip: true, erase: true } as const;
    const a = makeBatch(set, [0, 1, 2, 3, 4, 5], { augment });
    const b = makeBatch(set, [0, 1, 2, 3, 4, 5], { augment });
    expect(b.xs).toEqual(a.xs);
    expect(makeBatch(set, [0, 1, 2, 3, 4, 5], { augment: { ...augment, seed: 6 } }).xs).not.toEqual(
      a.xs,
    );
    expect(
      makeBatch(set, [0, 1, 2, 3, 4, 5], { augment: { ...augment, epoch: 2 } }).xs,
    ).not.toEqual(a.xs);
    expect(makeBatch(set, [0, 1, 2, 3, 4, 5]).xs).not.toEqual(a.xs);
  });

  it("a sample's augmentation does not depend on its batch or worker", () => {
    const augment = { seed: 9, shift: 1, flip: true } as const;
    const whole = makeBatch(set, [3, 0, 5, 1], { augment });
    const part = makeBatch(set, [5, 1], { augment });
    expect(part.xs).toEqual(whole.xs.subarray(40, 80));
  });

  it('draws every kind of transform across samples, within bounds', () => {
    const seen = { flip: 0, erase: 0, shifts: new Set<number>() };
    for (let i = 0; i < 400; i++) {
      const t = sampleTransform({ seed: 1, shift: 2, flip: true, erase: true }, i, 28, 28);
      expect(Math.abs(t.dx)).toBeLessThanOrEqual(2);
      expect(Math.abs(t.dy)).toBeLessThanOrEqual(2);
      seen.shifts.add(t.dx);
      if (t.flip) seen.flip++;
      if (t.erase) {
        seen.erase++;
        expect(t.erase.x + t.erase.width).toBeLessThanOrEqual(28);
        expect(t.erase.y + t.erase.height).toBeLessThanOrEqual(28);
      }
    }
    expect(seen.shifts.size).toBe(5);
    expect(seen.flip).toBeGreaterThan(150);
    expect(seen.flip).toBeLessThan(250);
    expect(seen.erase).toBeGreaterThan(150);
    expect(() => sampleTransform({ seed: 1, shift: -1 }, 0, 4, 4)).toThrow(/shift/);
  });
});

describe('iterateBatches', () => {
  const set = makeSet(11);

  it('gives rank r its DistributedSampler shard in batches', () => {
    const options = { batchSize: 4, seed: 2, epoch: 3, worldSize: 2 } as const;
    const rank0 = [...iterateBatches(set, { ...options, rank: 0 })];
    const rank1 = [...iterateBatches(set, { ...options, rank: 1 })];
    expect(rank0.map((b) => b.size)).toEqual([4, 2]);
    const shard0 = shardIndices(epochOrder(11, 2, 3), 0, 2);
    expect(rank0.flatMap((b) => [...b.indices])).toEqual([...shard0]);
    const covered = new Set([...rank0, ...rank1].flatMap((b) => [...b.indices]));
    expect(covered.size).toBe(11);
    expect([...iterateBatches(set, { ...options, rank: 0, dropRemainder: true })].length).toBe(1);
  });

  it("uses the epoch for augmentation unless told otherwise, matching makeBatch on the plan's share", () => {
    const augment = { seed: 4, shift: 1 };
    const [first] = iterateBatches(set, { batchSize: 3, seed: 1, epoch: 6, augment });
    const plan = createEpochPlan({ count: 11, seed: 1, epoch: 6, batchSize: 3 });
    expect(first!.xs).toEqual(
      makeBatch(set, plan.batch(0), { augment: { ...augment, epoch: 6 } }).xs,
    );
  });
});
