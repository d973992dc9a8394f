/**
 * The trainer's ring mode (exchange: 'ring') with fake ring members: each keeps a real replica
 * and all-reduces a constant gradient through a real in-memory ring, but has no model or data,
 * and can be told to crash, ring-abort, name a suspect or report a wrong checksum at any step.
 * A regression in the two-phase commit, the retries or the state transfers shows in well under
 * a second. tfjs-backed runs are in ringTrainer.test.ts.
 */
import {
  createLogger,
  hasErrorCode,
  type LogFields,
  type ParamLayout,
  ShardlineError,
} from '@shardline/core';
import { type ClassificationState, createClassificationAccumulator } from '@shardline/metrics';
import { describe, expect, it } from 'vitest';
import {
  type EvalAssignment,
  fixedMembership,
  type Membership,
  type ReplicaEvaluation,
  type ReplicaState,
  type RingShareAssignment,
  type RingShareReport,
  type RingTrainingWorker,
  ringAbortError,
  type ShareResult,
  type TrainingWorker,
} from '../src/contract.js';
import type { EpochMetrics } from '../src/events.js';
import { createMemoryRingNetwork, type MemoryRingNetwork } from '../src/ring/localRingWorker.js';
import { float32Checksum } from '../src/ring/payload.js';
import { createReplica } from '../src/ring/replica.js';
import { ringAllReduce } from '../src/ring/ringAllReduce.js';
import {
  runSynchronousTraining,
  type SyncTrainingOptions,
  type TrainerCheckpoint,
} from '../src/syncTrainer.js';

const SIZE = 3;
const CLASSES = ['a', 'b', 'c', 'd'];
const layout: ParamLayout = { slots: [], size: SIZE, fingerprint: '0000000000000000' };

/**
 * How a fake member answers `reduceShare` of one attempt: `ok`; `crash` (its own failure);
 * `abort` (a ring abort, blameless); `{ suspect }` (a ring abort naming a worker id);
 * `{ checksum }` (completes, but reports this checksum, as a diverged replica would); `hang`
 * (a stalled process: it never joins the ring, and settles only when its signal aborts).
 */
type Behaviour = 'ok' | 'crash' | 'abort' | 'hang' | { suspect: string } | { checksum: string };

interface FakeRingWorker extends RingTrainingWorker {
  /** Every call the trainer made, in order: `reduce 1 ring-2`, `commit 1`, `abort 1`, `push 0`, `pull 2`, `evaluate 4`. */
  readonly calls: string[];
  /** The replica's weights now. */
  readonly params: Float32Array;
  /** The checksum evaluateReplica reports instead of the real one, when set. */
  evaluationChecksum?: string;
  /** Fails pullState when true. */
  pullFails?: boolean;
}

/**
 * A ring member whose gradient is `value` in every component and whose answer to attempt
 * `attempt` (0-based, per step) of step `step` is `behaviour(step, attempt)`.
 */
