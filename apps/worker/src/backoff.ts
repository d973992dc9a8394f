/**
 * Retrying with exponential backoff and full jitter (AWS Architecture Blog, "Exponential Backoff
 * And Jitter"): workers started before their coordinator keep knocking without stampeding it.
 */
import { setTimeout as wait } from 'node:timers/promises';
import { ShardlineError } from '@shardline/core';

/** Options of {@link retryWithBackoff}. */
export interface BackoffOptions {
  /** First delay ceiling. Default 250 ms. */
  initialMs?: number;
  /** Largest delay ceiling. Default 5 s. */
  maxMs?: number;
  /**
   * Give up after this long in total, attempts included: a retry whose wait would end past it
   * is not made, and the last error is thrown. Default 60 s.
   */
  deadlineMs?: number;
  /** Whether an error is worth another try. Default: every error. */
  retryable?: (error: unknown) => boolean;
  /** Called before each wait, for logs. */
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  /** Stops a wait between attempts at once, with a `CANCELLED` error. */
  signal?: AbortSignal;
  /** Random source in [0, 1), for tests. Default `Math.random`. */
  random?: () => number;
}

/**
 * Calls `attempt` (with the attempt number, from 1) until it resolves, waiting longer after each
 * retryable failure: before retry `n` it waits a random time from 0 to
 * `min(maxMs, initialMs * 2^(n-1))`. Throws the error of the last attempt when it is not
 * retryable or the deadline leaves no room for another wait, and a `CANCELLED`
 * {@link ShardlineError} when `signal` aborts a wait.
 *
 * @example
 * ```ts
 * const joined = await retryWithBackoff(() => join(client), {
 *   deadlineMs: 30_000,
 *   onRetry: (error, attempt, delayMs) => logger.info('retrying', { attempt, delayMs }),
 *   signal,
 * });
 * ```
 */
export async function retryWithBackoff<T>(
  attempt: (n: number) => Promise<T>,
  options: BackoffOptions = {},
): Promise<T> {
  const initial = options.initialMs ?? 250;
  const max = options.maxMs ?? 5000;
  const deadline = Date.now() + (options.deadlineMs ?? 60_000);
  const random = options.random ?? Math.random;
  for (let n = 1; ; n++) {
    try {
      return await attempt(n);
    } catch (error) {
      if (options.retryable && !options.retryable(error)) throw error;
      const ceiling = Math.min(max, initial * 2 ** (n - 1));
      const delay = Math.round(random() * ceiling);
      if (Date.now() + delay > deadline) throw error;
      options.onRetry?.(error, n, delay);
      await waitToRetry(delay, options.signal);
    }
  }
}

async function waitToRetry(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await wait(ms, undefined, signal === undefined ? {} : { signal });
  } catch (error) {
    if (!signal?.aborted) throw error;
    throw new ShardlineError('CANCELLED', 'Stopped while waiting to retry.', { cause: error });
  }
}
