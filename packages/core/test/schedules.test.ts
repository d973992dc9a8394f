import { describe, expect, it } from 'vitest';
import { createSchedule } from '../src/schedules.js';

describe('createSchedule', () => {
  it('decays in steps', () => {
    const lr = createSchedule({ kind: 'step', baseLr: 1, gamma: 0.5, stepSize: 10 });
    expect([lr(0), lr(9), lr(10), lr(25)]).toEqual([1, 1, 0.5, 0.25]);
  });

  it('follows a cosine from base to min over totalSteps, then stays at min', () => {
    const lr = createSchedule({ kind: 'cosine', baseLr: 1, minLr: 0.1, totalSteps: 100 });
    expect(lr(0)).toBeCloseTo(1, 12);
    expect(lr(50)).toBeCloseTo(0.55, 12);
    expect(lr(100)).toBeCloseTo(0.1, 12);
    expect(lr(500)).toBeCloseTo(0.1, 12);
  });

  it('warms up linearly before handing over to the decay', () => {
    const lr = createSchedule({ kind: 'constant', baseLr: 0.8, warmupSteps: 4, warmupFrom: 0.25 });
    // 0.8 * (0.25 + 0.75 * s / 4)
    expect([lr(0), lr(2), lr(4), lr(100)].map((x) => Number(x.toFixed(6)))).toEqual([
      0.2, 0.5, 0.8, 0.8,
    ]);
  });

  it('rejects a non-positive base rate', () => {
    expect(() => createSchedule({ kind: 'constant', baseLr: 0 })).toThrow(
      /baseLr must be a positive number, found 0/,
    );
  });
});
