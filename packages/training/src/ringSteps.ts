/**
 * Ring mode of the synchronous trainer (`exchange: 'ring'`, issue #13). The members all-reduce
 * their gradients among themselves and each keeps a replica (weights and optimizer state); the
 * trainer keeps the control plane: who is in the ring, which share each computes, whether a step
 * is applied, evaluation and checkpoints. No weights travel to or from the trainer per step.
 *
 * A step is applied by all members or by none (two phases): every member stages the averaged
 * gradient and reports its checksum; only when every member answered and every checksum and
 * sample total agree does the trainer commit the step on all of them. Otherwise it aborts the
 * step on those that staged it and retries the same global batch in a new formation (a new ring
 * id, so no message of the failed ring can reach the new one):
 *
 * - a member that failed on its own (crashed, refused its share, missed the deadline) is dropped,
 *   as in star mode;
 * - a member whose all-reduce failed because of another (a ring abort, see `isRingAbort`) is not;
 *   when nobody was dropped, members its neighbours name as `details.suspect` are;
 * - members whose checksum is outside a strict majority are dropped; with no strict majority the
 *   step is retried once, and a second disagreement fails the job (MISMATCH): replicas that
 *   cannot agree must not train on;
 * - more than {@link MAX_BLAMELESS_FAILURES} failed attempts of one step in a row without anyone
 *   to drop fail the job (CONNECTION_LOST) instead of retrying forever.
 *
 * The trainer's own copy (`run.params`, `run.optimizer`) is valid at `stateVersion` and is pulled
 * from a current replica only when something needs it: a member that must be given the state (a
 * joiner, or one that fell behind), a checkpoint, the final result.
 */
import { hasErrorCode, ShardlineError, toShardlineError } from '@shardline/core';
import { shareSize } from '@shardline/datasets';
import { type ClassificationReport, createClassificationAccumulator } from '@shardline/metrics';
import {
  evaluationTopK,
  isRingAbort,
  isRingWorker,
  MISCLASSIFIED_KEPT,
  type ReplicaEvaluation,
  type ReplicaState,
  type RingFormation,
  type RingPeer,
  type RingShareAssignment,
  type RingShareReport,
  type RingTrainingWorker,
  type TrainingWorker,
} from './contract.js';
import { checkShareReport } from './reports.js';
import {
  cancelled,
  dropFailed,
  evaluationSlice,
  type MemberFailure,
  startDeadline,
} from './rounds.js';
import type { Run, RunningSums, StepDone } from './syncTrainer.js';

/**
 * Failed attempts of one step in a row, with nobody to drop, that the trainer retries before it
 * gives up. A ring that breaks this often without a culprit will not heal by itself (a peer
 * endpoint nobody can reach, a network dropping streams), and retrying forever would hang the job.
 */
export const MAX_BLAMELESS_FAILURES = 5;

/** Ring mode's part of a run's state. Internal. */
export interface RingRunState {
  /** The step whose state the trainer's copy (`run.params`, `run.optimizer`) holds. */
  stateVersion: number;
  /** The ring of the latest attempt, reused while its members stay and it does not fail. */
  formation: RingFormation | undefined;
  formationFailed: boolean;
  /** Formations made so far: the next id's number, so ids never repeat within a run. */
  formations: number;
  /**
   * Ids of members whose replica this run gave them (pushed) and kept in step since. A member
   * outside it gets the state before its first step whatever version it claims: a replica left
   * over from another run may hold the same version with other weights.
   */
  synced: Set<string>;
  /** The members of the latest attempt: where checkpoints and the result pull the state from. */
  last: readonly RingTrainingWorker[];
  /** Payload bytes members reported sending in their all-reduces, over the run. */
  ringBytes: number;
  /**
   * Random per run, so that formation ids never repeat across runs either: a worker that
   * outlives its coordinator and rejoins the resumed run still remembers the old run's ring
   * ids, and its peer endpoint refuses a ring id it has seen.
   */
  readonly tag: string;
}

