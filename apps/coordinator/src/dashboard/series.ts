/**
 * A time series of numeric points with bounded memory: up to `max` points are kept as they
 * come; beyond that, neighbouring points are merged pairwise (their mean) and each later point
 * stands for twice as many raw ones, so a run of any length keeps between `max / 2` and `max`
 * points, evenly spaced over the whole run (the curve keeps its shape; its noise is averaged).
 *
 * 10,000 points of about 15 fields is about 2 MB of JSON for `/api/state`: a whole 30-epoch
 * seed run (56,250 steps at batch 32) is drawn from at most that.
 */

/** A point: named numbers (a step's loss, accuracy, timings...), some of them optional. */
export type NumericPoint<P> = { [K in keyof P]: number };

/** A bounded series; see the module comment. */
export interface DownsampledSeries<P extends NumericPoint<P>> {
  /** Adds one raw point. */
  push(point: P): void;
  /** The kept points, oldest first, the latest partial bucket included. */
  points(): P[];
  /** Raw points behind each kept point (1 until the first merge, then 2, 4, ...). */
  readonly stride: number;
  /** Raw points pushed so far. */
  readonly total: number;
}

/** Options of {@link createDownsampledSeries}. */
export interface DownsampledSeriesOptions<P extends NumericPoint<P>> {
  /** Most points kept; even, at least 2. */
  max: number;
  /**
   * Fields a merged point takes from its last raw point instead of the mean: positions such as
   * the step number, the epoch and the time.
   */
  last: readonly (keyof P & string)[];
}

/**
 * Raw points summed: `n` of them, each field's sum and count (a field may be missing from some
 * points), and the last point (for the `last` fields).
 */
interface Bucket<P> {
  n: number;
  sums: Map<string, { sum: number; count: number }>;
  last: P;
}

/**
 * Creates a {@link DownsampledSeries}.
 *
 * @example
 * ```ts
 * const train = createDownsampledSeries<{ step: number; loss: number }>({ max: 10_000, last: ['step'] });
 * train.push({ step: 1, loss: 2.3 });
 * ```
 */
export function createDownsampledSeries<P extends NumericPoint<P>>(
  options: DownsampledSeriesOptions<P>,
): DownsampledSeries<P> {
  const max = Math.max(2, options.max - (options.max % 2));
  const lastKeys = new Set<string>(options.last);
  const kept: Bucket<P>[] = [];
  let pending: Bucket<P> | undefined;
  let stride = 1;
  let total = 0;

  const add = (into: Bucket<P>, from: Bucket<P>) => {
    into.n += from.n;
    for (const [key, { sum, count }] of from.sums) {
      const total = into.sums.get(key);
      if (total) {
        total.sum += sum;
        total.count += count;
      } else {
        into.sums.set(key, { sum, count });
      }
    }
    into.last = from.last;
  };
  const mean = (bucket: Bucket<P>): P => {
    const point: Record<string, number> = { ...bucket.last };
    for (const [key, { sum, count }] of bucket.sums) point[key] = sum / count;
    return point as P;
  };
  const halve = () => {
    for (let i = 0; i < kept.length / 2; i++) {
      const merged = kept[2 * i]!;
      add(merged, kept[2 * i + 1]!);
      kept[i] = merged;
    }
    kept.length = kept.length / 2;
    stride *= 2;
  };

  return {
    push(point) {
      total++;
      const sums: Bucket<P>['sums'] = new Map();
      for (const [key, value] of Object.entries(point as Record<string, number | undefined>)) {
        if (value !== undefined && !lastKeys.has(key)) sums.set(key, { sum: value, count: 1 });
      }
      const raw: Bucket<P> = { n: 1, sums, last: point };
      if (pending) add(pending, raw);
      else pending = raw;
      if (pending.n < stride) return;
      kept.push(pending);
      pending = undefined;
      if (kept.length >= max) halve();
    },
    points() {
      const points = kept.map(mean);
      if (pending) points.push(mean(pending));
      return points;
    },
    get stride() {
      return stride;
    },
    get total() {
      return total;
    },
  };
}
