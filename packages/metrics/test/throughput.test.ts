import { describe, expect, it } from 'vitest';
import {
  createThroughputMeter,
  quantile,
  startTimer,
  summarizeDurations,
  timed,
} from '../src/index.js';
import { expectShardlineError } from './helpers.js';

/** A clock the test moves by hand, in milliseconds. */
function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('startTimer and timed', () => {
  it('measures seconds on the given clock, with laps', () => {
    const clock = fakeClock();
    const timer = startTimer({ now: clock.now });
    clock.advance(250);
    expect(timer.elapsedSeconds()).toBe(0.25);
    clock.advance(250);
    expect(timer.restart()).toBe(0.5);
    clock.advance(100);
    expect(timer.elapsedSeconds()).toBe(0.1);
  });

  it('returns the value of an async function with its duration', async () => {
    const clock = fakeClock();
    const result = await timed(
      async () => {
        clock.advance(1500);
        return 'done';
      },
      { now: clock.now },
    );
    expect(result).toEqual({ value: 'done', seconds: 1.5 });
  });
});

describe('quantile and summarizeDurations', () => {
  it('interpolates linearly between ranks (NumPy default)', () => {
    // sorted 1 2 3 4: q=0.5 -> h=1.5 -> 2.5; q=0.95 -> h=2.85 -> 3.85; q=0 -> 1; q=1 -> 4
    expect(quantile([4, 1, 3, 2], 0.5)).toBe(2.5);
    expect(quantile([4, 1, 3, 2], 0.95)).toBeCloseTo(3.85, 12);
    expect(quantile([4, 1, 3, 2], 0)).toBe(1);
    expect(quantile([4, 1, 3, 2], 1)).toBe(4);
    expect(quantile([7], 0.95)).toBe(7);
    expect(quantile([], 0.5)).toBe(0);
  });

  it('summarises step times: mean, min, max, p50, p95, p99', () => {
    // sorted 0.10 0.11 0.12 0.30; mean 0.63/4 = 0.1575
    // p50: h=1.5  -> 0.11 + 0.5·0.01  = 0.115
    // p95: h=2.85 -> 0.12 + 0.85·0.18 = 0.273
    // p99: h=2.97 -> 0.12 + 0.97·0.18 = 0.2946
    const s = summarizeDurations(Float64Array.of(0.1, 0.12, 0.11, 0.3));
    expect(s.count).toBe(4);
    expect(s.min).toBe(0.1);
    expect(s.max).toBe(0.3);
    expect(s.mean).toBeCloseTo(0.1575, 12);
    expect(s.p50).toBeCloseTo(0.115, 12);
    expect(s.p95).toBeCloseTo(0.273, 12);
    expect(s.p99).toBeCloseTo(0.2946, 12);
    expect(summarizeDurations([])).toEqual({
      count: 0,
      mean: 0,
      min: 0,
      max: 0,
      p50: 0,
      p95: 0,
      p99: 0,
    });
  });

  it('rejects non-finite durations and q outside [0, 1]', () => {
    expectShardlineError(
      () => summarizeDurations([0.1, Number.NaN]),
      'INVALID_ARGUMENT',
      'seconds[1] is NaN',
    );
    expectShardlineError(
      () => quantile([1], 1.5),
      'INVALID_ARGUMENT',
      'q must be a number in [0, 1]',
    );
  });
});

