/**
 * Rounds of calls from the trainer to its members (shares, ring reductions, state transfers,
 * evaluations): how a failed member is dropped, how a deadline names the worker that missed it,
 * how the test set is sliced. Shared by the star and ring paths so that both drop, time out,
 * cancel and evaluate alike. Internal: not exported from the package.
 */
import { hasErrorCode, type Logger, ShardlineError, toShardlineError } from '@shardline/core';
import type { EvalAssignment, Membership, TrainingWorker } from './contract.js';
import { classCounts } from './reports.js';

/** A member and what it failed with. */
export interface MemberFailure {
  worker: TrainingWorker;
  error: unknown;
}

/** What the fault handling reads from the run's options. */
export interface FaultOptions {
  membership: Membership;
  logger: Logger;
  signal?: AbortSignal | undefined;
}

/**
 * Drops every failed member through `membership.drop`, logging why, so the caller can retry
 * `what` with those that remain. Throws instead when the run was aborted (as CANCELLED: the
 * failures are the abort itself, since workers reject with the signal's reason) or when members
 * cannot be dropped (in-process): then the first failure fails the job.
 */
export function dropFailed(
  failed: readonly MemberFailure[],
  options: FaultOptions,
  what: string,
): void {
  if (failed.length === 0) return;
  const { membership, logger, signal } = options;
  const first = failed[0]!.error;
  if (signal?.aborted) throw cancelled(first);
  if (!membership.drop) throw first;
  for (const { worker, error } of failed) {
    const reason = toShardlineError(error).message;
    logger.warn(`dropped a worker; retrying ${what} without it`, { worker: worker.name, reason });
    membership.drop(worker, reason);
  }
}

/** The error a run aborted by its signal stops with. */
export function cancelled(cause: unknown): ShardlineError {
  return hasErrorCode(cause, 'CANCELLED')
    ? cause
    : new ShardlineError('CANCELLED', 'Training was interrupted before it finished.', { cause });
}

/**
 * The members' answers when all of them answered; otherwise drops every member that failed (see
 * {@link dropFailed}) and returns undefined, so the caller retries with those that remain.
 */
export function settle<T>(
  settled: readonly PromiseSettledResult<T>[],
  members: readonly TrainingWorker[],
  options: FaultOptions,
  what: string,
): T[] | undefined {
  const failed = settled.flatMap((r, i) =>
    r.status === 'rejected' ? [{ worker: members[i]!, error: r.reason as unknown }] : [],
  );
  if (failed.length === 0) return settled.map((r) => (r as PromiseFulfilledResult<T>).value);
  dropFailed(failed, options, what);
  return undefined;
}

/**
 * One deadline for a round of calls to members: `--worker-timeout` after the round began, joined
 * with the run's own signal. Absent timeout (0) leaves only the run's signal.
 */
export interface Deadline {
  readonly signal: AbortSignal | undefined;
  /**
   * Calls `call` with the round's signal and turns the deadline's `TimeoutError` into a TIMEOUT
   * that names the worker and `--worker-timeout`: `what` completes "Worker w did not ...".
   */
  call<T>(
    worker: TrainingWorker,
    what: string,
    call: (signal: AbortSignal | undefined) => Promise<T>,
  ): Promise<T>;
}

/** Starts a {@link Deadline} of `timeoutMs` (0: none) under the run's `signal`. */
export function startDeadline(timeoutMs: number, signal: AbortSignal | undefined): Deadline {
  const deadline = timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined;
  const joined = deadline && signal ? AbortSignal.any([signal, deadline]) : (deadline ?? signal);
  return {
    signal: joined,
    async call(worker, what, call) {
      // Awaited inside an async function: a worker that throws instead of rejecting fails only
      // its own call.
      try {
        return await call(joined);
      } catch (error) {
        if (deadline?.aborted && error === deadline.reason && !signal?.aborted) {
          throw new ShardlineError(
            'TIMEOUT',
            `Worker ${worker.name} did not ${what} within ${timeoutMs / 1000} s (--worker-timeout).`,
            { cause: error },
          );
        }
        throw error;
      }
    },
  };
}

/**
 * Rank `rank`'s slice of a test set of `total` images split among `worldSize` members:
 * contiguous, sizes differing by at most one, with its class counts when the labels are known.
 */
export function evaluationSlice(
  total: number,
  rank: number,
  worldSize: number,
  labels: Uint8Array | undefined,
  numClasses: number,
): EvalAssignment {
  const start = Math.floor((total * rank) / worldSize);
  const end = Math.floor((total * (rank + 1)) / worldSize);
  const counts = labels && classCounts(labels, start, end, numClasses);
  return { start, end, ...(counts ? { classCounts: counts } : {}) };
}
