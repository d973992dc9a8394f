/**
 * Reads a run record (`events.jsonl`, see recorder.ts) back into one history: the steps, epochs
 * and membership changes of the run, as the report and its charts use them.
 *
 * Sessions: each `started` event begins one. A `started` without `resumed_from_step` is a fresh
 * run and discards whatever came before it. A resumed session (`resumed_from_step: R`) continues
 * the earlier ones: their steps and epochs after step R are dropped, because the resumed session
 * ran those steps again from the checkpoint at R, and its own events replace them. The result
 * reads as one uninterrupted run, with a list of the sessions that made it. Membership changes
 * are kept from every session: they happened, whatever was redone later.
 *
 * A session's events after its `done` (workers stopping as the job shuts down) are left out, so
 * a report built at the end of the run (before `done` is written) and one rebuilt from the
 * finished file read the same history.
 *
 * A torn last line (the run died mid-write) is skipped silently; an unreadable line anywhere
 * else is skipped and counted, so one damaged line does not cost the whole report.
 */
import { readFile } from 'node:fs/promises';
import { ShardlineError } from '@shardline/core';
import type { EpochMetrics } from '@shardline/training';

/** One parsed line of events.jsonl: `event`, `time` and the event's fields. */
export interface RecordedEvent {
  event: string;
  time: string;
  [field: string]: unknown;
}

/** What {@link parseEventLines} read from a record's text. */
export interface ParsedEvents {
  events: RecordedEvent[];
  /** 1-based numbers of lines that were not events (other than a torn last line). */
  badLines: number[];
  /** Whether the text ended in a partial line that was skipped. */
  tornTail: boolean;
}

function asEvent(line: string): RecordedEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const event = value as Record<string, unknown>;
  if (typeof event.event !== 'string' || typeof event.time !== 'string') return undefined;
  return event as RecordedEvent;
}

/**
 * Parses the text of an events.jsonl: one event per line, blank lines ignored. A last line
 * without its newline that does not parse is a torn write and is skipped.
 *
 * @example
 * ```ts
 * parseEventLines('{"event":"started","time":"..."}\n{"event":"st');
 * // { events: [{ event: 'started', ... }], badLines: [], tornTail: true }
 * ```
 */
export function parseEventLines(text: string): ParsedEvents {
  const lines = text.split('\n');
  const tail = lines.pop() ?? '';
  const events: RecordedEvent[] = [];
  const badLines: number[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const event = asEvent(line);
    if (event) events.push(event);
    else badLines.push(i + 1);
  });
  let tornTail = false;
  if (tail.trim() !== '') {
    // Every line is written with its newline in one append; a tail without one is cut short,
    // unless the cut fell exactly between the object and its newline.
    const event = asEvent(tail);
    if (event) events.push(event);
    else tornTail = true;
  }
  return { events, badLines, tornTail };
}

/** One training step of the record (a `step` event's fields). */
export interface StepRecord {
  step: number;
  epoch: number;
  step_in_epoch: number;
  batch_loss: number;
  batch_accuracy: number;
  running_loss: number;
  running_accuracy: number;
  samples: number;
  images_per_second: number;
  step_seconds: number;
  compute_seconds: number;
  exchange_seconds: number;
  optimizer_seconds: number;
  workers: number;
  /** ISO time the step ended. */
  time: string;
}

/**
 * One epoch's end: the `epoch_end` event's fields (the trainer's {@link EpochMetrics}, the one
 * contract for them) and when it happened. `misclassified` may be there too; the report does
 * not use it.
 */
export type EpochRecord = EpochMetrics & { time: string };

/** A worker joining or leaving. */
export interface MembershipChange {
  change: 'joined' | 'left';
  worker: string;
  /** ISO time of the event. */
  time: string;
  /** Steps done in the run when it happened (the last step recorded before it). */
  step: number;
  /** Workers attached right after it, when the event says. */
  workers?: number;
  /** Why it left. */
  reason?: string;
  hostname?: string;
  backend?: string;
  /** 0-based index of the session it happened in. */
  session: number;
}

/** One process's part of the run: a fresh start or a resume. */
export interface SessionRecord {
  /** ISO time of its `started` event, and of its last event (its `done` if it finished). */
  startedAt: string;
  endedAt: string;
  /** The checkpoint's step it resumed from; absent for the fresh start. */
  resumedFromStep?: number;
  /** Whether it ended with a `done` event. */
  finished: boolean;
}

/** A whole run, as the report reads it. */
export interface RecordedRun {
  /** The latest session's `started` event: the run's settings as last started. */
  started: RecordedEvent;
  /** The class names in label order (`started.class_names`; else the indices as strings). */
  classNames: string[];
  sessions: SessionRecord[];
  /** Steps in order, one per step of the run. */
  steps: StepRecord[];
  /** Epoch ends in order. */
  epochs: EpochRecord[];
  membership: MembershipChange[];
  /** The `done` event, when the run finished. */
  done?: RecordedEvent;
  /** Lines that could not be read (see {@link ParsedEvents}). */
  badLines: number[];
  tornTail: boolean;
}