describe('createThroughputMeter', () => {
  it('reports the run rate and the smoothed rate (hand-computed, tau = 10 s)', () => {
    const meter = createThroughputMeter({ timeConstantSeconds: 10 });
    meter.record(100, 1);
    // One step: decayed items 100 over decayed seconds 1.
    expect(meter.result().smoothedItemsPerSecond).toBe(100);
    meter.record(300, 1);
    // Run: 400 / 2 = 200. Smoothed: (100·e^-0.1 + 300) / (1·e^-0.1 + 1) = 390.4837 / 1.904837 = 204.9958
    const r = meter.result();
    expect(r.count).toBe(400);
    expect(r.seconds).toBe(2);
    expect(r.steps).toBe(2);
    expect(r.itemsPerSecond).toBe(200);
    expect(r.smoothedItemsPerSecond).toBeCloseTo(204.99583749578798, 9);
  });

  it('reports a constant rate exactly whatever the step sizes', () => {
    const meter = createThroughputMeter({ timeConstantSeconds: 2 });
    for (const seconds of [0.5, 0.01, 3, 0.2, 1]) meter.record(64 * seconds, seconds);
    expect(meter.result().smoothedItemsPerSecond).toBeCloseTo(64, 9);
    expect(meter.result().itemsPerSecond).toBeCloseTo(64, 9);
  });

  it('moves 1 - e^-3 = 95% of the way to a new rate after 3 time constants', () => {
    const meter = createThroughputMeter({ timeConstantSeconds: 10 });
    for (let i = 0; i < 1000; i++) meter.record(10, 0.1); // 100/s for 100 s = 10 tau
    for (let i = 0; i < 300; i++) meter.record(20, 0.1); // 200/s for 30 s = 3 tau
    // Continuous limit: 100 + 100·(1 - e^-3) = 195.0213; 0.1 s steps shift it by < 0.001.
    expect(meter.result().smoothedItemsPerSecond).toBeCloseTo(100 + 100 * (1 - Math.exp(-3)), 2);
    expect(meter.result().itemsPerSecond).toBeCloseTo(16000 / 130, 9);
  });

  it('times steps with start/stop on the clock and keeps step-time statistics', () => {
    const clock = fakeClock();
    const meter = createThroughputMeter({ now: clock.now, stepWindow: 3 });
    for (const ms of [400, 100, 200, 300]) {
      meter.start();
      clock.advance(ms);
      expect(meter.stop(32)).toBe(ms / 1000);
      clock.advance(5_000); // time between steps is not counted
    }
    const r = meter.result();
    expect(r.count).toBe(128);
    expect(r.seconds).toBeCloseTo(1, 12);
    expect(r.itemsPerSecond).toBeCloseTo(128, 9);
    // The window keeps the latest 3 steps: 0.1 0.2 0.3 -> mean 0.2, p50 0.2, p95 h=1.9 -> 0.29
    expect(r.stepSeconds.count).toBe(3);
    expect(r.stepSeconds.mean).toBeCloseTo(0.2, 12);
    expect(r.stepSeconds.p50).toBeCloseTo(0.2, 12);
    expect(r.stepSeconds.p95).toBeCloseTo(0.29, 12);
    expect(r.stepSeconds.max).toBeCloseTo(0.3, 12);
  });

  it('reports 0 rather than Infinity or NaN when no time was recorded, and resets', () => {
    const meter = createThroughputMeter();
    expect(meter.result().itemsPerSecond).toBe(0);
    meter.record(10, 0);
    expect(meter.result()).toMatchObject({
      count: 10,
      itemsPerSecond: 0,
      smoothedItemsPerSecond: 0,
    });
    meter.reset();
    expect(meter.result()).toMatchObject({ count: 0, steps: 0, stepSeconds: { count: 0 } });
  });

  it('rejects bad input and misuse of start/stop', () => {
    const meter = createThroughputMeter();
    expectShardlineError(
      () => meter.record(-1, 1),
      'INVALID_ARGUMENT',
      'count must be a finite number >= 0, found -1',
    );
    expectShardlineError(() => meter.record(1, Number.NaN), 'INVALID_ARGUMENT', 'seconds must be');
    expectShardlineError(() => meter.stop(1), 'INVALID_ARGUMENT', 'call start() before the step');
    meter.start();
    expectShardlineError(() => meter.start(), 'INVALID_ARGUMENT', 'call stop(count) first');
    expectShardlineError(
      () => createThroughputMeter({ timeConstantSeconds: 0 }),
      'INVALID_ARGUMENT',
      'timeConstantSeconds must be > 0',
    );
    expectShardlineError(
      () => createThroughputMeter({ stepWindow: 0 }),
      'INVALID_ARGUMENT',
      'stepWindow must be an integer >= 1',
    );
  });
});