/** The ring state of a run that starts (or resumes) at `step`, its copy valid at that step. */
export function createRingState(step: number): RingRunState {
  return {
    stateVersion: step,
    formation: undefined,
    formationFailed: false,
    formations: 0,
    synced: new Set(),
    last: [],
    ringBytes: 0,
    tag: globalThis.crypto.randomUUID().slice(0, 8),
  };
}

function ringOf(run: Run): RingRunState {
  if (!run.ring) throw new ShardlineError('INTERNAL', 'Ring step called on a star-mode run.');
  return run.ring;
}

/**
 * One ring-mode step: brings every member's replica to the step, has them reduce their shares,
 * and commits the step when they all agree; retries (see the module comment) until it is
 * applied. Undefined when a graceful stop came first.
 */
export async function ringStep(
  run: Run,
  epoch: number,
  stepInEpoch: number,
  running: RunningSums,
): Promise<StepDone | undefined> {
  const { options } = run;
  const ring = ringOf(run);
  let blameless = 0;
  let disagreements = 0;
  for (;;) {
    const listed = await nextMembers(run);
    if (!listed) return undefined;
    const members = asRingMembers(listed);
    ring.last = members;
    if (await syncReplicas(run, members, `step ${run.step}`)) continue;
    const formation = formationFor(ring, members);
    const started = performance.now();
    const { settled, shares } = await reduceShares(run, members, {
      epoch,
      step: run.step,
      stepInEpoch,
      worldSize: members.length,
      ring: formation,
    });
    const answered = performance.now();
    for (const r of settled) if (r.status === 'fulfilled') ring.ringBytes += r.value.sentBytes;
    const verdict = judge(run, epoch, members, settled, shares);
    if (verdict.kind === 'agreed') {
      commitStep(run, members, verdict, running);
      return {
        samples: verdict.total,
        members: members.length,
        gather: (answered - started) / 1000,
        compute: Math.max(...verdict.reports.map((r) => r.computeSeconds)),
        exchange: Math.max(...verdict.reports.map((r) => r.exchangeSeconds)),
        optimizer: (performance.now() - answered) / 1000,
      };
    }
    // Nothing of this attempt may be applied: whoever staged it drops it.
    ring.formationFailed = true;
    abortStaged(run, members, settled, verdict.reason);
    if (options.signal?.aborted) throw cancelled(verdict.reason);
    if (verdict.kind === 'fatal') throw verdict.error;
    if (verdict.blamed.length > 0) {
      await keepStateBeforeDropping(run, members, verdict.blamed);
      dropMembers(run, verdict.blamed, `step ${run.step}`);
      blameless = 0;
    } else {
      if (verdict.kind === 'split' && ++disagreements >= 2) throw replicasDisagree(run, verdict);
      if (++blameless > MAX_BLAMELESS_FAILURES) throw ringKeepsFailing(run, blameless, verdict);
      options.logger.warn('ring step failed without a member to blame; retrying it', {
        step: run.step,
        ring: formation.id,
        reason: verdict.reason,
      });
    }
    // Stopping anyway: abandon a failed step rather than retry it.
    if (options.shouldStop?.()) return undefined;
    // Let timers, signals and stream events run before the retry (a drop may still be landing).
    await new Promise((r) => setImmediate(r));
  }
}

/** The next step's members; undefined when a graceful stop ended the wait for them. */
async function nextMembers(run: Run): Promise<readonly TrainingWorker[] | undefined> {
  const { options } = run;
  try {
    return await options.membership.members(run.waitSignal);
  } catch (error) {
    if (!options.stopSignal?.aborted || options.signal?.aborted) throw error;
    return undefined;
  }
}

