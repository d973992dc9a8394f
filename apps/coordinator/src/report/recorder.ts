/**
 * The run record: every event of a run, one JSON object per line, in `<out>/events.jsonl`. The
 * objects are the ones `--log-format json` prints (`started`, `worker_joined`, `worker_left`,
 * `epoch_end`, `done`), plus a `step` event per training step that goes only to this file, so
 * stdout's contract stays what scripts expect. `report.html` is built from this file (and
 * summary.json), at the end of a run or later by `shardline-coordinator report`.
 *
 * Writes are synchronous appends of one whole line each (`appendFileSync`, O_APPEND): the line
 * is in the kernel before the step returns, so a crash or `process.exit` loses nothing already
 * reported, and a torn line can only be the last one (a power cut mid-write), which the reader
 * skips. One small append per step costs microseconds against steps of milliseconds or more.
 *
 * A fresh run starts a new file; a resumed run (`--resume`, its `started` event carries
 * `resumed_from_step`) appends to the run's file, after first ending any torn last line, so the
 * reader sees every session of the run (see record.ts for how it joins them).
 */
import { appendFileSync, closeSync, fstatSync, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Logger, toShardlineError } from '@shardline/core';
import type { StepProgress } from '@shardline/training';
import { createEventReporter, type Reporter, type TrainEvent } from '../reporter.js';

/** The run record's file name under `--out`. */
export const EVENTS_FILE = 'events.jsonl';

/**
 * The fields of a `step` event (besides `event` and `time`), as {@link stepEvent} makes them.
 * Those marked optional are there whenever the trainer reports them (Shardline's always does).
 */
export interface StepEventFields {
  /** Optimizer steps done in the run, this one included. */
  step: number;
  /** 1-based epoch, 1-based step within it, and the epoch's steps. */
  epoch: number;
  step_in_epoch: number;
  steps_per_epoch: number;
  /** This step's own loss and accuracy, over its global batch. */
  batch_loss?: number;
  batch_accuracy?: number;
  /** The epoch's means so far (what the progress bar shows). */
  running_loss: number;
  running_accuracy: number;
  /** Images behind the step, and this step's images per second. */
  samples?: number;
  images_per_second?: number;
  /** Seconds: the whole step, the slowest member's compute, the exchange, the optimizer. */
  step_seconds?: number;
  compute_seconds?: number;
  exchange_seconds?: number;
  optimizer_seconds?: number;
  /** Members that computed the step. */
  workers?: number;
}

// Microseconds are finer than any step's timing noise; full float64 digits would only add bytes
// to a file with one line per step.
const micro = (seconds: number | undefined) =>
  seconds === undefined ? undefined : Math.round(seconds * 1e6) / 1e6;

/** A trainer's step progress as the fields of a `step` event; fields it lacks are left out. */
export function stepEvent(p: StepProgress): StepEventFields {
  const fields: Record<string, number | undefined> = {
    // A trainer that does not count steps globally: the position, as if no epoch was cut short.
    step: p.step ?? (p.epoch - 1) * p.stepsPerEpoch + p.stepInEpoch,
    epoch: p.epoch,
    step_in_epoch: p.stepInEpoch,
    steps_per_epoch: p.stepsPerEpoch,
    batch_loss: p.stepLoss,
    batch_accuracy: p.stepAccuracy,
    running_loss: p.loss,
    running_accuracy: p.accuracy,
    samples: p.samples,
    images_per_second:
      p.samples === undefined || p.stepSeconds === undefined
        ? undefined
        : Math.round((p.samples / Math.max(p.stepSeconds, 1e-9)) * 100) / 100,
    step_seconds: micro(p.stepSeconds),
    compute_seconds: micro(p.computeSeconds),
    exchange_seconds: micro(p.exchangeSeconds),
    optimizer_seconds: micro(p.optimizerSeconds),
    workers: p.workers,
  };
  return Object.fromEntries(
    Object.entries(fields).filter(([, v]) => v !== undefined),
  ) as unknown as StepEventFields;
}

/** Whether the file at `path` exists, is not empty and does not end with a newline. */
function endsTorn(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return false;
  }
  try {
    const size = fstatSync(fd).size;
    if (size === 0) return false;
    const last = Buffer.alloc(1);
    readSync(fd, last, 0, 1, size - 1);
    return last[0] !== 0x0a;
  } finally {
    closeSync(fd);
  }
}

/**
 * Wraps `inner` so that every event it receives is also appended to `<out>/events.jsonl`, plus
 * one `step` event per training step. The folder comes from the `started` event (`out`), which
 * the trainers send once `--out` is checked, so a run refused before it starts writes nothing
 * there; events before `started` are held and written right after it.
 *
 * A write that fails (disk full, folder removed) does not fail the run: it is logged once, and
 * the run goes on without its record (and so without report.html).
 *
 * @example
 * ```ts
 * const reporter = recordRunEvents(createTextReporter(streams), logger);
 * await trainInProcess(config, reporter, logger);  // <out>/events.jsonl
 * ```
 */
export function recordRunEvents(inner: Reporter, logger: Logger): Reporter {
  let path: string | undefined;
  let failed = false;
  const held: string[] = [];
  const append = (lines: string) => {
    if (failed || path === undefined) return;
    try {
      appendFileSync(path, lines);
    } catch (error) {
      failed = true;
      logger.warn(
        `cannot write the run record ${path}: ${toShardlineError(error).message}. Training goes on without it, and report.html will not be written`,
      );
    }
  };
  const write = (event: TrainEvent) => {
    const line = `${JSON.stringify(event)}\n`;
    if (event.event === 'started' && typeof event.out === 'string') {
      path = join(event.out, EVENTS_FILE);
      const resumed = event.resumed_from_step !== undefined;
      try {
        if (!resumed) writeFileSync(path, '');
        else if (endsTorn(path)) appendFileSync(path, '\n');
      } catch {
        // append() below reports the same failure once.
      }
      append(line + held.splice(0).join(''));
    } else if (path === undefined) {
      held.push(line);
    } else {
      append(line);
    }
  };
  const file = createEventReporter(write);
  return {
    started(info) {
      inner.started(info);
      file.started(info);
    },
    workerJoined(info) {
      inner.workerJoined(info);
      file.workerJoined(info);
    },
    workerLeft(info) {
      inner.workerLeft(info);
      file.workerLeft(info);
    },
    progress(p) {
      inner.progress(p);
      write({ event: 'step', time: new Date().toISOString(), ...stepEvent(p) });
    },
    epochEnd(m) {
      inner.epochEnd(m);
      file.epochEnd(m);
    },
    done(m) {
      inner.done(m);
      file.done(m);
    },
  };
}
