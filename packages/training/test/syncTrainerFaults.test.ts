/**
 * The trainer's fault paths (drop, retry, deadline, cancel) with fake workers: no dataset, no
 * model, no network, so a regression shows in well under a second. The e2e tests in
 * apps/coordinator run the same paths with real processes.
 */
import { createLogger, hasErrorCode, type LogFields, type ParamLayout } from '@shardline/core';
import { type ClassificationState, createClassificationAccumulator } from '@shardline/metrics';
import { describe, expect, it } from 'vitest';
import type {
  EvalAssignment,
  Membership,
  ShareAssignment,
  ShareResult,
  TrainingWorker,
  WeightsSnapshot,
} from '../src/contract.js';
import { fixedMembership } from '../src/contract.js';
import type { EpochMetrics } from '../src/events.js';
import { runSynchronousTraining, type SyncTrainingOptions } from '../src/syncTrainer.js';

const SIZE = 3;
const CLASSES = ['a', 'b', 'c', 'd'];
const layout: ParamLayout = { slots: [], size: SIZE, fingerprint: '0000000000000000' };

/** How a fake worker answers a share: a number fills its gradient; the others misbehave. */
type Behaviour = 'ok' | 'fail' | 'hang';

interface FakeWorker extends TrainingWorker {
  /** Every share it was asked for, in order. */
  readonly shares: ShareAssignment[];
}

/**
 * A worker whose gradient is `value` in every component and whose behaviour at global step s is
 * `behaviour(s)`. A hanging worker settles only when its signal aborts, as the contract says.
 */
