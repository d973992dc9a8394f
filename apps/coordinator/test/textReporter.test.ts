/**
 * The text reporter, what people see during `shardline-coordinator train`: a live bar on a
 * terminal fitted to its width, summary lines, and plain progress lines when the output is not a
 * terminal. Fake streams record every write and a fake clock drives the ETA; the e2e test
 * (terminalOutput.e2e.test.ts) runs the real CLI under a pseudo-terminal.
 */
import type { StepProgress } from '@shardline/training';
import { describe, expect, it } from 'vitest';
import { createTextReporter, REDRAW_MS, type Reporter, type StartedInfo } from '../src/reporter.js';
import {
  formatDuration,
  formatElapsed,
  formatLoss,
  formatPercent,
  formatRate,
} from '../src/terminal/format.js';
import { BAR_MAX, BAR_MIN, drawBar, formatProgressBar } from '../src/terminal/progressLine.js';

const ERASE = '\r\x1b[2K';

/** A stream that keeps what is written to it, in order, in a log shared with its sibling. */
function fakeStreams(options: { stdoutTTY: boolean; stderrTTY: boolean; columns?: number }) {
  const log: Array<{ stream: 'stdout' | 'stderr'; text: string }> = [];
  const stream = (name: 'stdout' | 'stderr', isTTY: boolean) => ({
    isTTY,
    ...(options.columns === undefined ? {} : { columns: options.columns }),
    write(text: string) {
      log.push({ stream: name, text });
      return true;
    },
  });
  return {
    log,
    streams: {
      stdout: stream('stdout', options.stdoutTTY),
      stderr: stream('stderr', options.stderrTTY),
    },
    /** Everything on one stream, concatenated. */
    text: (name: 'stdout' | 'stderr') =>
      log
        .filter((w) => w.stream === name)
        .map((w) => w.text)
        .join(''),
    /** The bars drawn on stderr, without their erase sequence. */
    bars: () =>
      log
        .filter(
          (w) => w.stream === 'stderr' && w.text.startsWith(ERASE) && w.text.length > ERASE.length,
        )
        .map((w) => w.text.slice(ERASE.length)),
  };
}

const STARTED: StartedInfo = {
  mode: 'distributed',
  model: 'seed-cnn',
  dataset: 'fashion-mnist',
  backend: 'wasm',
  parameters: 1_413_834,
  train_samples: 60_000,
  test_samples: 10_000,
  epochs: 5,
  batch_size: 64,
  steps_per_epoch: 938,
  out: '/runs/a',
  local_workers: 2,
};

const progress = (stepInEpoch: number, over: Partial<StepProgress> = {}): StepProgress => ({
  epoch: 1,
  epochs: 5,
  stepInEpoch,
  stepsPerEpoch: 938,
  loss: 0.41234567,
  accuracy: 0.851234,
  imagesPerSecond: 312.4,
  ...over,
});

const EPOCH_END = {
  epoch: 1,
  train_loss: 0.41234567,
  train_accuracy: 0.851234,
  test_loss: 0.356123,
  test_accuracy: 0.874,
  images_per_second: 312.4,
  workers: 2,
  step: 938,
};

/** A reporter on a fake clock; `at(ms)` moves the clock. */
function reporterAt(streams: Parameters<typeof createTextReporter>[0]) {
  let t = 0;
  const reporter = createTextReporter(streams, { now: () => t });
  return {
    reporter,
    at(ms: number) {
      t = ms;
    },
  };
}

/** Reports steps `from`..`to` of epoch 1, `stepMs` apart, the first at `startMs`. */
function runSteps(
  r: { reporter: Reporter; at(ms: number): void },
  from: number,
  to: number,
  stepMs: number,
  startMs = 0,
  over: Partial<StepProgress> = {},
) {
  for (let s = from; s <= to; s++) {
    r.at(startMs + (s - from) * stepMs);
    r.reporter.progress(progress(s, over));
  }
}

