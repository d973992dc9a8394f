import { describe, expect, it } from 'vitest';
import { createRng, xoshiro128ss } from '../src/random.js';
import {
  batchShare,
  createEpochPlan,
  epochOrder,
  shardIndices,
  shardSize,
  shareRange,
  shareSize,
  stepsPerEpoch,
} from '../src/sampler.js';

function isPermutation(order: Uint32Array, n: number): boolean {
  if (order.length !== n) return false;
  const seen = new Uint8Array(n);
  for (const i of order) {
    if (i >= n || seen[i]) return false;
    seen[i] = 1;
  }
  return true;
}

describe('random numbers', () => {
  it('xoshiro128** matches the reference C implementation from state (1, 2, 3, 4)', () => {
    const rng = xoshiro128ss(1, 2, 3, 4);
    expect(Array.from({ length: 5 }, () => rng.nextUint32())).toEqual([
      11520, 0, 5927040, 70819200, 2031721883,
    ]);
  });

  it('createRng gives pinned values, so every process and machine agrees', () => {
    const rng = createRng(1, 2, 3);
    expect([rng.nextUint32(), rng.nextUint32(), rng.nextUint32()]).toEqual([
      1006110840, 482923985, 212076095,
    ]);
  });

  it('keys change the stream, including high bits of large seeds and key count', () => {
    const first = (...keys: number[]) => createRng(...keys).nextUint32();
    expect(first(1, 2)).not.toBe(first(2, 1));
    expect(first(1)).not.toBe(first(1, 0));
    expect(first(2 ** 32 + 5)).not.toBe(first(5));
    expect(() => createRng(0.5)).toThrow(/safe integer/);
  });

  it('nextInt stays in range and is roughly uniform', () => {
    const rng = createRng(9);
    const counts = new Array(6).fill(0);
    for (let i = 0; i < 60_000; i++) counts[rng.nextInt(6)]++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(500);
    const f = createRng(10).nextFloat();
    expect(f >= 0 && f < 1).toBe(true);
  });
});

describe('epochOrder', () => {
  it('is a permutation of 0..n-1', () => {
    for (const n of [0, 1, 2, 7, 1000, 60_000])
      expect(isPermutation(epochOrder(n, 3, 1), n)).toBe(true);
  });

  it('is identical for the same (seed, epoch): pinned values', () => {
    expect([...epochOrder(10, 42, 0)]).toEqual([7, 4, 1, 6, 8, 5, 0, 9, 2, 3]);
    expect([...epochOrder(10, 42, 1)]).toEqual([9, 6, 7, 4, 3, 8, 5, 1, 0, 2]);
    expect([...epochOrder(60_000, 42, 0).subarray(0, 8)]).toEqual([
      51807, 4393, 12640, 13335, 56584, 11846, 21974, 25450,
    ]);
    expect(epochOrder(5_000, 8, 2)).toEqual(epochOrder(5_000, 8, 2));
  });

  it('differs between epochs and seeds', () => {
    expect(epochOrder(1000, 1, 0)).not.toEqual(epochOrder(1000, 1, 1));
    expect(epochOrder(1000, 1, 0)).not.toEqual(epochOrder(1000, 2, 0));
  });

  it('moves every position with the right frequency (no shuffle bias)', () => {
    // Over many epochs of 4 elements, each element lands in each slot about 1/4 of the time.
    const hits = Array.from({ length: 4 }, () => new Array(4).fill(0));
    for (let epoch = 0; epoch < 8_000; epoch++) {
      epochOrder(4, 5, epoch).forEach((v, slot) => {
        hits[v]![slot]++;
      });
    }
    for (const row of hits) for (const h of row) expect(Math.abs(h - 2_000)).toBeLessThan(200);
  });

  it('rejects bad arguments', () => {
    expect(() => epochOrder(-1, 0, 0)).toThrow(/count/);
    expect(() => epochOrder(10, 0, -1)).toThrow(/epoch/);
  });
});