function fakeRingWorker(
  id: string,
  value: number,
  network: MemoryRingNetwork,
  behaviour: (step: number, attempt: number) => Behaviour = () => 'ok',
): FakeRingWorker {
  const calls: string[] = [];
  const replica = createReplica({
    size: SIZE,
    optimizer: { kind: 'sgd', momentum: 0, weightDecay: 0 },
    label: id,
  });
  const attempts = new Map<number, number>();
  let hung: (() => void) | undefined;
  const worker: FakeRingWorker = {
    id,
    name: id,
    calls,
    peerAddress: `fake:${id}`,
    get params() {
      return replica.params;
    },
    get replicaVersion() {
      return replica.version;
    },
    computeShare(): Promise<ShareResult> {
      return Promise.reject(new Error(`${id} is a ring member`));
    },
    async evaluate(slice: EvalAssignment): Promise<ClassificationState> {
      return perfectEvaluation(slice);
    },
    async evaluateReplica(slice: EvalAssignment, version: number): Promise<ReplicaEvaluation> {
      calls.push(`evaluate ${version}`);
      if (version !== replica.version) throw new Error(`${id} is at ${replica.version}`);
      return {
        state: perfectEvaluation(slice),
        weightsChecksum: worker.evaluationChecksum ?? replica.checksum(),
      };
    },
    async pushState(state: ReplicaState) {
      calls.push(`push ${state.version}`);
      replica.load(state);
    },
    async pullState() {
      calls.push(`pull ${replica.version}`);
      if (worker.pullFails) throw new Error(`${id} cannot hand over its state`);
      return replica.state();
    },
    async reduceShare(assignment: RingShareAssignment, signal?: AbortSignal) {
      const { step, rank, worldSize, ring } = assignment;
      // The run's random tag left out, so the calls read the same on every run.
      calls.push(`reduce ${step} ${ring.id.replace(/^ring-[0-9a-f]{8}-/, 'ring-')}`);
      const attempt = attempts.get(step) ?? 0;
      attempts.set(step, attempt + 1);
      const mode = behaviour(step, attempt);
      if (mode === 'hang') {
        return new Promise<RingShareReport>((_, reject) => {
          signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
          // As a remote member's proxy does: an AbortStep settles the wait it calls off.
          hung = () => reject(ringAbortError(`${id}: step ${step} was aborted`));
        });
      }
      const link = network.link(ring.id, rank, worldSize);
      if (mode === 'crash' || mode === 'abort' || (typeof mode === 'object' && 'suspect' in mode)) {
        const error =
          mode === 'crash' ? new Error(`${id} crashed`) : ringAbortError(`${id}: the ring broke`);
        if (typeof mode === 'object' && error instanceof ShardlineError) {
          error.details.suspect = mode.suspect;
        }
        link.abort(error);
        throw error;
      }
      if (replica.version !== step) throw new Error(`${id} holds ${replica.version}, not ${step}`);
      const result = await ringAllReduce({
        rank,
        worldSize,
        link,
        gradient: new Float32Array(SIZE).fill(value),
        sampleCount: assignment.samples,
        step,
        maxChunkBytes: 4,
        ...(signal ? { signal } : {}),
      }).catch((error: unknown) => {
        // As a real member does: a ring that broke under it is not its fault.
        throw hasErrorCode(error, 'CONNECTION_LOST')
          ? ringAbortError(`${id}: ${error.message}`, error)
          : error;
      });
      replica.stage(step, result.gradient, result.checksum);
      return {
        sampleCount: assignment.samples,
        loss: 0.5,
        correct: assignment.samples,
        computeSeconds: 0.001,
        totalSamples: result.samples,
        checksum: typeof mode === 'object' ? mode.checksum : result.checksum,
        exchangeSeconds: 0.002,
        sentBytes: result.sentBytes,
      } satisfies RingShareReport;
    },
    commit(step, learningRate, checksum) {
      calls.push(`commit ${step}`);
      replica.commit(step, learningRate, checksum);
    },
    abortStep(step) {
      calls.push(`abort ${step}`);
      if (replica.staged?.step === step) replica.discard();
      hung?.();
      hung = undefined;
    },
  };
  return worker;
}

/** The state of an evaluation that got every image of the slice right. */
function perfectEvaluation(slice: EvalAssignment): ClassificationState {
  const accumulator = createClassificationAccumulator({
    numClasses: CLASSES.length,
    classNames: CLASSES,
    topK: [1, 3],
  });
  const n = slice.end - slice.start;
  if (n > 0) {
    const labels = Uint8Array.from({ length: n }, (_, i) => (slice.start + i) % CLASSES.length);
    const probabilities = new Float32Array(n * CLASSES.length);
    for (let i = 0; i < n; i++) probabilities[i * CLASSES.length + labels[i]!] = 1;
    accumulator.update({ probabilities, labels });
  }
  return accumulator.snapshot();
}

/**
 * A membership whose members can be dropped, join and leave, recording every drop. It answers at
 * most 100 times, so a retry loop that never converges fails the test instead of spinning.
 */
function droppable(
  workers: TrainingWorker[],
): Membership & { dropped: string[]; list: TrainingWorker[] } {
  const list = [...workers];
  const dropped: string[] = [];
  let calls = 0;
  return {
    dropped,
    list,
    async members() {
      if (++calls > 100)
        throw new Error('members() asked 100 times: the trainer retries without end');
      return [...list];
    },
    drop(worker, reason) {
      const i = list.indexOf(worker);
      if (i >= 0) list.splice(i, 1);
      dropped.push(`${worker.name}: ${reason}`);
    },
  };
}

