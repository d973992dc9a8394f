/**
 * Throughput (items per second, over a run and smoothed), a timer, and step-time statistics
 * for benchmarks.
 */
import {
  describeValue,
  invalidArgument,
  requireFinite,
  requireInteger,
  requireNumberArray,
} from './validation.js';

/** A monotonic clock in milliseconds, like `performance.now`. Injected in tests. */
export type Clock = () => number;

const defaultClock: Clock = () => performance.now();

/** A running stopwatch. Create with {@link startTimer}. */
export interface Timer {
  /** Seconds since the timer started (or last restarted). */
  elapsedSeconds(): number;
  /** Returns the seconds since the last start or restart, and starts again from now (a lap). */
  restart(): number;
}

/**
 * Starts a stopwatch on a monotonic clock (`performance.now`, unaffected by wall-clock changes).
 *
 * @example
 * ```ts
 * const timer = startTimer();
 * await trainStep();
 * meter.record(batchSize, timer.restart());
 * ```
 */
export function startTimer(options: { now?: Clock } = {}): Timer {
  const now = options.now ?? defaultClock;
  let startedAt = now();
  return {
    elapsedSeconds: () => (now() - startedAt) / 1000,
    restart() {
      const at = now();
      const seconds = (at - startedAt) / 1000;
      startedAt = at;
      return seconds;
    },
  };
}

/**
 * Runs `fn` (sync or async) and returns its value with the seconds it took. If `fn` throws,
 * the error propagates unchanged and nothing is timed.
 *
 * @example
 * ```ts
 * const { value: report, seconds } = await timed(() => evaluate(model));
 * ```
 */
export async function timed<T>(
  fn: () => T | Promise<T>,
  options: { now?: Clock } = {},
): Promise<{ value: T; seconds: number }> {
  const timer = startTimer(options);
  const value = await fn();
  return { value, seconds: timer.elapsedSeconds() };
}

/** Summary statistics of a set of durations, in seconds. All 0 when `count` is 0. */
export interface DurationSummary {
  count: number;
  mean: number;
  min: number;
  max: number;
  /** Median. */
  p50: number;
  p95: number;
  p99: number;
}

/**
 * The `q`-quantile (0 ≤ q ≤ 1) of `values` by linear interpolation between the two nearest
 * ranks, `x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])` with `h = (n − 1)·q` on the sorted values:
 * NumPy's default ("linear", Hyndman–Fan type 7). 0 for no values.
 *
 * @example
 * ```ts
 * quantile([4, 1, 3, 2], 0.5); // sorted 1 2 3 4, h = 1.5 -> 2.5
 * ```
 */
export function quantile(values: ArrayLike<number>, q: number): number {
  if (!(typeof q === 'number' && q >= 0 && q <= 1)) {
    invalidArgument(`q must be a number in [0, 1], found ${describeValue(q)}.`);
  }
  return quantileOfSorted(sortedFinite('values', values), q);
}

/**
 * Count, mean, min, max, p50, p95 and p99 of step durations (see {@link quantile} for the
 * interpolation). Drop warm-up steps (the first steps compile kernels) before summarising.
 *
 * @example
 * ```ts
 * summarizeDurations([0.10, 0.12, 0.11, 0.30]);
 * // { count: 4, mean: 0.1575, min: 0.1, max: 0.3, p50: 0.115, p95: 0.2730, p99: 0.2946 }
 * ```
 */
export function summarizeDurations(seconds: ArrayLike<number>): DurationSummary {
  const sorted = sortedFinite('seconds', seconds);
  const n = sorted.length;
  if (n === 0) return { count: 0, mean: 0, min: 0, max: 0, p50: 0, p95: 0, p99: 0 };
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: n,
    mean: sum / n,
    min: sorted[0]!,
    max: sorted[n - 1]!,
    p50: quantileOfSorted(sorted, 0.5),
    p95: quantileOfSorted(sorted, 0.95),
    p99: quantileOfSorted(sorted, 0.99),
  };
}

function sortedFinite(name: string, values: ArrayLike<number>): Float64Array {
  const array = requireNumberArray(name, values);
  const sorted = Float64Array.from(array);
  for (let i = 0; i < sorted.length; i++) {
    if (!Number.isFinite(sorted[i]!)) {
      invalidArgument(`${name}[${i}] is ${describeValue(array[i])}: expected finite numbers.`);
    }
  }
  // Float64Array sorts numerically (not as strings, unlike Array.prototype.sort).
  return sorted.sort();
}