const num = (value: unknown): number => (typeof value === 'number' ? value : Number.NaN);
const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

function toStep(e: RecordedEvent): StepRecord {
  return {
    step: num(e.step),
    epoch: num(e.epoch),
    step_in_epoch: num(e.step_in_epoch),
    batch_loss: num(e.batch_loss),
    batch_accuracy: num(e.batch_accuracy),
    running_loss: num(e.running_loss),
    running_accuracy: num(e.running_accuracy),
    samples: num(e.samples),
    images_per_second: num(e.images_per_second),
    step_seconds: num(e.step_seconds),
    compute_seconds: num(e.compute_seconds),
    exchange_seconds: num(e.exchange_seconds),
    optimizer_seconds: num(e.optimizer_seconds),
    workers: num(e.workers),
    time: e.time,
  };
}

function toEpoch(e: RecordedEvent): EpochRecord {
  const { event: _event, ...fields } = e;
  return {
    ...(fields as unknown as Omit<EpochRecord, 'time'>),
    epoch: num(e.epoch),
    step: num(e.step),
    time: e.time,
  };
}

function toChange(e: RecordedEvent, step: number, session: number): MembershipChange {
  const workers = e.workers;
  const reason = str(e.reason);
  const hostname = str(e.hostname);
  const backend = str(e.backend);
  return {
    change: e.event === 'worker_joined' ? 'joined' : 'left',
    worker: str(e.worker) ?? '?',
    time: e.time,
    step,
    ...(typeof workers === 'number' ? { workers } : {}),
    ...(reason === undefined ? {} : { reason }),
    ...(hostname === undefined ? {} : { hostname }),
    ...(backend === undefined ? {} : { backend }),
    session,
  };
}

/**
 * Joins parsed events into one run (see the module comment for sessions, resumes and `done`).
 * Throws NOT_FOUND when there is no `started` event: nothing was trained.
 */
export function joinRunEvents(parsed: ParsedEvents, source = 'events.jsonl'): RecordedRun {
  let started: RecordedEvent | undefined;
  let sessions: SessionRecord[] = [];
  let steps: StepRecord[] = [];
  let epochs: EpochRecord[] = [];
  let membership: MembershipChange[] = [];
  let done: RecordedEvent | undefined;
  let lastStep = 0;
  let session: SessionRecord | undefined;
  for (const e of parsed.events) {
    if (e.event === 'started') {
      const from = e.resumed_from_step;
      started = e;
      done = undefined;
      if (typeof from === 'number') {
        steps = steps.filter((s) => s.step <= from);
        epochs = epochs.filter((x) => x.step <= from);
        lastStep = from;
      } else {
        sessions = [];
        steps = [];
        epochs = [];
        membership = [];
        lastStep = 0;
      }
      session = {
        startedAt: e.time,
        endedAt: e.time,
        ...(typeof from === 'number' ? { resumedFromStep: from } : {}),
        finished: false,
      };
      sessions.push(session);
      continue;
    }
    // Before any start, or after this session's done: not part of the training history.
    if (!session || session.finished) continue;
    session.endedAt = e.time;
    switch (e.event) {
      case 'step': {
        const step = toStep(e);
        steps.push(step);
        lastStep = step.step;
        break;
      }
      case 'epoch_end':
        epochs.push(toEpoch(e));
        break;
      case 'worker_joined':
      case 'worker_left':
        membership.push(toChange(e, lastStep, sessions.length - 1));
        break;
      case 'done':
        done = e;
        session.finished = true;
        break;
      default:
        // Events of later releases: ignored, so an older reader still builds a report.
        break;
    }
  }
  if (!started) {
    throw new ShardlineError(
      'NOT_FOUND',
      `${source} holds no started event (found ${parsed.events.length} events${parsed.tornTail ? ' and a torn last line' : ''}): the run stopped before training began, so there is nothing to report. Train again with the same --out.`,
    );
  }
  const names = started.class_names;
  const classNames =
    Array.isArray(names) && names.every((n) => typeof n === 'string')
      ? (names as string[])
      : classIndices(epochs);
  return {
    started,
    classNames,
    sessions,
    steps,
    epochs,
    membership,
    ...(done ? { done } : {}),
    badLines: parsed.badLines,
    tornTail: parsed.tornTail,
  };
}

/** Class names for a record whose `started` names none: the indices, as many as the matrix has. */
function classIndices(epochs: readonly EpochRecord[]): string[] {
  const size = epochs.findLast((e) => e.confusion)?.confusion?.length ?? 0;
  return Array.from({ length: size }, (_, i) => String(i));
}

/** Reads and joins `path` (an events.jsonl). Throws NOT_FOUND when it holds no run. */
export async function readRunRecord(path: string): Promise<RecordedRun> {
  return joinRunEvents(parseEventLines(await readFile(path, 'utf8')), path);
}