function fakeWorker(
  name: string,
  value: number,
  behaviour: (step: number) => Behaviour = () => 'ok',
): FakeWorker {
  const shares: ShareAssignment[] = [];
  return {
    id: name,
    name,
    shares,
    computeShare(assignment: ShareAssignment, _weights: WeightsSnapshot, signal?: AbortSignal) {
      shares.push(assignment);
      const mode = behaviour(assignment.step);
      if (mode === 'fail') return Promise.reject(new Error(`${name} crashed`));
      if (mode === 'hang') {
        return new Promise<ShareResult>((_, reject) =>
          signal?.addEventListener('abort', () => reject(signal.reason), { once: true }),
        );
      }
      const sampleCount =
        Math.floor(8 / assignment.worldSize) +
        (assignment.rank === 0 ? 8 % assignment.worldSize : 0);
      return Promise.resolve({
        gradient: new Float32Array(SIZE).fill(value),
        sampleCount,
        loss: 0.5,
        correct: sampleCount,
        computeSeconds: 0.001,
      });
    },
    async evaluate(slice: EvalAssignment): Promise<ClassificationState> {
      return perfectEvaluation(slice);
    },
  };
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
 * A membership whose members can be dropped, recording every drop. It answers at most 100 times
 * (a run here has 4 steps and 2 evaluations), so a retry loop that never converges fails the
 * test instead of spinning.
 */
function droppable(workers: TrainingWorker[]): Membership & { dropped: string[] } {
  const members = [...workers];
  const dropped: string[] = [];
  let calls = 0;
  return {
    dropped,
    async members() {
      if (++calls > 100)
        throw new Error('members() asked 100 times: the trainer retries without end');
      return [...members];
    },
    drop(worker, reason) {
      const i = members.indexOf(worker);
      if (i >= 0) members.splice(i, 1);
      dropped.push(`${worker.name}: ${reason}`);
    },
  };
}

/** Trains 2 epochs of 2 steps (16 images, global batch 8) with plain SGD at learning rate 1. */
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

// Short timeouts: a broken retry loop spins or hangs instead of failing on an assertion.
describe('runSynchronousTraining fault paths', { timeout: 10_000 }, () => {
  it('averages the members gradients by sample count, step after step', async () => {
    // Gradients 1 and 3 with equal shares average to 2; four SGD steps at lr 1: -8 per value.
    const { result, epochs } = await train(
      fixedMembership([fakeWorker('a', 1), fakeWorker('b', 3)]),
    );
    expect(result.completed).toBe(true);
    expect(result.weights.version).toBe(4);
    expect(Array.from(result.weights.params)).toEqual([-8, -8, -8]);
    expect(epochs.map((m) => m.workers)).toEqual([2, 2]);
    expect(result.evaluation?.accuracy).toBe(1);
  });

  it('drops a worker that fails and retries the same step with the others', async () => {
    const a = fakeWorker('a', 1);
    const b = fakeWorker('b', 3, (step) => (step === 1 ? 'fail' : 'ok'));
    const membership = droppable([a, b]);
    const { result, warnings } = await train(membership);
    expect(membership.dropped).toEqual(['b: b crashed']);
    expect(warnings).toContainEqual(
      expect.objectContaining({ msg: 'dropped a worker; retrying step 1 without it', worker: 'b' }),
    );
    // Step 1 ran again, by a alone over the whole global batch; b got no work after it failed.
    expect(a.shares.filter((s) => s.step === 1).map((s) => [s.rank, s.worldSize])).toEqual([
      [0, 2],
      [0, 1],
    ]);
    expect(b.shares.map((s) => s.step)).toEqual([0, 1]);
    // Step 0 averaged 1 and 3 (2); steps 1 to 3 had only a's gradient (1): -2 - 3 = -5. No step
    // was applied twice or skipped.
    expect(result.weights.version).toBe(4);
    expect(Array.from(result.weights.params)).toEqual([-5, -5, -5]);
  });

  it('drops a worker that misses the step deadline, naming it and --worker-timeout', async () => {
    const a = fakeWorker('a', 1);
    const slow = fakeWorker('slow', 3, (step) => (step === 2 ? 'hang' : 'ok'));
    const membership = droppable([a, slow]);
    const started = performance.now();
    const { result } = await train(membership, { workerTimeoutMs: 50 });
    expect(performance.now() - started).toBeLessThan(5000);
    expect(membership.dropped).toEqual([
      'slow: Worker slow did not return its share of step 2 within 0.05 s (--worker-timeout).',
    ]);
    // Steps 0 and 1 averaged 1 and 3; steps 2 (retried) and 3 used a alone: -2 -2 -1 -1.
    expect(Array.from(result.weights.params)).toEqual([-6, -6, -6]);
  });

  it('drops a worker that throws instead of rejecting, like one that rejects', async () => {
    const a = fakeWorker('a', 1);
    const thrower = fakeWorker('thrower', 3);
    const honest = thrower.computeShare.bind(thrower);
    thrower.computeShare = (assignment, weights, signal) => {
      if (assignment.step === 1) throw new Error('thrower broke its contract');
      return honest(assignment, weights, signal);
    };
    const membership = droppable([a, thrower]);
    const { result } = await train(membership);
    expect(membership.dropped).toEqual(['thrower: thrower broke its contract']);
    expect(Array.from(result.weights.params)).toEqual([-5, -5, -5]);
  });

  it('fails the job with the worker error when members cannot be replaced', async () => {
    const broken = fakeWorker('only', 1, (step) => (step === 3 ? 'fail' : 'ok'));
    await expect(train(fixedMembership([broken]))).rejects.toThrow('only crashed');
  });

  it('stops with CANCELLED, dropping nobody, when the run is aborted mid-step', async () => {
    const controller = new AbortController();
    const a = fakeWorker('a', 1, (step) => {
      if (step === 1) setTimeout(() => controller.abort(), 10);
      return step === 1 ? 'hang' : 'ok';
    });
    const membership = droppable([a]);
    const error = await train(membership, { signal: controller.signal }).catch((e: unknown) => e);
    expect(hasErrorCode(error, 'CANCELLED')).toBe(true);
    expect(membership.dropped).toEqual([]);
  });

  it('drops a worker whose evaluation fails and evaluates the whole test set with the rest', async () => {
    const a = fakeWorker('a', 1);
    const b = fakeWorker('b', 1);
    let evaluations = 0;
    b.evaluate = async () => {
      evaluations++;
      throw new Error('b lost its test set');
    };
    const membership = droppable([a, b]);
    const { result } = await train(membership);
    expect(evaluations).toBe(1);
    expect(membership.dropped).toEqual(['b: b lost its test set']);
    expect(result.evaluation?.count).toBe(12);
  });

  it('stops gracefully between steps with a checkpoint of where it stopped', async () => {
    let stop = false;
    const a = fakeWorker('a', 1, (step) => {
      if (step === 2) stop = true;
      return 'ok';
    });
    const checkpoints: Array<{ epoch: number; stepInEpoch: number; step: number }> = [];
    const { result } = await train(fixedMembership([a]), {
      shouldStop: () => stop,
      onCheckpoint: async ({ epoch, stepInEpoch, step }) => {
        checkpoints.push({ epoch, stepInEpoch, step });
      },
    });
    expect(result.completed).toBe(false);
    expect(checkpoints.at(-1)).toEqual({ epoch: 1, stepInEpoch: 1, step: 3 });
  });
});