describe('numbers rounded for people', () => {
  it('prints a loss to 4 significant digits, accuracy in percent, images/s whole, times as m:ss', () => {
    expect(formatLoss(0.41234567)).toBe('0.4123');
    expect(formatLoss(2.30412)).toBe('2.304');
    expect(formatLoss(12.34567)).toBe('12.35');
    expect(formatLoss(Number.NaN)).toBe('NaN');
    expect(formatPercent(0.851234)).toBe('85.12%');
    expect(formatPercent(0.851234, 1)).toBe('85.1%');
    expect(formatRate(312.6)).toBe('313 img/s');
    expect(formatRate(12_345.2)).toBe('12,345 img/s');
    expect(formatDuration(41)).toBe('0:41');
    expect(formatDuration(232)).toBe('3:52');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(undefined)).toBe('-:--');
    expect(formatElapsed(0.0441)).toBe('44ms');
    expect(formatElapsed(6.04)).toBe('6.0s');
    expect(formatElapsed(94)).toBe('1m 34s');
  });

  it('draws a Keras bar: = for done, > at the head, . for the rest', () => {
    expect(drawBar(0, 10)).toBe('[>.........]');
    expect(drawBar(0.5, 10)).toBe('[=====>....]');
    expect(drawBar(1, 10)).toBe('[==========]');
  });
});

