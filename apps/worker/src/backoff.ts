/**
 * Retrying with exponential backoff and full jitter (AWS Architecture Blog, "Exponential Backoff
 * And Jitter"): workers started before their coordinator keep knocking without stampeding it.
 */
import { ShardlineError } from '@shardline/core';

/** Options of {@link retryWithBackoff}. */
export interface BackoffOptions {
  /** First delay ceiling. Default 250 ms. */
  initialMs?: number;
  /** Largest delay ceiling. Default 5 s. */
  maxMs?: number;
  /** Give up after this long in total (then the last error is thrown). Default 60 s. */
  deadlineMs?: number;
  /** Whether an error is worth another try. Default: every error. */
  retryable?: (error: unknown) => boolean;
  /** Called before each wait, for logs. */
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  signal?: AbortSignal;
  /** Random source in [0, 1), for tests. */
  random?: () => number;
}

/** Calls `attempt` until it resolves, waiting longer after each retryable failure. */
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
      await sleep(delay, options.signal);
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted)
      return reject(new ShardlineError('CANCELLED', 'Stopped while waiting to retry.'));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new ShardlineError('CANCELLED', 'Stopped while waiting to retry.'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