/** Trains 2 epochs of 2 steps (16 images, global batch 8) with plain SGD at learning rate 1, in ring mode. */
async function train(membership: Membership, over: Partial<SyncTrainingOptions> = {}) {
  const warnings: LogFields[] = [];
  const epochs: EpochMetrics[] = [];
  const result = await runSynchronousTraining({
    config: {
      epochs: 2,
      batchSize: 8,
      learningRate: 1,
      optimizer: 'sgd',
      momentum: 0,
      weightDecay: 0,
      schedule: 'constant',
      warmupEpochs: 0,
    },
    layout,
    params: new Float32Array(SIZE),
    trainCount: 16,
    testCount: 12,
    classNames: CLASSES,
    membership,
    exchange: 'ring',
    reporter: { progress() {}, epochEnd: (m) => epochs.push(m) },
    logger: createLogger({
      level: 'warn',
      format: 'json',
      sink: { write: (line) => warnings.push(JSON.parse(line) as LogFields) },
    }),
    ...over,
  });
  return { result, warnings, epochs };
}

/** `worker` with a `lastSeenMs` (when it last sent anything), as a remote member has one. */
function talking(worker: FakeRingWorker, lastSeenMs: () => number): FakeRingWorker {
  Object.defineProperty(worker, 'lastSeenMs', { get: lastSeenMs });
  return worker;
}

/** The calls of `worker` about step `step` (reduce, commit, abort), in order. */
function stepCalls(worker: FakeRingWorker, step: number): string[] {
  return worker.calls.filter(
    (c) => /^(reduce|commit|abort) /.test(c) && c.split(' ')[1] === `${step}`,
  );
}