describe('createTextReporter on a terminal', () => {
  it('draws a 30-character bar with the epoch and run ETA at 160 columns', () => {
    const fake = fakeStreams({ stdoutTTY: true, stderrTTY: true, columns: 160 });
    const r = reporterAt(fake.streams);
    r.reporter.started(STARTED);
    // 100 ms a step, so the epoch's ETA is 526 steps x 0.1 s = 52.6 s, and the run's adds four
    // more epochs (375.2 s) and five evaluations guessed at 0.1 s x 10,000 / 64 / 3 each (26 s).
    runSteps(r, 1, 412, 100);
    const bar = fake.bars().at(-1)!;
    expect(bar).toBe(
      `Epoch 1/5  [=============>................]  412/938  ETA 0:53 (run 7:34)  loss 0.4123  acc 85.1%  312 img/s`,
    );
    expect(bar.length).toBeLessThan(160);
    // The same terminal's stdout gets no progress lines: the bar is the progress.
    expect(fake.text('stdout')).not.toContain('412/938');
  });

  it('fits 80 columns with a shorter bar and without images/s, and a very narrow one by cutting', () => {
    for (const columns of [80, 60, 40, 20, 5]) {
      const fake = fakeStreams({ stdoutTTY: true, stderrTTY: true, columns });
      const r = reporterAt(fake.streams);
      r.reporter.started(STARTED);
      runSteps(r, 1, 412, 100);
      for (const bar of fake.bars()) expect(bar.length, `${columns}: ${bar}`).toBeLessThan(columns);
      const last = fake.bars().at(-1)!;
      if (columns === 80) {
        expect(last).toMatch(
          /^Epoch 1\/5 {2}\[=+>\.+\] {2}412\/938 {2}ETA 0:53 \(run 7:34\) {2}loss 0\.4123 {2}acc 85\.1%$/,
        );
        const width = last.indexOf(']') - last.indexOf('[') - 1;
        expect(width).toBeGreaterThanOrEqual(BAR_MIN);
        expect(width).toBeLessThan(BAR_MAX);
      }
      if (columns === 20) expect(last).toBe('Epoch 1/5  412/938 ');
    }
  });

  it('redraws at most 10 times a second, and always shows the epoch full before its evaluation', () => {
    const fake = fakeStreams({ stdoutTTY: true, stderrTTY: true, columns: 160 });
    const r = reporterAt(fake.streams);
    // 938 steps 10 ms apart: 9.37 s, so about 94 redraws rather than 938.
    runSteps(r, 1, 938, 10);
    const bars = fake.bars();
    expect(bars.length).toBeGreaterThanOrEqual(90);
    expect(bars.length).toBeLessThanOrEqual(96);
    expect(bars.at(-1)).toMatch(/\[={30}\] {2}938\/938 {2}evaluating/);
    expect(REDRAW_MS).toBe(100);
  });

  it('erases the bar before any other line and draws it again after, so no line lands inside it', () => {
    const fake = fakeStreams({ stdoutTTY: true, stderrTTY: true, columns: 160 });
    const r = reporterAt(fake.streams);
    r.reporter.started(STARTED);
    runSteps(r, 1, 10, 100);
    const bar = fake.bars().at(-1)!;
    const before = fake.log.length;
    r.reporter.output!.stderr.write('2026-01-01T00:00:00.000Z WARN  slow worker name=local-2\n');
    r.reporter.workerJoined({ worker: 'remote-1' });
    expect(fake.log.slice(before)).toEqual([
      { stream: 'stderr', text: ERASE },
      { stream: 'stderr', text: '2026-01-01T00:00:00.000Z WARN  slow worker name=local-2\n' },
      { stream: 'stderr', text: `${ERASE}${bar}` },
      { stream: 'stderr', text: ERASE },
      { stream: 'stdout', text: 'Worker remote-1 joined.\n' },
      { stream: 'stderr', text: `${ERASE}${bar}` },
    ]);
    // A line written in pieces gets the bar back only once it is whole.
    const pieces = fake.log.length;
    r.reporter.output!.stderr.write('half a ');
    r.reporter.output!.stderr.write('line\n');
    expect(fake.log.slice(pieces).map((w) => w.text)).toEqual([
      ERASE,
      'half a ',
      'line\n',
      `${ERASE}${bar}`,
    ]);
  });

  it('replaces the bar with the epoch summary, and ends with a Done summary and no bar', () => {
    const fake = fakeStreams({ stdoutTTY: true, stderrTTY: true, columns: 160 });
    const r = reporterAt(fake.streams);
    r.reporter.started(STARTED);
    runSteps(r, 1, 938, 100);
    // The evaluation takes 2 s after the last step.
    r.at(937 * 100 + 2000);
    const before = fake.log.length;
    r.reporter.epochEnd({ ...EPOCH_END, step_seconds: 0.0999 });
    expect(fake.log.slice(before)).toEqual([
      { stream: 'stderr', text: ERASE },
      {
        stream: 'stdout',
        // 937 timed steps of 0.1 s, the first step counted at that mean, and the evaluation.
        text: 'Epoch 1/5  938/938  1m 36s  100ms/step  loss 0.4123  acc 85.12%  test loss 0.3561  test acc 87.40%  312 img/s\n',
      },
    ]);
    r.at(200_000);
    r.reporter.done({
      ...EPOCH_END,
      model_path: '/runs/a/model',
      summary_path: '/runs/a/summary.json',
    });
    expect(fake.text('stdout').split('\n').slice(-5)).toEqual([
      'Done in 3m 20s: 1 epoch, test accuracy 87.40% (loss 0.3561).',
      'Model: /runs/a/model',
      'Summary: /runs/a/summary.json',
      'Worker logs: /runs/a/logs',
      '',
    ]);
    // Nothing live is left on the terminal after the end.
    r.reporter.close?.();
    expect(fake.log.at(-1)).toEqual({ stream: 'stdout', text: 'Worker logs: /runs/a/logs\n' });
  });

  it('says where the local workers log in its first lines', () => {
    const fake = fakeStreams({ stdoutTTY: true, stderrTTY: true, columns: 160 });
    const r = reporterAt(fake.streams);
    r.reporter.started(STARTED);
    const lines = fake.text('stdout').split('\n');
    expect(lines[0]).toBe(
      'Training seed-cnn on fashion-mnist (distributed, backend wasm): 1,413,834 parameters, 60,000 training / 10,000 test images, 5 epochs of 938 steps at batch 64. Output: /runs/a',
    );
    expect(lines[1]).toBe(
      'Local worker logs: /runs/a/logs (one file per worker; their warnings and errors show here too).',
    );
  });

  it('reports a worker that leaves during the run, and none when the job ends and stops them', () => {
    const fake = fakeStreams({ stdoutTTY: true, stderrTTY: true, columns: 160 });
    const r = reporterAt(fake.streams);
    r.reporter.workerLeft({ worker: 'local-2', reason: 'its stream failed (reset)', workers: 1 });
    r.reporter.workerLeft({
      worker: 'local-1',
      reason: 'told to stop: Training finished',
      workers: 0,
      job_ended: true,
    });
    expect(fake.text('stdout')).toBe(
      'Worker local-2 left: its stream failed (reset); 1 worker remaining.\n',
    );
  });

  it('erases a bar left up when the run fails, so the reason is not written onto it', () => {
    const fake = fakeStreams({ stdoutTTY: true, stderrTTY: true, columns: 160 });
    const r = reporterAt(fake.streams);
    runSteps(r, 1, 5, 100);
    r.reporter.close?.();
    expect(fake.log.at(-1)).toEqual({ stream: 'stderr', text: ERASE });
  });
});

