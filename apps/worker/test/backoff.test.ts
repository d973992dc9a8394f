/**
 * retryWithBackoff with an injected random source and real, millisecond-sized waits. Fake
 * timers would not reach the wait: vitest 4.1 does not mock `node:timers/promises`
 * (https://github.com/vitest-dev/vitest/issues/10871), so only `Date` is faked, to move the
 * deadline's clock.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type BackoffOptions, retryWithBackoff } from '../src/backoff.js';

afterEach(() => {
  vi.useRealTimers();
});

/** An attempt that fails `failures` times with errors `fail 1`, `fail 2`, ..., then returns 'ok'. */
function failingAttempt(failures: number) {
  const errors: Error[] = [];
  const startedAt: number[] = [];
  const attempt = vi.fn(async (n: number) => {
    startedAt.push(performance.now());
    if (n > failures) return 'ok';
    const error = new Error(`fail ${n}`);
    errors.push(error);
    throw error;
  });
  return { attempt, errors, startedAt };
}

/** Runs retryWithBackoff and returns what it resolved to and the delays onRetry saw. */
async function delaysOf(failures: number, options: BackoffOptions) {
  const { attempt } = failingAttempt(failures);
  const delays: number[] = [];
  const result = await retryWithBackoff(attempt, {
    ...options,
    onRetry: (_error, _attempt, delayMs) => delays.push(delayMs),
  });
  return { result, delays, attempts: attempt.mock.calls.map(([n]) => n) };
}