/** The members as ring members; a worker that cannot be one fails the job (a setup error). */
function asRingMembers(members: readonly TrainingWorker[]): RingTrainingWorker[] {
  if (members.length === 0) {
    // Membership.members waits while there are too few; an empty answer would make an empty ring.
    throw new ShardlineError(
      'INTERNAL',
      'The membership answered with no workers; expected at least one (it waits for workers instead).',
    );
  }
  return members.map((worker) => {
    if (!isRingWorker(worker)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Worker ${worker.name} (${worker.id}) cannot train in ring mode: expected a ring member ` +
          '(a replica of its own and an all-reduce with its peers), found a star-only worker. ' +
          'Run with --exchange star, or give every worker ring support.',
        { details: { worker: worker.id } },
      );
    }
    return worker;
  });
}

function isCurrent(ring: RingRunState, worker: RingTrainingWorker, step: number): boolean {
  return ring.synced.has(worker.id) && worker.replicaVersion === step;
}

/** Drops failed members (see dropFailed) and forgets their replicas. */
function dropMembers(run: Run, failed: readonly MemberFailure[], what: string): void {
  const ring = ringOf(run);
  dropFailed(failed, run.options, what);
  const gone = new Set(failed.map((f) => f.worker));
  for (const worker of gone) ring.synced.delete(worker.id);
  ring.last = ring.last.filter((w) => !gone.has(w));
}

/**
 * When `blamed` holds every current member and the trainer's copy is older than `run.step`,
 * pulls the state from one of them before they go (any that still answers). A deadline in a ring
 * times out every member waiting on the one that stalled, and neither the trainer nor a remote
 * proxy can tell them apart; without this, dropping them all would lose the only copies of the
 * weights. Their replicas are at `run.step`, which every member agreed on when it was committed.
 * A member that does not answer is dropped anyway, so a failed pull is only logged.
 */
async function keepStateBeforeDropping(
  run: Run,
  members: readonly RingTrainingWorker[],
  blamed: readonly MemberFailure[],
): Promise<void> {
  const ring = ringOf(run);
  if (ring.stateVersion === run.step || run.options.signal?.aborted) return;
  const current = members.filter((w) => isCurrent(ring, w, run.step));
  const leaving = new Set(blamed.map((f) => f.worker));
  if (current.length === 0 || current.some((w) => !leaving.has(w))) return;
  for (const worker of current) {
    try {
      const state = await startDeadline(run.options.workerTimeoutMs ?? 0, run.options.signal).call(
        worker,
        `hand over its replica state of step ${run.step}`,
        (signal) => worker.pullState(signal),
      );
      adoptState(run, worker, state);
      return;
    } catch (error) {
      run.options.logger.warn('could not keep the state of a ring member about to be dropped', {
        worker: worker.name,
        step: run.step,
        reason: toShardlineError(error).message,
      });
    }
  }
}

/**
 * Gives every member that is not current the state of step `run.step`, first pulling it into the
 * trainer's copy when that copy is older. True when a member was dropped on the way: the caller
 * asks the membership again.
 */
async function syncReplicas(
  run: Run,
  members: readonly RingTrainingWorker[],
  what: string,
): Promise<boolean> {
  const ring = ringOf(run);
  const stale = members.filter((w) => !isCurrent(ring, w, run.step));
  if (stale.length === 0) return false;
  if (ring.stateVersion !== run.step && (await pullState(run, members, what)) > 0) return true;
  const state: ReplicaState = {
    version: run.step,
    params: run.params,
    optimizer: run.optimizer.getState(),
  };
  const deadline = startDeadline(run.options.workerTimeoutMs ?? 0, run.options.signal);
  const settled = await Promise.allSettled(
    stale.map((worker) =>
      deadline.call(worker, `take the replica state of step ${run.step}`, (signal) =>
        worker.pushState(state, signal),
      ),
    ),
  );
  const failed: MemberFailure[] = [];
  settled.forEach((r, i) => {
    const worker = stale[i]!;
    if (r.status === 'fulfilled') ring.synced.add(worker.id);
    else failed.push({ worker, error: r.reason });
  });
  if (failed.length === 0) return false;
  dropMembers(run, failed, what);
  return true;
}

/**
 * Brings the trainer's copy to `run.step` when it is older, from one of the current members of
 * the latest attempt: for a checkpoint, or the final result, which must be exact.
 */
export async function ensureTrainerState(run: Run, what: string): Promise<void> {
  const ring = ringOf(run);
  if (ring.stateVersion === run.step) return;
  await pullState(run, ring.last, what);
}

/**
 * Copies the state of step `run.step` from the first current member among `candidates` that
 * hands it over, dropping each that fails on the way. Returns the number dropped; throws
 * CONNECTION_LOST when no current member is left, since then nobody holds the weights.
 */
async function pullState(
  run: Run,
  candidates: readonly RingTrainingWorker[],
  what: string,
): Promise<number> {
  const ring = ringOf(run);
  const current = candidates.filter((w) => isCurrent(ring, w, run.step));
  let dropped = 0;
  for (const worker of current) {
    const deadline = startDeadline(run.options.workerTimeoutMs ?? 0, run.options.signal);
    try {
      const state = await deadline.call(
        worker,
        `hand over its replica state of step ${run.step}`,
        (signal) => worker.pullState(signal),
      );
      adoptState(run, worker, state);
      return dropped;
    } catch (error) {
      dropMembers(run, [{ worker, error }], what);
      dropped++;
    }
  }
  throw new ShardlineError(
    'CONNECTION_LOST',
    `Every worker holding the weights of step ${run.step} left at once` +
      (current.length > 0 ? ` (${current.map((w) => w.name).join(', ')})` : '') +
      `, and this process's own copy is of step ${ring.stateVersion}: nobody holds the state ` +
      `needed for ${what}, so training cannot go on. Resume from the last checkpoint with --resume.`,
    { details: { step: run.step, stateVersion: ring.stateVersion } },
  );
}

/** Checks a pulled state and makes it the trainer's copy of step `run.step`. */
function adoptState(run: Run, worker: RingTrainingWorker, state: ReplicaState): void {
  const ring = ringOf(run);
  if (state.version !== run.step || state.params.length !== run.params.length) {
    throw new ShardlineError(
      'MISMATCH',
      `Worker ${worker.name} handed over a replica state of step ${state.version} with ` +
        `${state.params.length} weights, expected step ${run.step} with ${run.params.length}.`,
    );
  }
  // setState checks kind and sizes before it copies anything but the first slots; should it
  // throw, the copy stays marked as of stateVersion, and nothing reads it before a good pull.
  run.optimizer.setState(state.optimizer);
  run.params.set(state.params);
  ring.stateVersion = run.step;
}

/** The previous formation while its members (and their order) stay and it did not fail. */
function formationFor(ring: RingRunState, members: readonly RingTrainingWorker[]): RingFormation {
  const peers: RingPeer[] = members.map((w) => ({ workerId: w.id, peerAddress: w.peerAddress }));
  const previous = ring.formation;
  const same =
    previous !== undefined &&
    !ring.formationFailed &&
    previous.members.length === peers.length &&
    previous.members.every(
      (p, i) => p.workerId === peers[i]!.workerId && p.peerAddress === peers[i]!.peerAddress,
    );
  if (same) return previous;
  ring.formations++;
  ring.formation = { id: `ring-${ring.tag}-${ring.formations}`, members: peers };
  ring.formationFailed = false;
  return ring.formation;
}

/**
 * How long after a member's failure the others still pending are told to abort the step: long
 * enough for the failure's own reports to arrive from every member it reached (milliseconds on
 * any network), short against a step's deadline.
 */
const RING_ABORT_GRACE_MS = 1_000;

/**
 * Asks every member to reduce its share, all under one deadline (`--worker-timeout` after the
 * step began). Once one member fails the step cannot be committed, so the others still pending
 * are told to abort (after a short grace) rather than left waiting on a ring that will not
 * complete.
 */
async function reduceShares(
  run: Run,
  members: readonly RingTrainingWorker[],
  assignment: Omit<RingShareAssignment, 'rank' | 'samples'>,
): Promise<{
  settled: PromiseSettledResult<RingShareReport>[];
  shares: RingShareAssignment[];
}> {
  const { signal, trainCount, config } = run.options;
  const deadline = startDeadline(run.options.workerTimeoutMs ?? 0, signal);
  const shares = members.map((_, rank) => ({
    ...assignment,
    rank,
    samples: shareSize(trainCount, config.batchSize, assignment.stepInEpoch, rank, members.length),
  }));
  const pending = new Set(members);
  let stopping = false;
  let graceTimer: ReturnType<typeof setTimeout> | undefined;
  const settled = await Promise.allSettled(
    members.map(async (worker, rank) => {
      try {
        return await deadline.call(
          worker,
          `finish its share and all-reduce of step ${assignment.step}`,
          (stepSignal) => worker.reduceShare(shares[rank]!, stepSignal),
        );
      } catch (error) {
        pending.delete(worker);
        if (!stopping) {
          stopping = true;
          const reason = `worker ${worker.name} failed: ${toShardlineError(error).message}`;
          // Not at once: the failure is travelling round the ring, and the member where it
          // began (the one that refused a rogue neighbour's chunk, naming it) may report a
          // moment after the first one it reached. Those reports settle within milliseconds;
          // only members stuck waiting on a silent neighbour need the abort.
          graceTimer = setTimeout(() => {
            for (const other of pending) abortQuietly(run, other, assignment.step, reason);
          }, RING_ABORT_GRACE_MS);
        }
        throw error;
      } finally {
        pending.delete(worker);
      }
    }),
  );
  clearTimeout(graceTimer);
  return { settled, shares };
}

function abortQuietly(run: Run, worker: RingTrainingWorker, step: number, reason: string): void {
  try {
    worker.abortStep(step, reason);
  } catch (error) {
    // It is dropped or retried anyway; its replica cannot commit what it never gets a commit for.
    run.options.logger.warn('a ring member failed to abort a step', {
      worker: worker.name,
      step,
      reason: toShardlineError(error).message,
    });
  }
}

/** Aborts the step on every member that staged it (fulfilled its reduceShare). */
function abortStaged(
  run: Run,
  members: readonly RingTrainingWorker[],
  settled: readonly PromiseSettledResult<RingShareReport>[],
  reason: string,
): void {
  settled.forEach((r, i) => {
    if (r.status === 'fulfilled') abortQuietly(run, members[i]!, run.step, reason);
  });
}

/** What an attempt's answers mean. */
type Verdict =
  | {
      kind: 'agreed';
      reports: RingShareReport[];
      checksum: string;
      total: number;
      stepLoss: number;
      correct: number;
    }
  /** Not applied; `blamed` are dropped before the retry (none: a blameless failure). */
  | { kind: 'failed'; reason: string; blamed: MemberFailure[] }
  /** Every member answered, but no strict majority agrees on the average. */
  | { kind: 'split'; reason: string; blamed: MemberFailure[] }
  /** The job cannot go on. */
  | { kind: 'fatal'; reason: string; error: unknown };

/** Judges one attempt's answers; pure but for reading the run (see the module comment). */
function judge(
  run: Run,
  epoch: number,
  members: readonly RingTrainingWorker[],
  settled: readonly PromiseSettledResult<RingShareReport>[],
  shares: readonly RingShareAssignment[],
): Verdict {
  const step = run.step;
  const blamed: MemberFailure[] = [];
  const numeric: MemberFailure[] = [];
  const aborts: MemberFailure[] = [];
  const reports: RingShareReport[] = [];
  let stepLoss = 0;
  let correct = 0;
  settled.forEach((r, rank) => {
    const worker = members[rank]!;
    if (r.status === 'rejected') {
      const failure = { worker, error: r.reason as unknown };
      if (isRingAbort(r.reason)) aborts.push(failure);
      else {
        if (hasErrorCode(r.reason, 'NUMERIC')) numeric.push(failure);
        blamed.push(failure);
      }
      return;
    }
    const report = r.value;
    stepLoss += report.loss * report.sampleCount;
    correct += report.correct;
    try {
      checkShareReport(report, shares[rank]!, worker.name);
      reports.push(report);
    } catch (error) {
      blamed.push({ worker, error });
    }
  });
  const { config } = run.options;
  // As star mode does (and before blaming anyone for it): a diverged loss fails the job. So do
  // non-finite gradients on most members, which every one of them refuses to all-reduce.
  if (!Number.isFinite(stepLoss) || numeric.length * 2 > members.length) {
    const what = Number.isFinite(stepLoss)
      ? `the gradients became non-finite on ${numeric.length} of ${members.length} members`
      : `the loss became ${stepLoss}`;
    const reason = `${what} at epoch ${epoch + 1}, step ${step}`;
    return {
      kind: 'fatal',
      reason,
      error: new ShardlineError(
        'NUMERIC',
        `${capitalise(reason)}: training diverged. Lower --learning-rate (now ${config.learningRate}) and run again.`,
        numeric.length > 0 ? { cause: numeric[0]!.error } : {},
      ),
    };
  }
  excuseWaiters(run, blamed, aborts);
  if (blamed.length > 0) {
    return { kind: 'failed', reason: describeFailures(blamed), blamed };
  }
  if (aborts.length > 0) {
    return {
      kind: 'failed',
      reason: describeFailures(aborts),
      blamed: suspectsNamed(members, aborts),
    };
  }
  return agreement(run, members, reports, shares, stepLoss, correct);
}

/**
 * At a deadline every member of a stalled ring times out: the one that stopped (frozen, or a
 * rogue that sends nothing more) and all those waiting on it. Those waiting keep sending
 * heartbeats, so a timed-out member heard from within the last half of the deadline is moved
 * from `blamed` to `aborts` (retried, not dropped) as long as someone quiet remains to blame.
 * When all of them were heard from, nobody is singled out: the step is retried, and a ring
 * that keeps missing its deadline fails the job (ringKeepsFailing) rather than dropping
 * every member.
 */
function excuseWaiters(run: Run, blamed: MemberFailure[], aborts: MemberFailure[]): void {
  const timeoutMs = run.options.workerTimeoutMs ?? 0;
  if (timeoutMs <= 0) return;
  const now = Date.now();
  const waited = (f: MemberFailure) =>
    hasErrorCode(f.error, 'TIMEOUT') &&
    (f.worker as RingTrainingWorker).lastSeenMs !== undefined &&
    now - (f.worker as RingTrainingWorker).lastSeenMs! < timeoutMs / 2;
  const excused = blamed.filter(waited);
  if (excused.length === 0) return;
  const quiet = blamed.filter((f) => !waited(f));
  if (quiet.length === 0) {
    // Everyone was alive and waiting: a ring too slow for the deadline, or a member that talks
    // but does not pass data on. Retry without dropping anyone (bounded by ringKeepsFailing).
    aborts.push(...excused);
    blamed.length = 0;
    return;
  }
  aborts.push(...excused);
  blamed.splice(0, blamed.length, ...quiet);
}

/** Every member answered: commit when all agree, else name the minority or report a split. */
function agreement(
  run: Run,
  members: readonly RingTrainingWorker[],
  reports: readonly RingShareReport[],
  shares: readonly RingShareAssignment[],
  stepLoss: number,
  correct: number,
): Verdict {
  const step = run.step;
  const groups = groupBy(reports, (r) => `${r.checksum} over ${r.totalSamples} samples`);
  if (groups.size === 1) {
    const total = reports[0]!.totalSamples;
    const expected = shares.reduce((sum, s) => sum + s.samples, 0);
    if (total !== expected) {
      const reason = `every member averaged step ${step} over ${total} samples, but its shares hold ${expected}`;
      return {
        kind: 'fatal',
        reason,
        error: new ShardlineError(
          'MISMATCH',
          `Ring members agree that ${reason.replace('every member ', '')}: a member contributed a ` +
            'sample count it did not report. The step was not applied.',
        ),
      };
    }
    return {
      kind: 'agreed',
      reports: [...reports],
      checksum: reports[0]!.checksum,
      total,
      stepLoss,
      correct,
    };
  }
  const summary = [...groups]
    .map(([key, ranks]) => `${key} (${ranks.map((i) => members[i]!.name).join(', ')})`)
    .join('; ');
  const reason = `the members' averaged gradients of step ${step} differ: ${summary}`;
  const majority = [...groups].find(([, ranks]) => ranks.length * 2 > members.length);
  if (!majority) return { kind: 'split', reason, blamed: [] };
  const [agreed, ranks] = majority;
  const blamed = members.flatMap((worker, rank) =>
    ranks.includes(rank)
      ? []
      : [
          {
            worker,
            error: new ShardlineError(
              'MISMATCH',
              `Worker ${worker.name} averaged step ${step} to ${groupKeyOf(reports[rank]!)}, while ` +
                `${ranks.length} of ${members.length} members agree on ${agreed}. Its replica ` +
                'would diverge, so it leaves the ring.',
            ),
          },
        ],
  );
  return { kind: 'failed', reason, blamed };
}

function groupKeyOf(r: RingShareReport): string {
  return `${r.checksum} over ${r.totalSamples} samples`;
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, number[]> {
  const groups = new Map<string, number[]>();
  items.forEach((item, i) => {
    const k = key(item);
    groups.set(k, [...(groups.get(k) ?? []), i]);
  });
  return groups;
}

/**
 * The members that ring-aborted members name as `details.suspect` (say, the neighbour whose
 * chunk they refused), as failures to drop: used only when nobody failed on their own.
 */
function suspectsNamed(
  members: readonly RingTrainingWorker[],
  aborts: readonly MemberFailure[],
): MemberFailure[] {
  const accusers = new Map<RingTrainingWorker, MemberFailure[]>();
  for (const failure of aborts) {
    const suspect = toShardlineError(failure.error).details.suspect;
    const worker = members.find((w) => w.id === suspect);
    if (worker) accusers.set(worker, [...(accusers.get(worker) ?? []), failure]);
  }
  return [...accusers].map(([worker, by]) => ({
    worker,
    error: new ShardlineError(
      'CONNECTION_LOST',
      `Worker ${worker.name} was named by ${by.map((f) => f.worker.name).join(', ')} as the cause ` +
        `of a failed all-reduce: ${toShardlineError(by[0]!.error).message}`,
      { cause: by[0]!.error },
    ),
  }));
}

function describeFailures(failures: readonly MemberFailure[]): string {
  return failures.map((f) => `${f.worker.name}: ${toShardlineError(f.error).message}`).join('; ');
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/**
 * Commits an agreed step on every member, then moves the run on. A member whose commit throws
 * did not apply it (its replica stays behind); it leaves the synced set, so it gets the state
 * again before its next step instead of training on weights the others left behind.
 */
function commitStep(
  run: Run,
  members: readonly RingTrainingWorker[],
  verdict: Extract<Verdict, { kind: 'agreed' }>,
  running: RunningSums,
): void {
  const ring = ringOf(run);
  const learningRate = run.learningRate(run.step);
  for (const worker of members) {
    try {
      worker.commit(run.step, learningRate, verdict.checksum);
    } catch (error) {
      ring.synced.delete(worker.id);
      run.options.logger.warn('a ring member could not commit a step; it gets the state again', {
        worker: worker.name,
        step: run.step,
        reason: toShardlineError(error).message,
      });
    }
  }
  run.step++;
  run.weights.version = run.step;
  running.lossSum += verdict.stepLoss;
  running.correct += verdict.correct;
  running.seen += verdict.total;
}

function replicasDisagree(run: Run, verdict: Extract<Verdict, { kind: 'split' }>): ShardlineError {
  return new ShardlineError(
    'MISMATCH',
    `Ring replicas disagree twice on step ${run.step} with no majority among them (${verdict.reason}). ` +
      'No step was applied; training cannot tell which replica is right. Resume from the last ' +
      'checkpoint with --resume, or run with --exchange star.',
    { details: { step: run.step } },
  );
}

function ringKeepsFailing(run: Run, attempts: number, verdict: { reason: string }): ShardlineError {
  return new ShardlineError(
    'CONNECTION_LOST',
    `Step ${run.step} failed ${attempts} times in a row in ring mode with no member to blame ` +
      `(last: ${verdict.reason}). The ring keeps breaking: check that the workers can reach each ` +
      "other's peer addresses (--peer-advertise) and the network between them, raise " +
      '--worker-timeout when whole steps take longer than it, or run with --exchange star.',
    { details: { step: run.step, attempts } },
  );
}

/**
 * Ring mode's evaluation: brings every replica to `run.step`, splits the test set among the
 * members, merges their metrics, and checks that every replica evaluated the same weights.
 * Returns the agreed weights checksum with the report.
 */
export async function evaluateRing(
  run: Run,
): Promise<{ evaluation: ClassificationReport; replicaChecksum: string }> {
  const { options } = run;
  const ring = ringOf(run);
  for (;;) {
    const members = asRingMembers(await options.membership.members(options.signal));
    ring.last = members;
    if (await syncReplicas(run, members, 'evaluation')) continue;
    const settled = await Promise.allSettled(
      members.map(async (worker, rank) =>
        worker.evaluateReplica(
          evaluationSlice(
            options.testCount,
            rank,
            members.length,
            options.testLabels,
            options.classNames.length,
          ),
          run.step,
          options.signal,
        ),
      ),
    );
    const failed = settled.flatMap((r, i) =>
      r.status === 'rejected' ? [{ worker: members[i]!, error: r.reason as unknown }] : [],
    );
    if (failed.length > 0) {
      dropMembers(run, failed, 'evaluation');
      continue;
    }
    const answers = settled.map((r) => (r as PromiseFulfilledResult<ReplicaEvaluation>).value);
    const groups = groupBy(answers, (a) => a.weightsChecksum);
    if (groups.size === 1) {
      const accumulator = createClassificationAccumulator({
        numClasses: options.classNames.length,
        classNames: options.classNames,
        topK: evaluationTopK(options.classNames.length),
        keepMisclassified: MISCLASSIFIED_KEPT,
      });
      for (const answer of answers) accumulator.merge(answer.state);
      return { evaluation: accumulator.result(), replicaChecksum: answers[0]!.weightsChecksum };
    }
    const summary = [...groups]
      .map(([sum, ranks]) => `${sum} (${ranks.map((i) => members[i]!.name).join(', ')})`)
      .join('; ');
    const majority = [...groups].find(([, ranks]) => ranks.length * 2 > members.length);
    if (!majority) {
      throw new ShardlineError(
        'MISMATCH',
        `Ring replicas disagree on the weights of step ${run.step} with no majority among them: ${summary}. ` +
          'Training cannot tell which replica is right. Resume from the last checkpoint with --resume.',
        { details: { step: run.step } },
      );
    }
    const [agreed, ranks] = majority;
    dropMembers(
      run,
      members.flatMap((worker, rank) =>
        ranks.includes(rank)
          ? []
          : [
              {
                worker,
                error: new ShardlineError(
                  'MISMATCH',
                  `Worker ${worker.name}'s replica of step ${run.step} has weights checksum ` +
                    `${answers[rank]!.weightsChecksum}, while ${ranks.length} of ${members.length} ` +
                    `members agree on ${agreed}. Its replica diverged, so it leaves the ring.`,
                ),
              },
            ],
      ),
      'evaluation',
    );
  }
}
