/**
 * Learning-rate schedules: pure functions from the global step (0-based) to a learning rate,
 * so every process computes the same rate and a resumed run continues the same curve.
 */
import { ShardlineError } from './errors.js';

/** A learning rate as a function of the 0-based global step. */
export type LearningRateSchedule = (step: number) => number;

/** The schedule shapes Shardline provides. */
export const ScheduleKinds = ['constant', 'step', 'exponential', 'cosine'] as const;
/** One of {@link ScheduleKinds}. */
export type ScheduleKind = (typeof ScheduleKinds)[number];

/** Options for {@link createSchedule}. */
export interface ScheduleOptions {
  kind: ScheduleKind;
  /** The peak learning rate (after warmup). */
  baseLr: number;
  /** step: multiply by `gamma` every `stepSize` steps. exponential: by `gamma` each step. */
  gamma?: number;
  stepSize?: number;
  /** cosine: decay from baseLr to `minLr` over `totalSteps`. */
  totalSteps?: number;
  minLr?: number;
  /**
   * Linear warmup from `warmupFrom` x baseLr to baseLr over the first `warmupSteps` steps, as
   * Goyal et al. recommend (and Horovod documents) for large global batches. Default 0.
   */
  warmupSteps?: number;
  warmupFrom?: number;
}

function positive(name: string, value: number | undefined, fallback?: number): number {
  const v = value ?? fallback;
  if (v === undefined || !Number.isFinite(v) || v <= 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Schedule option ${name} must be a positive number, found ${value}.`,
    );
  }
  return v;
}

/**
 * Creates a learning-rate schedule.
 *
 * @example
 * ```ts
 * const lr = createSchedule({ kind: 'cosine', baseLr: 0.01, totalSteps: 1000, warmupSteps: 100 });
 * lr(0); // 0.0001 (warming up)
 * ```
 */
export function createSchedule(options: ScheduleOptions): LearningRateSchedule {
  const base = positive('baseLr', options.baseLr);
  let decay: LearningRateSchedule;
  switch (options.kind) {
    case 'constant':
      decay = () => base;
      break;
    case 'step': {
      const gamma = positive('gamma', options.gamma, 0.1);
      const every = positive('stepSize', options.stepSize);
      decay = (s) => base * gamma ** Math.floor(s / every);
      break;
    }
    case 'exponential': {
      const gamma = positive('gamma', options.gamma, 0.999);
      decay = (s) => base * gamma ** s;
      break;
    }
    case 'cosine': {
      const total = positive('totalSteps', options.totalSteps);
      const min = options.minLr ?? 0;
      decay = (s) =>
        min + 0.5 * (base - min) * (1 + Math.cos((Math.PI * Math.min(s, total)) / total));
      break;
    }
    default:
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Unknown schedule "${String(options.kind)}": expected one of ${ScheduleKinds.join(', ')}.`,
      );
  }
  const warmup = options.warmupSteps ?? 0;
  if (warmup <= 0) return decay;
  const from = options.warmupFrom ?? 0.01;
  return (s) => (s < warmup ? decay(s) * (from + ((1 - from) * s) / warmup) : decay(s));
}
