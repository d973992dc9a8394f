/**
 * What a training run tells the outside world. With `--log-format json` every event is one JSON
 * object per line on stdout (the contract scripts rely on: `started`, `worker_joined`,
 * `worker_left`, `epoch_end`, `done`); with `text` people get what Keras prints: a live progress
 * bar per epoch on a terminal's stderr, one summary line per epoch and a `Done` summary on
 * stdout, and plain progress lines instead of the bar when the output is not a terminal.
 */
import type { EpochMetrics, StepProgress, TrainingEvents } from '@shardline/training';
import { workerLogsDir } from './distributed/localProcesses.js';
import { createEtaClock, type EtaClock } from './terminal/eta.js';
import {
  formatCount,
  formatElapsed,
  formatLoss,
  formatPercent,
  formatRate,
  plural,
} from './terminal/format.js';
import { createLiveOutput, type LiveOutput } from './terminal/liveOutput.js';
import { formatProgressBar, formatProgressText } from './terminal/progressLine.js';

/** Fields of the `started` event. */
export interface StartedInfo {
  mode: 'in-process' | 'distributed';
  model: string;
  dataset: string;
  backend: string;
  parameters: number;
  train_samples: number;
  test_samples: number;
  epochs: number;
  batch_size: number;
  steps_per_epoch: number;
  out: string;
  [key: string]: unknown;
}

/** Fields of the `worker_left` event. */
export interface WorkerLeftInfo {
  worker: string;
  reason: string;
  /**
   * True when the worker left because the job ended and the coordinator told it to stop (the
   * normal end, or a stop on request or failure): not a departure anyone needs to hear about.
   * Absent when it left during the run.
   */
  job_ended?: boolean;
  [key: string]: unknown;
}

/** Receives the run's events: the trainer's (progress, epoch ends) and the job's around them. */
export interface Reporter extends TrainingEvents {
  started(info: StartedInfo): void;
  workerJoined(info: { worker: string; [key: string]: unknown }): void;
  workerLeft(info: WorkerLeftInfo): void;
  done(
    metrics: EpochMetrics & { model_path: string; summary_path: string; [key: string]: unknown },
  ): void;
  /**
   * The streams everything else printed during the run must go through (log records, local
   * workers' warnings): the text reporter's erase its progress bar before each line and redraw
   * it after, so no line lands inside the bar. Absent: write to the streams it was given.
   */
  readonly output?: ReporterStreams;
  /** Erases whatever the reporter still shows live (a progress bar), before the last words. */
  close?(): void;
}

/** Where a reporter writes; process.stdout / process.stderr in the CLI. */
export interface ReporterStreams {
  stdout: { write(chunk: string): unknown; isTTY?: boolean };
  stderr: { write(chunk: string): unknown; isTTY?: boolean; columns?: number };
}

/**
 * One event of a run, as `--log-format json` prints it and `train({ onEvent })` receives it:
 * `started`, `worker_joined`, `worker_left`, `epoch_end` or `done`, its time, and its fields.
 */
export type TrainEvent = { event: string; time: string } & Record<string, unknown>;

/** A reporter that hands each event, as an object with `event` and `time`, to `onEvent`. */
export function createEventReporter(onEvent: (event: TrainEvent) => void): Reporter {
  const emit = (event: string, fields: object) =>
    onEvent({ event, time: new Date().toISOString(), ...fields });
  return {
    started: (info) => emit('started', info),
    workerJoined: (info) => emit('worker_joined', info),
    workerLeft: (info) => emit('worker_left', info),
    progress: () => {},
    epochEnd: (m) => emit('epoch_end', m),
    done: (m) => emit('done', m),
  };
}

/** A reporter that prints one JSON object per line, each with an `event` field and a `time`. */
export function createJsonReporter(streams: ReporterStreams): Reporter {
  return createEventReporter((event) => streams.stdout.write(`${JSON.stringify(event)}\n`));
}

/** Options of {@link createTextReporter}. */
export interface TextReporterOptions {
  /** The clock, in milliseconds (tests pass a fake one). Default: Date.now. */
  now?: () => number;
}

/** Fewest milliseconds between two redraws of the bar: at most 10 a second. */
export const REDRAW_MS = 100;
/** Without a terminal, a progress line every tenth of an epoch, or after this long. */
export const PLAIN_LINE_MS = 30_000;

/**
 * A reporter for people, printing what Keras prints:
 *
 *     Epoch 1/5  [=========>....................]  412/938  ETA 0:41 (run 3:52)  loss 0.4123  acc 85.1%  312 img/s
 *     Epoch 1/5  938/938  2m 05s  133ms/step  loss 0.4123  acc 85.12%  test loss 0.3561  test acc 87.40%  312 img/s
 *
 * On a terminal (stderr a TTY) the first line is a live bar, redrawn at most 10 times a second
 * and fitted to the terminal's width; the second is the epoch's summary on stdout, which
 * replaces the bar. When stdout is not a terminal (a pipe, a file) it also gets a plain progress
 * line every tenth of an epoch or every 30 s, whichever comes first; without a terminal at all
 * those lines are all the progress there is. Print anything else through {@link Reporter.output}
 * and call {@link Reporter.close} before the program's last words.
 */
