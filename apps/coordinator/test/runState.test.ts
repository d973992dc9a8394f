/**
 * The dashboard's run model, fed events by hand with a fake clock: where the run stands, the
 * workers table (joins, departures, the job's end, the cluster's activity), and series that
 * stay bounded however long the run.
 */
import type { StepProgress } from '@shardline/training';
import { describe, expect, it } from 'vitest';
import { createRunState, type WorkerActivity } from '../src/dashboard/runState.js';
import { createDownsampledSeries } from '../src/dashboard/series.js';
import type { StartedInfo } from '../src/reporter.js';

const started = (mode: StartedInfo['mode'], epochs = 2): StartedInfo => ({
  mode,
  model: 'mlp',
  dataset: 'fashion-mnist',
  backend: 'cpu',
  parameters: 10,
  train_samples: 64,
  test_samples: 10,
  epochs,
  batch_size: 32,
  steps_per_epoch: 2,
  out: '/tmp/run',
  class_names: ['a', 'b'],
});

const progress = (epoch: number, stepInEpoch: number): StepProgress => ({
  epoch,
  epochs: 2,
  stepInEpoch,
  stepsPerEpoch: 2,
  loss: 1,
  accuracy: 0.5,
  imagesPerSecond: 64,
  step: (epoch - 1) * 2 + stepInEpoch,
  stepLoss: 1,
  stepAccuracy: 0.5,
  samples: 32,
  workers: 1,
  stepSeconds: 0.5,
  computeSeconds: 0.4,
  exchangeSeconds: 0.05,
  optimizerSeconds: 0.05,
});

const epochEnd = (epoch: number) => ({
  epoch,
  train_loss: 1,
  train_accuracy: 0.5,
  test_loss: 0.9,
  test_accuracy: 0.6,
  images_per_second: 64,
  workers: 1,
  step: epoch * 2,
  confusion: [
    [3, 2],
    [1, 4],
  ],
});

