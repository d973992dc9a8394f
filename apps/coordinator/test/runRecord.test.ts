// The run record: events.jsonl as the recorder writes it (real files in a temporary folder) and
// as the reader joins it back, including torn last lines and resumed runs.
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, hasErrorCode } from '@shardline/core';
import type { EpochMetrics, StepProgress } from '@shardline/training';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { joinRunEvents, parseEventLines, readRunRecord } from '../src/report/record.js';
import { EVENTS_FILE, recordRunEvents } from '../src/report/recorder.js';
import { createEventReporter, type StartedInfo, type TrainEvent } from '../src/reporter.js';

let out: string;
beforeEach(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-record-'));
});
afterEach(async () => {
  await rm(out, { recursive: true, force: true });
});

const STEPS_PER_EPOCH = 4;

function started(extra: Partial<StartedInfo> = {}): StartedInfo {
  return {
    mode: 'in-process',
    model: 'mlp',
    dataset: 'fashion-mnist',
    backend: 'cpu',
    parameters: 10,
    train_samples: 32,
    test_samples: 8,
    epochs: 2,
    batch_size: 8,
    steps_per_epoch: STEPS_PER_EPOCH,
    class_names: ['a', 'b'],
    out,
    ...extra,
  };
}

function progress(step: number): StepProgress {
  const epoch = Math.ceil(step / STEPS_PER_EPOCH);
  return {
    epoch,
    epochs: 2,
    stepInEpoch: step - (epoch - 1) * STEPS_PER_EPOCH,
    stepsPerEpoch: STEPS_PER_EPOCH,
    loss: 1 / step,
    accuracy: 0.5,
    imagesPerSecond: 100,
    step,
    stepLoss: 1 / step,
    stepAccuracy: 0.5,
    samples: 8,
    workers: 1,
    stepSeconds: 0.0123456789,
    computeSeconds: 0.01,
    exchangeSeconds: 0,
    optimizerSeconds: 0.002,
  };
}

function epochEnd(epoch: number): EpochMetrics {
  return {
    epoch,
    train_loss: 0.5,
    train_accuracy: 0.6,
    test_loss: 0.4,
    test_accuracy: 0.7,
    images_per_second: 100,
    workers: 1,
    step: epoch * STEPS_PER_EPOCH,
    confusion: [
      [3, 1],
      [1, 3],
    ],
  };
}

function quietLogger(lines: string[] = []) {
  return createLogger({ level: 'warn', format: 'text', sink: { write: (s) => lines.push(s) } });
}

const readEvents = async () =>
  (await readFile(join(out, EVENTS_FILE), 'utf8'))
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as TrainEvent);

describe('recordRunEvents', () => {
  it('writes every event the JSON reporter prints, plus one step event per step that stdout never sees', async () => {
    const printed: TrainEvent[] = [];
    const reporter = recordRunEvents(
      createEventReporter((e) => printed.push(e)),
      quietLogger(),
    );
    // A join before started (a remote worker racing the start) is held, then written after it.
    reporter.workerJoined({ worker: 'w1', workers: 1 });
    reporter.started(started());
    for (let s = 1; s <= 4; s++) reporter.progress(progress(s));
    reporter.epochEnd(epochEnd(1));
    reporter.done({ ...epochEnd(1), model_path: 'm', summary_path: 's' });

    const events = await readEvents();
    expect(events.map((e) => e.event)).toEqual([
      'started',
      'worker_joined',
      'step',
      'step',
      'step',
      'step',
      'epoch_end',
      'done',
    ]);
    expect(printed.map((e) => e.event)).toEqual(['worker_joined', 'started', 'epoch_end', 'done']);
    // The same objects as stdout's, field for field (each stamps its own time, within a tick).
    const notStep = events.filter((e) => e.event !== 'step');
    for (const { time, ...fields } of printed) {
      const recorded = notStep.find((f) => f.event === fields.event)!;
      expect({ ...recorded, time: undefined }).toEqual({ ...fields, time: undefined });
      expect(Math.abs(Date.parse(recorded.time) - Date.parse(time))).toBeLessThan(1000);
    }
    expect(events[2]).toMatchObject({
      step: 1,
      epoch: 1,
      step_in_epoch: 1,
      steps_per_epoch: 4,
      batch_loss: 1,
      batch_accuracy: 0.5,
      running_loss: 1,
      samples: 8,
      workers: 1,
      // Rounded to microseconds.
      step_seconds: 0.012346,
      compute_seconds: 0.01,
      exchange_seconds: 0,
      optimizer_seconds: 0.002,
      images_per_second: 648,
    });
    expect(events[6]!.confusion).toEqual([
      [3, 1],
      [1, 3],
    ]);
  });

  it('starts a fresh run with a new file, and appends a resumed one after ending a torn last line', async () => {
    const path = join(out, EVENTS_FILE);
    await writeFile(path, '{"event":"started","time":"t0","out":"old"}\n');
    const first = recordRunEvents(
      createEventReporter(() => {}),
      quietLogger(),
    );
    first.started(started());
    first.progress(progress(1));
    first.progress(progress(2));
    // The process dies while writing step 3.
    await appendFile(path, '{"event":"step","time":"2026-01-01T00:00:00.000Z","st');
    const resumed = recordRunEvents(
      createEventReporter(() => {}),
      quietLogger(),
    );
    resumed.started(started({ resumed_from_step: 2 }));
    resumed.progress(progress(3));

    const text = await readFile(path, 'utf8');
    const parsed = parseEventLines(text);
    // The old run's line is gone; the torn line is a bad line now, not part of the next event.
    expect(parsed.events.map((e) => e.event)).toEqual([
      'started',
      'step',
      'step',
      'started',
      'step',
    ]);
    expect(parsed.badLines).toEqual([4]);
    expect(parsed.tornTail).toBe(false);
    const run = joinRunEvents(parsed);
    expect(run.steps.map((s) => s.step)).toEqual([1, 2, 3]);
    expect(run.sessions.map((s) => s.resumedFromStep)).toEqual([undefined, 2]);
  });

  it('goes on without the record when the file cannot be written, saying so once', async () => {
    const warnings: string[] = [];
    const printed: TrainEvent[] = [];
    const reporter = recordRunEvents(
      createEventReporter((e) => printed.push(e)),
      quietLogger(warnings),
    );
    reporter.started(started({ out: join(out, 'no', 'such', 'folder') }));
    reporter.progress(progress(1));
    reporter.epochEnd(epochEnd(1));
    expect(printed.map((e) => e.event)).toEqual(['started', 'epoch_end']);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('cannot write the run record');
    expect(warnings[0]).toContain('report.html will not be written');
  });
});