export function createTextReporter(
  streams: ReporterStreams,
  options: TextReporterOptions = {},
): Reporter {
  const now = options.now ?? Date.now;
  const startedAt = now();
  const out: LiveOutput = createLiveOutput(streams);
  // The bar shows progress on a terminal; plain lines show it wherever stdout goes otherwise.
  const plainLines = !out.live || streams.stdout.isTTY !== true;
  let clock: EtaClock = createEtaClock();
  let last: StepProgress | undefined;
  let lastDraw = Number.NEGATIVE_INFINITY;
  let plain = { epoch: 0, step: 0, at: 0 };
  let workerLogs: string | undefined;
  const line = (text: string) => out.stdout.write(`${text}\n`);

  const drawBar = (p: StepProgress, t: number, eta: ReturnType<EtaClock['step']>) => {
    const firstOfEpoch = last?.epoch !== p.epoch;
    if (!firstOfEpoch && t - lastDraw < REDRAW_MS && p.stepInEpoch < p.stepsPerEpoch) return;
    lastDraw = t;
    out.setLine(formatProgressBar(p, eta, out.columns()));
  };
  const printPlain = (p: StepProgress, t: number, eta: ReturnType<EtaClock['step']>) => {
    if (plain.epoch !== p.epoch) plain = { epoch: p.epoch, step: p.stepInEpoch - 1, at: t };
    // The epoch's last step is followed by its summary line; no progress line for it.
    if (p.stepInEpoch >= p.stepsPerEpoch) return;
    const tenth = (step: number) => Math.floor((step * 10) / p.stepsPerEpoch);
    if (tenth(p.stepInEpoch) <= tenth(plain.step) && t - plain.at < PLAIN_LINE_MS) return;
    plain = { epoch: p.epoch, step: p.stepInEpoch, at: t };
    line(formatProgressText(p, eta));
  };

  return {
    output: out,
    started(info) {
      clock = createEtaClock({
        trainSamples: info.train_samples,
        testSamples: info.test_samples,
        batchSize: info.batch_size,
      });
      const resumed =
        typeof info.resumed_from_step === 'number'
          ? `, resuming from step ${formatCount(info.resumed_from_step)}`
          : '';
      line(
        `Training ${info.model} on ${info.dataset} (${info.mode}, backend ${info.backend}): ` +
          `${formatCount(info.parameters)} parameters, ${formatCount(info.train_samples)} training / ` +
          `${formatCount(info.test_samples)} test images, ${plural(info.epochs, 'epoch')} of ${plural(info.steps_per_epoch, 'step')} ` +
          `at batch ${info.batch_size}${resumed}. Output: ${info.out}`,
      );
      if (typeof info.local_workers === 'number' && info.local_workers > 0) {
        workerLogs = workerLogsDir(info.out);
        line(
          `Local worker logs: ${workerLogs} (one file per worker; their warnings and errors show here too).`,
        );
      }
      // Said here too: the log line that also gives it is hidden by --log-level warn.
      if (typeof info.dashboard === 'string') {
        line(`Dashboard: ${info.dashboard} (live curves, workers, confusion matrix; /metrics).`);
      }
    },
    workerJoined: (info) => line(`Worker ${info.worker} joined.`),
    workerLeft(info) {
      // The job's end stops every worker: that is the run finishing, not a worker leaving.
      if (info.job_ended === true) return;
      const remaining =
        typeof info.workers === 'number' ? `; ${plural(info.workers, 'worker')} remaining` : '';
      line(`Worker ${info.worker} left: ${info.reason}${remaining}.`);
    },
    progress(p) {
      const t = now();
      const eta = clock.step(p, t);
      if (out.live) drawBar(p, t, eta);
      if (plainLines) printPlain(p, t, eta);
      last = p;
    },
    epochEnd(m) {
      clock.epochEnded(now());
      out.setLine(undefined);
      line(formatEpochSummary(m, last, clock.lastEpoch()));
    },
    done(m) {
      out.setLine(undefined);
      line(
        `Done in ${formatElapsed((now() - startedAt) / 1000)}: ${plural(m.epoch, 'epoch')}, ` +
          `test accuracy ${formatPercent(m.test_accuracy)} (loss ${formatLoss(m.test_loss)}).`,
      );
      line(`Model: ${m.model_path}`);
      line(`Summary: ${m.summary_path}`);
      if (workerLogs !== undefined) line(`Worker logs: ${workerLogs}`);
    },
    close: () => out.setLine(undefined),
  };
}

/**
 * An epoch's summary line: where it stands, how long it took, train and test numbers rounded
 * for people, and the throughput.
 */
function formatEpochSummary(
  m: EpochMetrics,
  last: StepProgress | undefined,
  timed: { seconds: number; stepSeconds: number | undefined } | undefined,
): string {
  const ofEpochs =
    last && last.epoch === m.epoch ? `Epoch ${m.epoch}/${last.epochs}` : `Epoch ${m.epoch}`;
  const steps =
    last && last.epoch === m.epoch ? `${last.stepInEpoch}/${last.stepsPerEpoch}` : undefined;
  // The trainer's own mean step time when it has one; the reporter's clock otherwise.
  const stepSeconds = m.step_seconds ?? timed?.stepSeconds;
  return [
    ofEpochs,
    steps,
    timed ? formatElapsed(timed.seconds) : undefined,
    stepSeconds === undefined ? undefined : `${formatElapsed(stepSeconds)}/step`,
    `loss ${formatLoss(m.train_loss)}`,
    `acc ${formatPercent(m.train_accuracy)}`,
    `test loss ${formatLoss(m.test_loss)}`,
    `test acc ${formatPercent(m.test_accuracy)}`,
    formatRate(m.images_per_second),
  ]
    .filter((part) => part !== undefined)
    .join('  ');
}
