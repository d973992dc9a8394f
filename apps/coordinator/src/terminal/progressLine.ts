/**
 * The text of a progress report: the live bar fitted to a terminal's width, or a plain line for
 * logs and pipes.
 *
 *     Epoch 1/5  [=========>....................]  412/938  ETA 0:41 (run 3:52)  loss 0.4123  acc 85.1%  312 img/s
 *
 * A narrow terminal first gets a shorter bar (30 characters down to 10), then loses the parts
 * least needed while training runs, in this order: images/s, the run's ETA, accuracy, loss, the
 * bar itself; what still does not fit is cut at the edge. The line is never wider than the
 * terminal: a line that wraps cannot be erased with one carriage return, and every redraw would
 * leave a copy behind.
 */
import type { StepProgress } from '@shardline/training';
import type { Eta } from './eta.js';
import { formatDuration, formatLoss, formatPercent, formatRate } from './format.js';

/** Widest bar, between its brackets (Keras draws 30). */
export const BAR_MAX = 30;
/** Narrowest bar worth drawing; below it the bar goes before the epoch and step counters do. */
export const BAR_MIN = 10;

const SEPARATOR = '  ';

/** `[=====>......]`, `width` characters between the brackets, filled to `fraction`. */
export function drawBar(fraction: number, width: number): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const filled = Math.floor(f * width);
  if (filled >= width) return `[${'='.repeat(width)}]`;
  return `[${'='.repeat(filled)}>${'.'.repeat(width - filled - 1)}]`;
}

/** The parts of a report, each already formatted. */
function parts(p: StepProgress, eta: Eta) {
  const total = String(p.stepsPerEpoch);
  const evaluating = p.stepInEpoch >= p.stepsPerEpoch;
  return {
    head: `Epoch ${p.epoch}/${p.epochs}`,
    // Padded to the total's width, so the bar and what follows do not shift as digits grow.
    count: `${String(p.stepInEpoch).padStart(total.length)}/${total}`,
    // The last step is done: the test-set evaluation runs until the epoch's summary line.
    eta: evaluating ? 'evaluating' : `ETA ${formatDuration(eta.epoch)}`,
    run: eta.run === undefined ? undefined : `(run ${formatDuration(eta.run)})`,
    loss: `loss ${formatLoss(p.loss)}`,
    acc: `acc ${formatPercent(p.accuracy, 1)}`,
    rate: formatRate(p.imagesPerSecond),
  };
}

type Optional = 'rate' | 'run' | 'acc' | 'loss';
/** What goes first when the terminal is too narrow. */
const DROP_ORDER: readonly Optional[] = ['rate', 'run', 'acc', 'loss'];

/**
 * The live bar for a terminal `columns` wide, at most `columns - 1` characters (writing the last
 * column makes some terminals wrap).
 *
 * @example
 * ```ts
 * formatProgressBar(progress, { epoch: 41, run: 232 }, 160);
 * // 'Epoch 1/5  [=========>....................]  412/938  ETA 0:41 (run 3:52)  loss 0.4123  acc 85.1%  312 img/s'
 * ```
 */
export function formatProgressBar(p: StepProgress, eta: Eta, columns: number): string {
  const width = Math.max(1, Math.floor(columns) - 1);
  const all = parts(p, eta);
  const fraction = p.stepsPerEpoch > 0 ? p.stepInEpoch / p.stepsPerEpoch : 0;
  const dropped = new Set<Optional>();
  const compose = (bar: string | undefined) => {
    const time = dropped.has('run') || all.run === undefined ? all.eta : `${all.eta} ${all.run}`;
    return [
      all.head,
      bar,
      all.count,
      time,
      dropped.has('loss') ? undefined : all.loss,
      dropped.has('acc') ? undefined : all.acc,
      dropped.has('rate') ? undefined : all.rate,
    ]
      .filter((part) => part !== undefined)
      .join(SEPARATOR);
  };
  for (let i = 0; i <= DROP_ORDER.length; i++) {
    // Everything but the bar, plus the bar's brackets and its separator.
    const room = width - compose(undefined).length - SEPARATOR.length - 2;
    if (room >= BAR_MIN) return compose(drawBar(fraction, Math.min(BAR_MAX, room)));
    const next = DROP_ORDER[i];
    if (next) dropped.add(next);
  }
  return compose(undefined).slice(0, width);
}

/**
 * A plain progress line, for output that is not a terminal (a pipe, a log file): no bar, the
 * share of the epoch done instead.
 *
 * @example
 * ```ts
 * formatProgressText(progress, { epoch: 41, run: 232 });
 * // 'Epoch 1/5  412/938 (44%)  ETA 0:41 (run 3:52)  loss 0.4123  acc 85.1%  312 img/s'
 * ```
 */
export function formatProgressText(p: StepProgress, eta: Eta): string {
  const all = parts(p, eta);
  const percent = p.stepsPerEpoch > 0 ? Math.floor((p.stepInEpoch / p.stepsPerEpoch) * 100) : 0;
  return [
    all.head,
    `${p.stepInEpoch}/${p.stepsPerEpoch} (${percent}%)`,
    all.run === undefined ? all.eta : `${all.eta} ${all.run}`,
    all.loss,
    all.acc,
    all.rate,
  ].join(SEPARATOR);
}