describe('shardIndices (DistributedSampler semantics)', () => {
  const order = epochOrder(10, 7, 0);

  it('even split: disjoint shards that cover the epoch exactly', () => {
    const shards = [0, 1].map((r) => shardIndices(order, r, 2));
    expect(shards.map((s) => s.length)).toEqual([5, 5]);
    const all = [...shards[0]!, ...shards[1]!].sort((a, b) => a - b);
    expect(all).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Strided, as PyTorch: rank r takes positions r, r + W, ...
    expect([...shards[1]!]).toEqual([order[1], order[3], order[5], order[7], order[9]]);
  });

  it('uneven split, pad (default): every rank gets ceil(n/W), all covered, repeats only as padding', () => {
    for (const [n, w] of [
      [10, 3],
      [10, 4],
      [7, 6],
      [3, 5],
      [60_000, 7],
    ] as const) {
      const o = epochOrder(n, 1, 2);
      const shards = Array.from({ length: w }, (_, r) => shardIndices(o, r, w));
      const size = Math.ceil(n / w);
      expect(shardSize(n, w)).toBe(size);
      for (const s of shards) expect(s.length).toBe(size);
      const counts = new Map<number, number>();
      for (const s of shards) for (const i of s) counts.set(i, (counts.get(i) ?? 0) + 1);
      expect(counts.size).toBe(n); // coverage
      const repeats = [...counts.values()].reduce((a, c) => a + c - 1, 0);
      expect(repeats).toBe(size * w - n); // exactly the padding
      // The padding repeats the start of the order, as PyTorch does.
      if (n >= w) expect(shards[w - 1]![size - 1]).toBe(o[(size * w - 1) % n]);
    }
  });

  it('uneven split, drop: every rank gets floor(n/W), disjoint, the tail of the order dropped', () => {
    const o = epochOrder(10, 1, 0);
    const shards = [0, 1, 2].map((r) => shardIndices(o, r, 3, { remainder: 'drop' }));
    expect(shards.map((s) => s.length)).toEqual([3, 3, 3]);
    const all = shards.flatMap((s) => [...s]);
    expect(new Set(all).size).toBe(9);
    expect(all).not.toContain(o[9]);
  });

  it('world size 1 is the whole order', () => {
    expect(shardIndices(order, 0, 1)).toEqual(order);
  });

  it('rejects a rank outside the world', () => {
    expect(() => shardIndices(order, 2, 2)).toThrow(/rank must be an integer in \[0, 2\)/);
  });
});

describe('coordinated steps: global batches split among workers', () => {
  it('counts steps with and without the remainder', () => {
    expect(stepsPerEpoch(60_000, 256)).toBe(235);
    expect(stepsPerEpoch(60_000, 256, { dropRemainder: true })).toBe(234);
  });

  it('shareRange splits contiguously, sizes differing by at most one', () => {
    expect([0, 1, 2].map((r) => shareRange(10, r, 3))).toEqual([
      { start: 0, end: 4 },
      { start: 4, end: 7 },
      { start: 7, end: 10 },
    ]);
    expect(shareRange(1, 1, 3)).toEqual({ start: 1, end: 1 });
  });

  it('shareSize is the length of every share the plan hands out, without shuffling', () => {
    const plan = createEpochPlan({ count: 1_003, seed: 11, epoch: 4, batchSize: 64 });
    for (const w of [1, 2, 3, 5, 70]) {
      for (let step = 0; step < plan.steps; step++) {
        for (let r = 0; r < w; r++) {
          expect(shareSize(1_003, 64, step, r, w)).toBe(plan.share(step, r, w).length);
        }
      }
    }
    // The last, short batch (43 samples) split 5 ways: 9, 9, 9, 8, 8.
    expect([0, 1, 2, 3, 4].map((r) => shareSize(1_003, 64, 15, r, 5))).toEqual([9, 9, 9, 8, 8]);
  });

  it('shares of every step partition the global batch, whatever the world size', () => {
    const plan = createEpochPlan({ count: 1_003, seed: 11, epoch: 4, batchSize: 64 });
    expect(plan.steps).toBe(16);
    expect(plan.batch(15).length).toBe(1_003 - 15 * 64);
    for (const w of [1, 2, 3, 5]) {
      for (let step = 0; step < plan.steps; step++) {
        const joined = Array.from({ length: w }, (_, r) => [...plan.share(step, r, w)]).flat();
        expect(joined).toEqual([...plan.batch(step)]);
      }
    }
    // The global batches together are exactly the epoch's order.
    const all = Array.from({ length: plan.steps }, (_, s) => [...plan.batch(s)]).flat();
    expect(all).toEqual([...epochOrder(1_003, 11, 4)]);
  });

  it('a worker derives its share from (seed, epoch, step, rank, worldSize) alone', () => {
    const coordinator = createEpochPlan({ count: 500, seed: 3, epoch: 2, batchSize: 32 });
    const workerView = batchShare({
      count: 500,
      seed: 3,
      epoch: 2,
      batchSize: 32,
      step: 7,
      rank: 1,
      worldSize: 3,
    });
    expect(workerView).toEqual(coordinator.share(7, 1, 3));
  });

  it('dropRemainder drops the short last batch; bad steps are rejected', () => {
    const plan = createEpochPlan({
      count: 100,
      seed: 0,
      epoch: 0,
      batchSize: 30,
      dropRemainder: true,
    });
    expect(plan.steps).toBe(3);
    expect(() => plan.batch(3)).toThrow(/expected 0 <= step < 3/);
    const unshuffled = createEpochPlan({
      count: 5,
      seed: 0,
      epoch: 0,
      batchSize: 2,
      shuffle: false,
    });
    expect([...unshuffled.batch(2)]).toEqual([4]);
  });
});