describe('retryWithBackoff', () => {
  it('returns the first success, numbering the attempts from 1', async () => {
    const { result, delays, attempts } = await delaysOf(2, { initialMs: 2, random: () => 0.5 });
    expect(result).toBe('ok');
    expect(attempts).toEqual([1, 2, 3]);
    expect(delays).toHaveLength(2);
  });

  it('doubles the delay ceiling after each failure up to maxMs', async () => {
    const { delays } = await delaysOf(6, { initialMs: 2, maxMs: 16, random: () => 0.5 });
    // Ceilings 2, 4, 8, 16, 16, 16; each delay is half its ceiling.
    expect(delays).toEqual([1, 2, 4, 8, 8, 8]);
  });

  it('starts at 250 ms and caps at 5 s by default', async () => {
    const { delays } = await delaysOf(7, { random: () => 0.004 });
    // Ceilings 250, 500, 1,000, 2,000, 4,000, 5,000, 5,000 ms, times 0.004.
    expect(delays).toEqual([1, 2, 4, 8, 16, 20, 20]);
  });

  it('draws each delay from the random source over [0, ceiling], rounded', async () => {
    const draws = [0, 0.25, 0.75, 0.999];
    const random = vi.fn(() => draws.shift()!);
    const { delays } = await delaysOf(4, { initialMs: 4, maxMs: 1000, random });
    // Ceilings 4, 8, 16, 32: 0 x 4, 0.25 x 8, 0.75 x 16, 0.999 x 32 = 31.968.
    expect(delays).toEqual([0, 2, 12, 32]);
    expect(random).toHaveBeenCalledTimes(4);
  });

  it('waits the delay it reported before the next attempt', async () => {
    const { attempt, startedAt } = failingAttempt(1);
    const delays: number[] = [];
    await retryWithBackoff(attempt, {
      initialMs: 80,
      random: () => 0.5,
      onRetry: (_error, _attempt, delayMs) => delays.push(delayMs),
    });
    expect(delays).toEqual([40]);
    // Timers never fire early; allow 1 ms for the clocks' rounding.
    expect(startedAt[1]! - startedAt[0]!).toBeGreaterThanOrEqual(39);
  });

  it('calls onRetry with the error, the attempt number and the delay, before each wait', async () => {
    const { attempt, errors } = failingAttempt(2);
    const onRetry = vi.fn();
    await retryWithBackoff(attempt, { initialMs: 4, random: () => 0.5, onRetry });
    expect(onRetry.mock.calls).toEqual([
      [errors[0], 1, 2],
      [errors[1], 2, 4],
    ]);
    expect(onRetry.mock.calls[0]![0]).toBe(errors[0]);
    expect(onRetry.mock.calls[1]![0]).toBe(errors[1]);
  });

  it('rethrows a non-retryable error at once, without waiting or calling onRetry', async () => {
    const fatal = Object.assign(new Error('bad token'), { code: 'PERMISSION_DENIED' });
    // A second attempt would succeed: retrying a fatal error shows as a resolved promise.
    const attempt = vi.fn(async (n: number) => {
      if (n > 1) return 'retried';
      throw fatal;
    });
    const onRetry = vi.fn();
    const retryable = vi.fn((error: unknown) => (error as { code?: string }).code !== fatal.code);
    const started = performance.now();
    await expect(
      retryWithBackoff(attempt, { initialMs: 10_000, random: () => 0.5, retryable, onRetry }),
    ).rejects.toBe(fatal);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(attempt).toHaveBeenCalledTimes(1);
    expect(retryable).toHaveBeenCalledWith(fatal);
    expect(onRetry).not.toHaveBeenCalled();
  });

  it('retries the errors retryable accepts', async () => {
    const { attempt } = failingAttempt(2);
    const retryable = vi.fn(() => true);
    await expect(
      retryWithBackoff(attempt, { initialMs: 2, random: () => 0.5, retryable }),
    ).resolves.toBe('ok');
    expect(retryable).toHaveBeenCalledTimes(2);
  });

  it('stops at the deadline, counting the attempts, and throws the last error', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const errors: Error[] = [];
    // Each attempt takes 300 ms of (fake) wall-clock time and fails, up to a bound that keeps a
    // broken deadline from retrying for ever.
    const attempt = vi.fn(async (n: number) => {
      if (n > 10) return 'kept retrying past the deadline';
      vi.setSystemTime(Date.now() + 300);
      const error = new Error(`fail ${n}`);
      errors.push(error);
      throw error;
    });
    const onRetry = vi.fn();
    // Delays 1, 2, 4 ms. After attempt 3 the clock reads 900 ms: a 4 ms wait ends at 904, inside
    // the deadline of 904. Attempt 4 ends at 1,204 ms, past it.
    const failure = retryWithBackoff(attempt, {
      initialMs: 2,
      deadlineMs: 904,
      random: () => 0.5,
      onRetry,
    });
    const error = await failure.catch((e: unknown) => e);
    expect(errors).toHaveLength(4);
    expect(error).toBe(errors[3]);
    expect(onRetry.mock.calls.map(([, n, delay]) => [n, delay])).toEqual([
      [1, 1],
      [2, 2],
      [3, 4],
    ]);
  });

  it('does not start a wait that would end past the deadline', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { attempt, errors } = failingAttempt(1);
    const onRetry = vi.fn();
    // The first delay, 4,000 ms, would end after the 3,999 ms deadline: no wait, no retry.
    const started = performance.now();
    const error = await retryWithBackoff(attempt, {
      initialMs: 8000,
      maxMs: 8000,
      deadlineMs: 3999,
      random: () => 0.5,
      onRetry,
    }).catch((e: unknown) => e);
    expect(error).toBe(errors[0]);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(attempt).toHaveBeenCalledTimes(1);
    expect(onRetry).not.toHaveBeenCalled();
  });

  it('gives up after 60 s by default', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const attempt = vi.fn(async (n: number) => {
      if (n > 20) return 'kept retrying past the deadline';
      vi.setSystemTime(Date.now() + 10_000);
      throw new Error('unreachable');
    });
    // Zero delays: attempts end at 10, 20, ..., 60 (still inside) and 70 s.
    await expect(retryWithBackoff(attempt, { random: () => 0 })).rejects.toThrow('unreachable');
    expect(attempt).toHaveBeenCalledTimes(7);
  });

  it('stops a wait in progress as soon as the signal aborts, with CANCELLED', async () => {
    const { attempt, errors } = failingAttempt(10);
    const controller = new AbortController();
    const onRetry = vi.fn(() => {
      setTimeout(() => controller.abort(), 20);
    });
    const started = performance.now();
    // The first wait would take 30 s.
    const failure = retryWithBackoff(attempt, {
      initialMs: 60_000,
      maxMs: 60_000,
      random: () => 0.5,
      onRetry,
      signal: controller.signal,
    });
    await expect(failure).rejects.toMatchObject({
      name: 'ShardlineError',
      code: 'CANCELLED',
      message: 'Stopped while waiting to retry.',
    });
    expect(performance.now() - started).toBeLessThan(2000);
    expect(attempt).toHaveBeenCalledTimes(1);
    expect(onRetry).toHaveBeenCalledWith(errors[0], 1, 30_000);
  });

  it('does not wait at all on a signal that is already aborted', async () => {
    const { attempt } = failingAttempt(10);
    const started = performance.now();
    await expect(
      retryWithBackoff(attempt, {
        initialMs: 60_000,
        maxMs: 60_000,
        random: () => 0.5,
        signal: AbortSignal.abort(),
      }),
    ).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(performance.now() - started).toBeLessThan(1000);
    expect(attempt).toHaveBeenCalledTimes(1);
  });
});