const line = (event: Record<string, unknown>) => `${JSON.stringify(event)}\n`;
const stepLine = (step: number, extra: Record<string, unknown> = {}) =>
  line({
    event: 'step',
    time: `2026-01-01T00:00:${String(step).padStart(2, '0')}.000Z`,
    step,
    epoch: Math.ceil(step / 4),
    batch_loss: 1,
    ...extra,
  });

describe('parseEventLines', () => {
  it('skips a torn last line and keeps a complete one that lost only its newline', () => {
    const head = line({ event: 'started', time: 't' }) + stepLine(1);
    expect(parseEventLines(`${head}{"event":"step","ti`)).toMatchObject({
      tornTail: true,
      badLines: [],
    });
    expect(parseEventLines(`${head}{"event":"step","ti`).events).toHaveLength(2);
    const whole = parseEventLines(head + stepLine(2).trimEnd());
    expect(whole.events).toHaveLength(3);
    expect(whole.tornTail).toBe(false);
  });

  it('counts unreadable lines elsewhere instead of failing, and ignores blank ones', () => {
    const parsed = parseEventLines(
      `${line({ event: 'started', time: 't' })}\nnot json\n[1,2]\n{"no":"event"}\n${stepLine(1)}`,
    );
    expect(parsed.events.map((e) => e.event)).toEqual(['started', 'step']);
    expect(parsed.badLines).toEqual([3, 4, 5]);
  });
});

describe('joinRunEvents', () => {
  it('replaces the steps and epochs after the resumed checkpoint with the resumed session’s', () => {
    const text =
      line({ event: 'started', time: '2026-01-01T00:00:00.000Z' }) +
      [1, 2, 3, 4].map((s) => stepLine(s)).join('') +
      line({ event: 'epoch_end', time: 't', epoch: 1, step: 4, test_accuracy: 0.5 }) +
      [5, 6].map((s) => stepLine(s, { batch_loss: 9 })).join('') +
      line({ event: 'worker_left', time: 't', worker: 'w1', reason: 'crashed', workers: 0 }) +
      line({ event: 'started', time: '2026-01-01T00:01:00.000Z', resumed_from_step: 4 }) +
      [5, 6, 7, 8].map((s) => stepLine(s)).join('') +
      line({ event: 'epoch_end', time: 't', epoch: 2, step: 8, test_accuracy: 0.6 }) +
      line({ event: 'done', time: '2026-01-01T00:02:00.000Z' }) +
      // Shutdown after done: not part of the training history.
      line({ event: 'worker_left', time: 't', worker: 'w2', reason: 'job done', workers: 0 });
    const run = joinRunEvents(parseEventLines(text));
    expect(run.steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(run.steps.every((s) => s.batch_loss === 1)).toBe(true);
    expect(run.epochs.map((e) => e.epoch)).toEqual([1, 2]);
    expect(run.membership).toMatchObject([{ worker: 'w1', change: 'left', step: 6, session: 0 }]);
    expect(run.sessions).toMatchObject([
      { finished: false },
      { resumedFromStep: 4, finished: true, endedAt: '2026-01-01T00:02:00.000Z' },
    ]);
    expect(run.done?.event).toBe('done');
  });

  it('starts over at a fresh started event (a new run in the same folder)', () => {
    const text =
      line({ event: 'started', time: 't' }) +
      stepLine(1) +
      stepLine(2) +
      line({ event: 'started', time: 't', class_names: ['x', 'y'] }) +
      stepLine(1);
    const run = joinRunEvents(parseEventLines(text));
    expect(run.steps.map((s) => s.step)).toEqual([1]);
    expect(run.sessions).toHaveLength(1);
    expect(run.classNames).toEqual(['x', 'y']);
  });

  it('refuses a record without a started event, saying there is nothing to report', async () => {
    const path = join(out, EVENTS_FILE);
    await writeFile(path, '');
    const error = await readRunRecord(path).catch((e: unknown) => e);
    expect(hasErrorCode(error, 'NOT_FOUND')).toBe(true);
    expect((error as Error).message).toMatch(/holds no started event \(found 0 events\)/);
  });
});