describe('the run state', () => {
  it("goes waiting, training, evaluating (after an epoch's last step), training, ..., done", () => {
    let t = 0;
    const run = createRunState({ now: () => t });
    const states: string[] = [];
    run.subscribe((d) => d.event === 'state' && states.push(d.data.state));
    expect(run.state).toBe('waiting');
    run.reporter.started(started('distributed'));
    for (const epoch of [1, 2]) {
      for (const s of [1, 2]) {
        t += 500;
        run.reporter.progress(progress(epoch, s));
      }
      t += 200;
      run.reporter.epochEnd(epochEnd(epoch));
    }
    run.reporter.done({ ...epochEnd(2), model_path: '/m', summary_path: '/s' });
    expect(states).toEqual(['waiting', 'training', 'evaluating', 'training', 'evaluating', 'done']);
    const snapshot = run.snapshot();
    expect(snapshot).toMatchObject({
      state: 'done',
      epoch: 2,
      step: 4,
      steps_per_epoch: 2,
      class_names: ['a', 'b'],
      job: { model: 'mlp', epochs: 2 },
      confusion: { epoch: 2, class_names: ['a', 'b'] },
      result: { model_path: '/m' },
      eta: { run_seconds: 0 },
    });
    // The heat map's cells come shaped, as report.html's: the page draws them as they are.
    expect(snapshot.confusion?.cells).toEqual([
      {
        true_index: 0,
        true_class: 'a',
        predicted_index: 0,
        predicted_class: 'a',
        count: 3,
        row_fraction: 0.6,
      },
      {
        true_index: 0,
        true_class: 'a',
        predicted_index: 1,
        predicted_class: 'b',
        count: 2,
        row_fraction: 0.4,
      },
      {
        true_index: 1,
        true_class: 'b',
        predicted_index: 0,
        predicted_class: 'a',
        count: 1,
        row_fraction: 0.2,
      },
      {
        true_index: 1,
        true_class: 'b',
        predicted_index: 1,
        predicted_class: 'b',
        count: 4,
        row_fraction: 0.8,
      },
    ]);
    expect(snapshot.job).not.toHaveProperty('class_names');
    expect(snapshot.test.map((p) => p.epoch)).toEqual([1, 2]);
    expect(snapshot.test[0]).not.toHaveProperty('confusion');
    expect(snapshot.train.points.map((p) => p.step)).toEqual([1, 2, 3, 4]);
    // A run that is done stays done, whatever happens while it closes.
    run.finish({ state: 'stopped' });
    expect(run.state).toBe('done');
  });

  it('estimates the time left from the steps so far', () => {
    let t = 0;
    const run = createRunState({ now: () => t });
    run.reporter.started(started('in-process'));
    run.reporter.progress(progress(1, 1));
    t += 1000;
    run.reporter.progress(progress(1, 2));
    // 1 s a step: none left in this epoch, 2 in the next, plus two evaluations.
    expect(run.snapshot().eta.run_seconds).toBeGreaterThanOrEqual(2);
  });

  it('shows the in-process run as one worker with all of the batch, finished at the end', () => {
    const run = createRunState({ workerRefreshMs: 0 });
    run.reporter.started(started('in-process', 1));
    run.reporter.progress(progress(1, 1));
    expect(run.workers()).toEqual([
      expect.objectContaining({
        id: 'in-process',
        state: 'attached',
        share: 1,
        backend: 'cpu',
        last_step: 1,
        last_step_seconds: 0.4,
        share_samples: 32,
      }),
    ]);
    run.reporter.done({ ...epochEnd(1), model_path: '/m', summary_path: '/s' });
    expect(run.workers()[0]!.state).toBe('finished');
  });

  it('keeps workers that join and leave, tells a departure from the job ending, and reads the cluster', () => {
    const run = createRunState({ workerRefreshMs: 0, maxDepartedWorkers: 2 });
    const deltas: string[] = [];
    run.subscribe((d) => d.event === 'worker' && deltas.push(`${d.data.name}:${d.data.state}`));
    run.reporter.started(started('distributed'));
    const activity: WorkerActivity[] = [];
    run.watchWorkers(() => activity);
    for (const n of [1, 2, 3, 4]) {
      run.reporter.workerJoined({
        worker: `w${n}`,
        worker_id: `id-${n}`,
        hostname: 'h',
        backend: 'wasm',
      });
    }
    activity.push({
      id: 'id-4',
      lastStep: 7,
      lastSeenMs: 1_000,
      lastShare: { samples: 8, computeSeconds: 0.25 },
      peerAddress: '10.0.0.4:7071',
    });
    run.reporter.progress(progress(1, 1));
    run.reporter.workerLeft({ worker: 'w1', worker_id: 'id-1', reason: 'dropped: silent' });
    run.reporter.workerLeft({ worker: 'w2', worker_id: 'id-2', reason: 'it failed' });
    run.reporter.workerLeft({
      worker: 'w3',
      worker_id: 'id-3',
      reason: 'told to stop',
      job_ended: true,
    });
    const rows = new Map(run.workers().map((w) => [w.id, w]));
    // At most two departed rows are kept: the oldest goes first.
    expect([...rows.keys()].sort()).toEqual(['id-2', 'id-3', 'id-4']);
    expect(rows.get('id-2')).toMatchObject({ state: 'left', reason: 'it failed' });
    expect(rows.get('id-3')).toMatchObject({ state: 'finished' });
    expect(rows.get('id-4')).toMatchObject({
      state: 'attached',
      last_step: 7,
      last_step_seconds: 0.25,
      share_samples: 8,
      share: 0.25,
      peer_address: '10.0.0.4:7071',
      last_seen: new Date(1_000).toISOString(),
    });
    expect(deltas).toContain('w4:attached');
    expect(deltas).toContain('w3:finished');
  });

  it('fails with why', () => {
    const run = createRunState();
    run.finish({ state: 'failed', error: 'no workers came' });
    expect(run.snapshot()).toMatchObject({ state: 'failed', error: 'no workers came' });
  });
});

describe('a downsampled series', () => {
  it('keeps between max/2 and max points over any length, evenly spaced, means preserved', () => {
    const series = createDownsampledSeries<{ step: number; loss: number; extra?: number }>({
      max: 1000,
      last: ['step'],
    });
    let sum = 0;
    for (let step = 1; step <= 25_000; step++) {
      const loss = Math.sin(step) + 2;
      sum += loss;
      series.push({ step, loss, ...(step % 2 === 0 ? { extra: 1 } : {}) });
    }
    const points = series.points();
    expect(series.total).toBe(25_000);
    expect(points.length).toBeGreaterThanOrEqual(500);
    expect(points.length).toBeLessThanOrEqual(1000);
    expect(series.stride).toBe(32);
    expect(points.at(-1)!.step).toBe(25_000);
    // Each full point stands for `stride` steps and ends on a multiple of it.
    expect(points.slice(0, -1).every((p) => p.step % series.stride === 0)).toBe(true);
    // Means of means, weighted by the raw points behind each: the overall mean is kept.
    const full = points.slice(0, -1);
    const last = points.at(-1)!;
    const lastCount = 25_000 - full.length * series.stride;
    const kept = full.reduce((a, p) => a + p.loss * series.stride, 0) + last.loss * lastCount;
    expect(kept / 25_000).toBeCloseTo(sum / 25_000, 9);
    // A field missing from some raw points is the mean of those that have it.
    expect(points[0]!.extra).toBe(1);
  });
});