describe('runSynchronousTraining in ring mode, fault paths', { timeout: 10_000 }, () => {
  it('commits every step on every member, keeps one formation, and agrees with star mode', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network);
    const { result, epochs } = await train(fixedMembership([a, b]));
    expect(result.completed).toBe(true);
    expect(result.weights.version).toBe(4);
    // Gradients 1 and 3 on equal shares average to 2: four SGD steps at lr 1 give -8, as star.
    expect(Array.from(result.weights.params)).toEqual([-8, -8, -8]);
    expect(Array.from(a.params)).toEqual([-8, -8, -8]);
    // The initial state is pushed once; the final weights are pulled once, not every step.
    expect(a.calls.filter((c) => c.startsWith('push'))).toEqual(['push 0']);
    expect([...a.calls, ...b.calls].filter((c) => c.startsWith('pull'))).toEqual(['pull 4']);
    expect(a.calls.filter((c) => c.startsWith('reduce'))).toEqual([
      'reduce 0 ring-1',
      'reduce 1 ring-1',
      'reduce 2 ring-1',
      'reduce 3 ring-1',
    ]);
    expect(epochs.map((m) => m.replica_checksum)).toEqual([
      float32Checksum(Float32Array.from([-4, -4, -4])),
      float32Checksum(Float32Array.from([-8, -8, -8])),
    ]);
    // Two members, 12 bytes: each sends 2 (N - 1) / N x 12 bytes per step; 2 steps an epoch.
    expect(epochs.map((m) => m.ring_bytes)).toEqual([48, 48]);
    expect(epochs[0]!.exchange_seconds).toBeCloseTo(0.002, 6);
    expect(epochs[0]!.compute_seconds).toBeCloseTo(0.001, 6);
    expect(result.optimizer.step).toBe(4);
  });

  it('drops a member that fails on its own and retries the step in a new formation, committing nothing of the failed attempt', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network, (step) => (step === 1 ? 'crash' : 'ok'));
    const membership = droppable([a, b]);
    const { result, warnings } = await train(membership);
    expect(membership.dropped).toEqual(['b: b crashed']);
    expect(warnings).toContainEqual(
      expect.objectContaining({ msg: 'dropped a worker; retrying step 1 without it', worker: 'b' }),
    );
    // a's all-reduce of the first attempt broke with b (so it needed no abort); it was not
    // blamed, and step 1 ran again in a fresh ring, alone: nothing was committed before.
    expect(stepCalls(a, 1)).toEqual(['reduce 1 ring-1', 'reduce 1 ring-2', 'commit 1']);
    expect(b.calls.filter((c) => c.startsWith('commit'))).toEqual(['commit 0']);
    // Step 0 averaged 1 and 3 (2); steps 1 to 3 had only a's gradient (1): -2 - 3 = -5, as star.
    expect(Array.from(result.weights.params)).toEqual([-5, -5, -5]);
  });

  it('tells a member stuck on a broken ring to abort, shortly after another failed, with no deadline set', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network, (step) => (step === 1 ? 'crash' : 'ok'));
    const b = fakeRingWorker('b', 3, network, (step, attempt) =>
      step === 1 && attempt === 0 ? 'hang' : 'ok',
    );
    const membership = droppable([a, b]);
    const { result } = await train(membership, { workerTimeoutMs: 0 });
    expect(membership.dropped).toEqual(['a: a crashed']);
    expect(stepCalls(b, 1)).toEqual(['reduce 1 ring-1', 'abort 1', 'reduce 1 ring-2', 'commit 1']);
    // Step 0 averaged 1 and 3 (2); steps 1 to 3 had only b's gradient (3): -2 - 9 = -11.
    expect(Array.from(result.weights.params)).toEqual([-11, -11, -11]);
  });

  it('does not drop members whose all-reduce was aborted through no fault of their own', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network, (step, attempt) =>
      step === 2 && attempt === 0 ? 'abort' : 'ok',
    );
    const membership = droppable([a, b]);
    const { result, warnings } = await train(membership);
    expect(membership.dropped).toEqual([]);
    expect(stepCalls(a, 2)).toEqual(['reduce 2 ring-1', 'reduce 2 ring-2', 'commit 2']);
    expect(stepCalls(b, 2)).toEqual(['reduce 2 ring-1', 'reduce 2 ring-2', 'commit 2']);
    expect(warnings).toContainEqual(
      expect.objectContaining({ msg: 'ring step failed without a member to blame; retrying it' }),
    );
    // The retried step is the same step: the run ends where the undisturbed one does.
    expect(Array.from(result.weights.params)).toEqual([-8, -8, -8]);
    // The new formation is kept for the steps after it.
    expect(a.calls.at(-4)).toBe('reduce 3 ring-2');
  });

  it('drops the member that aborting members name as the suspect, when nobody failed on its own', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network, (step, attempt) =>
      step === 1 && attempt === 0 ? { suspect: 'b' } : 'ok',
    );
    const b = fakeRingWorker('b', 3, network);
    const membership = droppable([a, b]);
    const { result } = await train(membership);
    expect(membership.dropped).toHaveLength(1);
    expect(membership.dropped[0]).toMatch(
      /^b: Worker b was named by a as the cause of a failed all-reduce/,
    );
    expect(Array.from(result.weights.params)).toEqual([-5, -5, -5]);
  });

  it('drops the members whose checksum is outside a strict majority, and commits with the rest', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network);
    const c = fakeRingWorker('c', 2, network, (step) =>
      step === 1 ? { checksum: 'deadbeef' } : 'ok',
    );
    const membership = droppable([a, b, c]);
    const { result } = await train(membership);
    expect(membership.dropped).toHaveLength(1);
    expect(membership.dropped[0]).toMatch(
      /^c: Worker c averaged step 1 to deadbeef over 8 samples, while 2 of 3 members agree on/,
    );
    // The disagreeing attempt was aborted on all three (all had staged it); none committed it.
    for (const w of [a, b, c])
      expect(stepCalls(w, 1).slice(0, 2)).toEqual(['reduce 1 ring-1', 'abort 1']);
    expect(stepCalls(a, 1).slice(2)).toEqual(['reduce 1 ring-2', 'commit 1']);
    expect(c.calls).not.toContain('commit 1');
    // Shares 3, 3, 2 of 1, 3, 2 average to 2 in step 0; then a and b, 2 each: -8 in all.
    expect(Array.from(result.weights.params)).toEqual([-8, -8, -8]);
  });

  it('retries once when no strict majority agrees, and fails with MISMATCH the second time', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network, (step) =>
      step === 1 ? { checksum: 'deadbeef' } : 'ok',
    );
    const membership = droppable([a, b]);
    const error = await train(membership).catch((e: unknown) => e);
    expect(hasErrorCode(error, 'MISMATCH')).toBe(true);
    expect((error as Error).message).toMatch(
      /^Ring replicas disagree twice on step 1 with no majority/,
    );
    expect(membership.dropped).toEqual([]);
    for (const w of [a, b]) {
      expect(stepCalls(w, 1)).toEqual(['reduce 1 ring-1', 'abort 1', 'reduce 1 ring-2', 'abort 1']);
    }
  });

  it('gets past one disagreement without a majority when the retry agrees', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network, (step, attempt) =>
      step === 1 && attempt === 0 ? { checksum: 'deadbeef' } : 'ok',
    );
    const { result } = await train(droppable([a, b]));
    expect(Array.from(result.weights.params)).toEqual([-8, -8, -8]);
  });

  it('fails with CONNECTION_LOST after more than 5 failed attempts of a step with nobody to blame', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network, (step) => (step === 1 ? 'abort' : 'ok'));
    const membership = droppable([a, b]);
    const error = await train(membership).catch((e: unknown) => e);
    expect(hasErrorCode(error, 'CONNECTION_LOST')).toBe(true);
    expect((error as Error).message).toMatch(
      /^Step 1 failed 6 times in a row in ring mode with no member to blame/,
    );
    expect(membership.dropped).toEqual([]);
    expect(a.calls.filter((c) => c.startsWith('reduce 1'))).toHaveLength(6);
    expect(a.calls).not.toContain('commit 1');
  });

  it('gives a joiner the state of the current step, pulled from a current member first', async () => {
    const network = createMemoryRingNetwork();
    let membership: ReturnType<typeof droppable> | undefined;
    const joiner = fakeRingWorker('joiner', 2, network);
    const a = fakeRingWorker('a', 1, network, (step) => {
      // Joins between steps 1 and 2 (the trainer asks for members at the start of each step).
      if (step === 1) membership!.list.push(joiner);
      return 'ok';
    });
    const b = fakeRingWorker('b', 3, network);
    membership = droppable([a, b]);
    const { result } = await train(membership);
    // The trainer's copy was of step 0; it pulled step 2 from a (the first current member) and
    // pushed exactly that to the joiner.
    expect(a.calls).toContain('pull 2');
    // It joined during step 1, so it took part in the evaluation at the end of epoch 1 too.
    expect(joiner.calls.slice(0, 3)).toEqual(['push 2', 'evaluate 2', 'reduce 2 ring-2']);
    expect(b.calls.filter((c) => c.startsWith('push'))).toEqual(['push 0']);
    // Steps 0, 1: 2 each; steps 2, 3: shares 3, 3, 2 of 1, 3, 2 also average 2.
    expect(Array.from(result.weights.params)).toEqual([-8, -8, -8]);
    expect(Array.from(joiner.params)).toEqual([-8, -8, -8]);
  });

  it('skips a current member that fails to hand over its state, dropping it', async () => {
    const network = createMemoryRingNetwork();
    let membership: ReturnType<typeof droppable> | undefined;
    const joiner = fakeRingWorker('joiner', 2, network);
    const a = fakeRingWorker('a', 1, network, (step) => {
      if (step === 1) {
        membership!.list.push(joiner);
        a.pullFails = true;
      }
      return 'ok';
    });
    const b = fakeRingWorker('b', 3, network);
    membership = droppable([a, b]);
    const { result } = await train(membership);
    expect(membership.dropped).toEqual(['a: a cannot hand over its state']);
    expect(b.calls).toContain('pull 2');
    expect(joiner.calls[0]).toBe('push 2');
    // Steps 0, 1: 2 each; steps 2, 3: b and the joiner, shares 4 and 4 of 3 and 2: 2.5 each.
    expect(Array.from(result.weights.params)).toEqual([-9, -9, -9]);
  });

  it('keeps the state of members a deadline drops all at once, so a joiner can carry on', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network, (step) => (step === 2 ? 'hang' : 'ok'));
    const joiner = fakeRingWorker('joiner', 2, network);
    const membership = droppable([a, b]);
    const drop = membership.drop!.bind(membership);
    membership.drop = (worker, reason) => {
      drop(worker, reason);
      if (membership.list.length === 0) membership.list.push(joiner);
    };
    const { result } = await train(membership, { workerTimeoutMs: 50 });
    // b stalled; a waited for it in the ring: both missed the deadline, and nobody can tell
    // which one stalled. The trainer's copy was of step 0, so it kept a's state of step 2 first.
    expect(membership.dropped).toEqual([
      'a: Worker a did not finish its share and all-reduce of step 2 within 0.05 s (--worker-timeout).',
      'b: Worker b did not finish its share and all-reduce of step 2 within 0.05 s (--worker-timeout).',
    ]);
    expect(a.calls.filter((c) => c.startsWith('pull'))).toEqual(['pull 2']);
    expect(joiner.calls[0]).toBe('push 2');
    // Steps 0, 1 averaged 2; steps 2, 3 had the joiner alone (2): -8.
    expect(Array.from(result.weights.params)).toEqual([-8, -8, -8]);
  });

  it('at a deadline drops only the member that went quiet, not those that waited on it and kept talking', async () => {
    const network = createMemoryRingNetwork();
    // a and c wait on b at step 2's first attempt and keep sending heartbeats; b is frozen.
    const waits = (step: number, attempt: number): Behaviour =>
      step === 2 && attempt === 0 ? 'hang' : 'ok';
    const a = talking(fakeRingWorker('a', 1, network, waits), () => Date.now());
    const b = talking(
      fakeRingWorker('b', 3, network, (step) => (step === 2 ? 'hang' : 'ok')),
      () => Date.now() - 60_000,
    );
    const c = talking(fakeRingWorker('c', 5, network, waits), () => Date.now());
    const membership = droppable([a, b, c]);
    const { result } = await train(membership, { workerTimeoutMs: 50 });
    expect(membership.dropped).toEqual([
      'b: Worker b did not finish its share and all-reduce of step 2 within 0.05 s (--worker-timeout).',
    ]);
    // Steps 0, 1 averaged 1, 3, 5 over shares of 3, 3, 2 images (2.75 each); steps 2, 3
    // averaged a and c over 4 and 4 (3 each): -11.5.
    expect(Array.from(result.weights.params)).toEqual([-11.5, -11.5, -11.5]);
    expect(stepCalls(a, 2).filter((x) => x.startsWith('commit'))).toEqual(['commit 2']);
  });

  it('at a deadline where every member kept talking, retries without dropping anyone', async () => {
    const network = createMemoryRingNetwork();
    const slowOnce = (step: number, attempt: number): Behaviour =>
      step === 1 && attempt === 0 ? 'hang' : 'ok';
    const a = talking(fakeRingWorker('a', 1, network, slowOnce), () => Date.now());
    const b = talking(fakeRingWorker('b', 3, network, slowOnce), () => Date.now());
    const membership = droppable([a, b]);
    const { result, warnings } = await train(membership, { workerTimeoutMs: 50 });
    expect(membership.dropped).toEqual([]);
    expect(warnings.map((w) => w.msg)).toContain(
      'ring step failed without a member to blame; retrying it',
    );
    expect(Array.from(result.weights.params)).toEqual([-8, -8, -8]);
  });

  it('fails with CONNECTION_LOST, pointing at --resume, when every member holding the weights left at once', async () => {
    const network = createMemoryRingNetwork();
    let membership: ReturnType<typeof droppable> | undefined;
    const joiner = fakeRingWorker('joiner', 2, network);
    const a = fakeRingWorker('a', 1, network, (step) => {
      // a and b leave during step 1; only a fresh worker is left for the evaluation after it.
      if (step === 1) membership!.list.splice(0, 2, joiner);
      return 'ok';
    });
    const b = fakeRingWorker('b', 3, network);
    membership = droppable([a, b]);
    const error = await train(membership).catch((e: unknown) => e);
    expect(hasErrorCode(error, 'CONNECTION_LOST')).toBe(true);
    expect((error as Error).message).toMatch(
      /^Every worker holding the weights of step 2 left at once, and this process's own copy is of step 0: nobody holds the state needed for evaluation, so training cannot go on\. Resume from the last checkpoint with --resume\.$/,
    );
    expect(joiner.calls).toEqual([]);
  });

  it('pulls the state for each checkpoint, and a resumed run pushes it and ends where the uninterrupted one does', async () => {
    const run = async (resume?: TrainerCheckpoint) => {
      const network = createMemoryRingNetwork();
      const a = fakeRingWorker('a', 1, network);
      const b = fakeRingWorker('b', 3, network, (step) => (step === 1 ? 'crash' : 'ok'));
      const checkpoints: TrainerCheckpoint[] = [];
      const { result } = await train(droppable([a, b]), {
        checkpointEvery: 1,
        onCheckpoint: async (c) => {
          checkpoints.push({ ...c, params: c.params.slice() });
        },
        ...(resume ? { resume } : {}),
      });
      return { result, checkpoints, a, b };
    };
    const whole = await run();
    // Checkpoints after steps 1 and 3 (mid-epoch) and at both epoch ends, each exact.
    expect(whole.checkpoints.map((c) => [c.step, Array.from(c.params)])).toEqual([
      [1, [-2, -2, -2]],
      [2, [-3, -3, -3]],
      [3, [-4, -4, -4]],
      [4, [-5, -5, -5]],
    ]);
    expect(whole.a.calls.filter((c) => c.startsWith('pull'))).toEqual([
      'pull 1',
      'pull 2',
      'pull 3',
      'pull 4',
    ]);
    const resumed = await run(whole.checkpoints[0]);
    expect(resumed.a.calls[0]).toBe('push 1');
    expect(Array.from(resumed.result.weights.params)).toEqual([-5, -5, -5]);
    expect(resumed.result.weights.version).toBe(4);
  });

  it('stops gracefully between steps with an exact checkpoint of where it stopped', async () => {
    let stop = false;
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network, (step) => {
      if (step === 2) stop = true;
      return 'ok';
    });
    const b = fakeRingWorker('b', 3, network);
    const checkpoints: Array<{ step: number; stepInEpoch: number; params: number[] }> = [];
    const { result } = await train(fixedMembership([a, b]), {
      shouldStop: () => stop,
      onCheckpoint: async ({ step, stepInEpoch, params }) => {
        checkpoints.push({ step, stepInEpoch, params: Array.from(params) });
      },
    });
    expect(result.completed).toBe(false);
    expect(checkpoints.at(-1)).toEqual({ step: 3, stepInEpoch: 1, params: [-6, -6, -6] });
    expect(Array.from(result.weights.params)).toEqual([-6, -6, -6]);
  });

  it('stops with CANCELLED, dropping nobody and committing nothing, when the run is aborted mid-step', async () => {
    const controller = new AbortController();
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network, (step) => {
      if (step === 1) setTimeout(() => controller.abort(), 10);
      return step === 1 ? 'hang' : 'ok';
    });
    const membership = droppable([a, b]);
    const error = await train(membership, { signal: controller.signal }).catch((e: unknown) => e);
    expect(hasErrorCode(error, 'CANCELLED')).toBe(true);
    expect(membership.dropped).toEqual([]);
    expect(a.calls).not.toContain('commit 1');
  });

  it('refuses a member that cannot take part in a ring, naming it', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const star: TrainingWorker = {
      id: 'old',
      name: 'old-worker',
      computeShare: () => Promise.reject(new Error('unused')),
      evaluate: async (slice) => perfectEvaluation(slice),
    };
    const error = await train(fixedMembership([a, star])).catch((e: unknown) => e);
    expect(hasErrorCode(error, 'INVALID_ARGUMENT')).toBe(true);
    expect((error as Error).message).toMatch(
      /^Worker old-worker \(old\) cannot train in ring mode/,
    );
  });

  it('drops a replica whose weights checksum is a minority at evaluation, and fails on no majority', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', 1, network);
    const b = fakeRingWorker('b', 3, network);
    const c = fakeRingWorker('c', 2, network);
    c.evaluationChecksum = '00000000';
    const membership = droppable([a, b, c]);
    const { result, epochs } = await train(membership);
    expect(membership.dropped).toHaveLength(1);
    expect(membership.dropped[0]).toMatch(
      /^c: Worker c's replica of step 2 has weights checksum 00000000/,
    );
    expect(result.evaluation?.count).toBe(12);
    expect(epochs[0]!.replica_checksum).toBe(float32Checksum(Float32Array.from([-4, -4, -4])));

    const network2 = createMemoryRingNetwork();
    const d = fakeRingWorker('d', 1, network2);
    const e = fakeRingWorker('e', 3, network2);
    e.evaluationChecksum = '00000000';
    const error = await train(droppable([d, e])).catch((err: unknown) => err);
    expect(hasErrorCode(error, 'MISMATCH')).toBe(true);
    expect((error as Error).message).toMatch(
      /^Ring replicas disagree on the weights of step 2 with no majority/,
    );
  });

  it('fails with NUMERIC when most members find their own gradient non-finite', async () => {
    const network = createMemoryRingNetwork();
    const a = fakeRingWorker('a', Number.NaN, network);
    const b = fakeRingWorker('b', Number.NaN, network);
    const membership = droppable([a, b]);
    const error = await train(membership).catch((e: unknown) => e);
    expect(hasErrorCode(error, 'NUMERIC')).toBe(true);
    expect((error as Error).message).toMatch(
      /^The gradients became non-finite on 2 of 2 members at epoch 1, step 0: training diverged/,
    );
    expect(membership.dropped).toEqual([]);
  });
});
