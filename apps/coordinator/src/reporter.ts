/**
 * What a training run tells the outside world. With `--log-format json` every event is one JSON
 * object per line on stdout (the contract scripts rely on: `started`, `worker_joined`,
 * `worker_left`, `epoch_end`, `done`); with `text` people get readable lines on stdout and, on
 * a terminal, a progress bar per epoch on stderr.
 */
import type { EpochMetrics, TrainingEvents } from '@shardline/training';

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

/** Receives the run's events: the trainer's (progress, epoch ends) and the job's around them. */
export interface Reporter extends TrainingEvents {
  started(info: StartedInfo): void;
  workerJoined(info: { worker: string; [key: string]: unknown }): void;
  workerLeft(info: { worker: string; reason: string; [key: string]: unknown }): void;
  done(
    metrics: EpochMetrics & { model_path: string; summary_path: string; [key: string]: unknown },
  ): void;
}

/** Where a reporter writes; process.stdout / process.stderr in the CLI. */
export interface ReporterStreams {
  stdout: { write(chunk: string): unknown };
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

const plural = (n: number, word: string) =>
  `${n.toLocaleString('en-US')} ${word}${n === 1 ? '' : 's'}`;
const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
const num = (x: number) => x.toFixed(4);

/** A reporter for people: summary lines on stdout, a progress bar on a terminal's stderr. */
export function createTextReporter(streams: ReporterStreams): Reporter {
  const tty = streams.stderr.isTTY === true;
  let lastDraw = 0;
  const clear = () => {
    if (tty) streams.stderr.write('\r\x1b[2K');
  };
  const line = (text: string) => {
    clear();
    streams.stdout.write(`${text}\n`);
  };
  return {
    started(info) {
      line(
        `Training ${info.model} on ${info.dataset} (${info.mode}, backend ${info.backend}): ` +
          `${info.parameters.toLocaleString('en-US')} parameters, ${info.train_samples.toLocaleString('en-US')} training / ` +
          `${info.test_samples.toLocaleString('en-US')} test images, ${plural(info.epochs, 'epoch')} of ${plural(info.steps_per_epoch, 'step')} ` +
          `at batch ${info.batch_size}. Output: ${info.out}`,
      );
    },
    workerJoined: (info) => line(`Worker ${info.worker} joined.`),
    workerLeft: (info) => line(`Worker ${info.worker} left: ${info.reason}.`),
    progress(p) {
      if (!tty) return;
      const now = Date.now();
      if (now - lastDraw < 100 && p.stepInEpoch < p.stepsPerEpoch) return;
      lastDraw = now;
      const width = Math.max(10, Math.min(30, (streams.stderr.columns ?? 80) - 70));
      const done = Math.round((p.stepInEpoch / p.stepsPerEpoch) * width);
      streams.stderr.write(
        `\r\x1b[2KEpoch ${p.epoch}/${p.epochs} [${'='.repeat(done)}${' '.repeat(width - done)}] ` +
          `${p.stepInEpoch}/${p.stepsPerEpoch} loss ${num(p.loss)} acc ${pct(p.accuracy)} ${p.imagesPerSecond.toFixed(1)} img/s`,
      );
    },
    epochEnd(m) {
      line(
        `Epoch ${m.epoch}: train loss ${num(m.train_loss)} acc ${pct(m.train_accuracy)} | ` +
          `test loss ${num(m.test_loss)} acc ${pct(m.test_accuracy)} | ${m.images_per_second.toFixed(1)} img/s, step ${m.step}`,
      );
    },
    done(m) {
      line(
        `Done after ${plural(m.epoch, 'epoch')}: test accuracy ${pct(m.test_accuracy)}. Model: ${m.model_path}; summary: ${m.summary_path}`,
      );
    },
  };
}