function quantileOfSorted(sorted: Float64Array, q: number): number {
  const n = sorted.length;
  if (n === 0) return 0;
  const h = (n - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, n - 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

/** Options of {@link createThroughputMeter}. */
export interface ThroughputOptions {
  /**
   * Time constant τ of the smoothed rate, in seconds (default 10): a step that ended `a`
   * recorded seconds ago weighs `e^(−a/τ)`, so data older than τ counts less than 37% and a
   * change in speed shows 95% in about 3τ.
   */
  timeConstantSeconds?: number;
  /** How many of the latest step durations to keep for `stepSeconds` (default 1,000). */
  stepWindow?: number;
  /** Clock for `start`/`stop`, in milliseconds; default `performance.now`. */
  now?: Clock;
}

/** What a {@link ThroughputMeter} reports. Rates are 0 while no time has been recorded. */
export interface ThroughputResult {
  /** Items (e.g. images) recorded. */
  count: number;
  /** Seconds recorded (the sum of step durations; gaps between steps are not counted). */
  seconds: number;
  /** Steps recorded. */
  steps: number;
  /** `count / seconds` over the whole run. */
  itemsPerSecond: number;
  /** Exponentially smoothed rate: decayed items / decayed seconds (see `timeConstantSeconds`). */
  smoothedItemsPerSecond: number;
  /** Statistics of the latest `stepWindow` step durations. */
  stepSeconds: DurationSummary;
}

/** Measures items per second. Create with {@link createThroughputMeter}. */
export interface ThroughputMeter {
  /** Records a step that processed `count` items in `seconds` (both finite and >= 0). */
  record(count: number, seconds: number): void;
  /** Starts timing a step with the clock. */
  start(): void;
  /** Ends the step begun by `start()`, records it with `count` items, and returns its seconds. */
  stop(count: number): number;
  /** The rates and step statistics so far. */
  result(): ThroughputResult;
  /** Forgets everything recorded (and any step in progress). */
  reset(): void;
}

/**
 * Creates a throughput meter, fed either with `record(count, seconds)` or with `start()` /
 * `stop(count)` around each step. It reports the rate over the whole run, an exponentially
 * smoothed rate for progress displays, and step-time statistics.
 *
 * The smoothed rate is `Σ wᵢ·countᵢ / Σ wᵢ·secondsᵢ` with `wᵢ = e^(−aᵢ/τ)`, `aᵢ` the recorded
 * seconds since step i ended. As a ratio of two decayed sums it needs no warm-up correction,
 * reports a constant rate exactly whatever the step sizes, and stays finite for zero-length steps.
 *
 * @example
 * ```ts
 * const meter = createThroughputMeter({ timeConstantSeconds: 5 });
 * for (const batch of batches) {
 *   meter.start();
 *   await step(batch);
 *   meter.stop(batch.size);
 * }
 * const { itemsPerSecond, smoothedItemsPerSecond, stepSeconds } = meter.result();
 * ```
 */
export function createThroughputMeter(options: ThroughputOptions = {}): ThroughputMeter {
  const tau = requireFinite('timeConstantSeconds', options.timeConstantSeconds ?? 10);
  if (!(tau > 0))
    invalidArgument(`timeConstantSeconds must be > 0, found ${tau}. The default is 10 seconds.`);
  const window = requireInteger('stepWindow', options.stepWindow ?? 1000, 1);
  const now = options.now ?? defaultClock;

  let count = 0;
  let seconds = 0;
  let steps = 0;
  let decayedCount = 0;
  let decayedSeconds = 0;
  // Ring buffer of the latest step durations.
  const recent = new Float64Array(window);
  let startedAt: number | undefined;

  const record = (n: number, dt: number): void => {
    requireFinite('count', n, { nonNegative: true });
    requireFinite('seconds', dt, { nonNegative: true });
    const decay = Math.exp(-dt / tau);
    decayedCount = decayedCount * decay + n;
    decayedSeconds = decayedSeconds * decay + dt;
    recent[steps % window] = dt;
    count += n;
    seconds += dt;
    steps += 1;
  };

  return {
    record,
    start() {
      if (startedAt !== undefined) {
        invalidArgument(
          'start() was called while a step was already being timed: call stop(count) first.',
        );
      }
      startedAt = now();
    },
    stop(n) {
      if (startedAt === undefined) {
        invalidArgument(
          'stop() was called with no step being timed: call start() before the step.',
        );
      }
      // A clock that steps backwards would give a negative duration; count it as zero instead.
      const dt = Math.max(0, (now() - startedAt) / 1000);
      requireFinite('count', n, { nonNegative: true });
      startedAt = undefined;
      record(n, dt);
      return dt;
    },
    result() {
      return {
        count,
        seconds,
        steps,
        itemsPerSecond: seconds === 0 ? 0 : count / seconds,
        smoothedItemsPerSecond: decayedSeconds === 0 ? 0 : decayedCount / decayedSeconds,
        stepSeconds: summarizeDurations(recent.subarray(0, Math.min(steps, window))),
      };
    },
    reset() {
      count = 0;
      seconds = 0;
      steps = 0;
      decayedCount = 0;
      decayedSeconds = 0;
      recent.fill(0);
      startedAt = undefined;
    },
  };
}