describe('createTextReporter without a terminal', () => {
  it('prints a plain line every tenth of an epoch and the summary, with no escape codes', () => {
    const fake = fakeStreams({ stdoutTTY: false, stderrTTY: false });
    const r = reporterAt(fake.streams);
    r.reporter.started(STARTED);
    runSteps(r, 1, 938, 100);
    r.at(937 * 100 + 2000);
    r.reporter.epochEnd(EPOCH_END);
    const lines = fake.text('stdout').trimEnd().split('\n');
    const progressLines = lines.filter((l) => l.includes('%)'));
    expect(progressLines.map((l) => l.match(/\((\d+)%\)/)![1])).toEqual([
      '10',
      '20',
      '30',
      '40',
      '50',
      '60',
      '70',
      '80',
      '90',
    ]);
    // (844 + 4 x 938) steps x 0.1 s + 5 guessed evaluations of 5.2 s = 485.6 s.
    expect(progressLines[0]).toBe(
      'Epoch 1/5  94/938 (10%)  ETA 1:24 (run 8:06)  loss 0.4123  acc 85.1%  312 img/s',
    );
    expect(lines.at(-1)).toMatch(/^Epoch 1\/5 {2}938\/938 {2}1m 36s/);
    expect(fake.text('stderr')).toBe('');
    expect(fake.log.map((w) => w.text).join('')).not.toContain('\x1b');
    // Log lines pass straight through: there is no bar to keep them out of.
    r.reporter.output!.stderr.write('a log line\n');
    expect(fake.text('stderr')).toBe('a log line\n');
  });

  it('prints a line at least every 30 s when a tenth of an epoch takes longer', () => {
    const fake = fakeStreams({ stdoutTTY: false, stderrTTY: false });
    const r = reporterAt(fake.streams);
    // 938 steps of 4 s: a tenth is 6 minutes, so the 30 s rule decides.
    runSteps(r, 1, 30, 4000);
    const lines = fake.text('stdout').trimEnd().split('\n');
    // At steps 9, 17 and 25: the first 30 s after the epoch's first report, then every 32 s.
    expect(lines.map((l) => l.split('  ')[1])).toEqual([
      '9/938 (0%)',
      '17/938 (1%)',
      '25/938 (2%)',
    ]);
  });

  it('with only stderr on a terminal, draws the bar there and writes plain lines to stdout', () => {
    const fake = fakeStreams({ stdoutTTY: false, stderrTTY: true, columns: 100 });
    const r = reporterAt(fake.streams);
    runSteps(r, 1, 200, 100);
    expect(fake.bars().length).toBeGreaterThan(10);
    expect(fake.text('stdout')).toContain('Epoch 1/5  94/938 (10%)');
  });
});

describe('formatProgressBar', () => {
  it('says -:-- for an ETA not known yet, and never exceeds the width', () => {
    const line = formatProgressBar(progress(1), { epoch: undefined, run: undefined }, 160);
    expect(line).toBe(
      'Epoch 1/5  [>.............................]    1/938  ETA -:--  loss 0.4123  acc 85.1%  312 img/s',
    );
    for (let columns = 1; columns <= 200; columns++) {
      const fitted = formatProgressBar(progress(412), { epoch: 41, run: 232 }, columns);
      expect(fitted.length, `${columns}`).toBeLessThanOrEqual(Math.max(1, columns - 1));
    }
  });
});
