/**
 * The run's charts as Vega-Lite specs: loss, accuracy, step time split by where it goes,
 * the confusion matrix and workers over time. Each spec reads named datasets
 * ({@link DATASETS}) rather than inline values, so the same spec serves a static report (the rows
 * attached with {@link withData} and rendered to SVG, svg.ts) and a live page (vega-embed in the
 * browser, rows streamed into the named datasets with `view.insert(name, rows)` as they come).
 *
 * Everything drawn here is drawn by Vega: axes, legends, stacking, the moving average (a
 * `window` transform) and the heat map's colour scale.
 */
import type { TopLevelSpec } from 'vega-lite';
import type { EpochRecord, MembershipChange, RecordedRun, StepRecord } from './record.js';

/** The names of the datasets the specs read; a live page streams rows into these. */
export const DATASETS = {
  /** One row per training step: {@link StepRecord}. */
  steps: 'steps',
  /** One row per finished epoch: {@link EpochRecord}. */
  epochs: 'epochs',
  /** One row per cell of the latest confusion matrix: {@link ConfusionCell}. */
  confusion: 'confusion',
  /** One row per worker joining or leaving: {@link MembershipChange}. */
  membership: 'membership',
} as const;

/** One cell of a confusion matrix, as the heat map reads it. */
export interface ConfusionCell {
  true_index: number;
  true_class: string;
  predicted_index: number;
  predicted_class: string;
  count: number;
  /** The cell's share of its row (of the images of that true class); 0 for an empty row. */
  row_fraction: number;
}

/** The rows of every dataset in {@link DATASETS}. */
export interface ChartData {
  steps: readonly StepRecord[];
  epochs: readonly EpochRecord[];
  confusion: readonly ConfusionCell[];
  membership: readonly MembershipChange[];
}

/** The cells of a confusion matrix (rows = true class), in row-major order. */
export function confusionCells(
  matrix: readonly (readonly number[])[],
  classNames: readonly string[],
): ConfusionCell[] {
  const name = (i: number) => classNames[i] ?? String(i);
  return matrix.flatMap((row, t) => {
    const total = row.reduce((a, b) => a + b, 0);
    return row.map((count, p) => ({
      true_index: t,
      true_class: name(t),
      predicted_index: p,
      predicted_class: name(p),
      count,
      row_fraction: total === 0 ? 0 : count / total,
    }));
  });
}

/** Every chart's rows from a recorded run; the confusion matrix is the last epoch's. */
export function chartData(run: RecordedRun): ChartData {
  const matrix = run.epochs.findLast((e) => e.confusion)?.confusion;
  return {
    steps: run.steps,
    epochs: run.epochs,
    confusion: matrix ? confusionCells(matrix, run.classNames) : [],
    membership: run.membership,
  };
}

/**
 * Steps in the training curves' moving average: about 1/20 of the run, so a long run's curve is
 * smooth and a short one's still follows its steps; between 1 and 50.
 */
export function smoothingWindow(steps: number): number {
  return Math.max(1, Math.min(50, Math.round(steps / 20)));
}

const WIDTH = 560;
const HEIGHT = 240;
const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';

/** Series colours, shared so that train and test look the same in every chart. */
const SERIES = {
  batch: '#9ecae9',
  smoothed: '#1f77b4',
  test: '#ff7f0e',
} as const;

/**
 * Every how many steps a chart of a run of `steps` steps draws a point, so that no line has much
 * more than `maxPoints` (1,500: about three per pixel of the plot's width). Thirty epochs of
 * the seed CNN are 28,140 steps; drawn whole, the loss plot alone was 0.9 MB of SVG.
 */
export function pointEvery(steps: number, maxPoints = 1500): number {
  return Math.max(1, Math.ceil(steps / maxPoints));
}

/** Keeps every `every`-th step (and the run's first); nothing when `every` is 1. */
function thinned(every: number) {
  return every > 1 ? [{ filter: `datum.step % ${every} === 0 || datum.step === 1` }] : [];
}

/** Options of the training-curve charts. */
export interface CurveOptions {
  /** Steps in the train curve's moving average; see {@link smoothingWindow}. Default 1. */
  smoothing?: number;
  /**
   * Draw every n-th step (see {@link pointEvery}); the moving average is still taken over every
   * step. Default 1.
   */
  every?: number;
}

/**
 * A curve chart over steps: the train metric per step (faint), its moving average, and the test
 * metric at each epoch's end (points on a line).
 */
function curveChart(
  title: string,
  metric: 'loss' | 'accuracy',
  options: CurveOptions,
): TopLevelSpec {
  const window = Math.max(1, Math.round(options.smoothing ?? 1));
  const every = Math.max(1, Math.round(options.every ?? 1));
  const smoothed = window > 1;
  const labels = {
    batch: 'train (each step)',
    smoothed: `train (mean of ${window} steps)`,
    test: 'test (each epoch)',
  };
  const series = smoothed
    ? [labels.batch, labels.smoothed, labels.test]
    : [labels.batch, labels.test];
  const color = {
    scale: {
      domain: series,
      range: smoothed
        ? [SERIES.batch, SERIES.smoothed, SERIES.test]
        : [SERIES.smoothed, SERIES.test],
    },
    legend: { title: null, orient: 'bottom' as const, labelLimit: 400 },
  };
  const x = { field: 'step', type: 'quantitative' as const, title: 'step' };
  const y = (field: string) => ({
    field,
    type: 'quantitative' as const,
    title: metric,
    axis: { format: metric === 'accuracy' ? '%' : '~g' },
  });
  // Each step's value: faint under its moving average, or the train curve itself when the run
  // is too short to smooth.
  const batch = {
    data: { name: DATASETS.steps },
    transform: thinned(every),
    mark: { type: 'line' as const, strokeWidth: smoothed ? 1 : 1.5, opacity: smoothed ? 0.6 : 1 },
    encoding: { x, y: y(`batch_${metric}`), color: { datum: labels.batch, ...color } },
  };
  const average = {
    data: { name: DATASETS.steps },
    transform: [
      {
        window: [{ op: 'mean' as const, field: `batch_${metric}`, as: 'smoothed' }],
        frame: [-(window - 1), 0],
        sort: [{ field: 'step' }],
      },
      ...thinned(every),
    ],
    mark: { type: 'line' as const, strokeWidth: 2 },
    encoding: { x, y: y('smoothed'), color: { datum: labels.smoothed, ...color } },
  };
  const test = {
    data: { name: DATASETS.epochs },
    mark: { type: 'line' as const, strokeWidth: 2, point: { filled: true, size: 50 } },
    encoding: {
      x,
      y: y(`test_${metric}`),
      color: { datum: labels.test, ...color },
      tooltip: [
        { field: 'epoch', type: 'ordinal' as const },
        {
          field: `test_${metric}`,
          type: 'quantitative' as const,
          format: metric === 'accuracy' ? '.2%' : '.4f',
        },
      ],
    },
  };
  return {
    $schema: SCHEMA,
    title,
    width: WIDTH,
    height: HEIGHT,
    layer: smoothed ? [batch, average, test] : [batch, test],
  };
}

/** Loss: train per step (and its moving average), test per epoch. */
export function lossChart(options: CurveOptions = {}): TopLevelSpec {
  return curveChart('Loss', 'loss', options);
}

/** Accuracy: train per step (and its moving average), test per epoch. */
export function accuracyChart(options: CurveOptions = {}): TopLevelSpec {
  return curveChart('Accuracy', 'accuracy', options);
}

/** The parts of a step, in stacking order, with the field each comes from. */
const STEP_PARTS = [
  ['compute', 'compute_seconds'],
  ['exchange', 'exchange_seconds'],
  ['optimizer', 'optimizer_seconds'],
  ['other', 'other_seconds'],
] as const;

/**
 * Splits each row (a step, or an epoch's per-step means) into one row per part of
 * {@link STEP_PARTS}: `part`, its `seconds`, and its `order` in the stack. "other" is what the
 * step took beyond compute, exchange and optimizer.
 */
const STEP_PART_TRANSFORMS = [
  {
    calculate:
      'max(0, datum.step_seconds - datum.compute_seconds - datum.exchange_seconds - datum.optimizer_seconds)',
    as: 'other_seconds',
  },
  { fold: STEP_PARTS.map(([, field]) => field), as: ['field', 'seconds'] },
  {
    calculate: `{${STEP_PARTS.map(([part, field]) => `'${field}': '${part}'`).join(', ')}}[datum.field]`,
    as: 'part',
  },
  {
    calculate: `indexof([${STEP_PARTS.map(([part]) => `'${part}'`).join(', ')}], datum.part)`,
    as: 'order',
  },
] as const satisfies NonNullable<TopLevelSpec['transform']>;

/**
 * Mean time per step of each epoch, stacked: the slowest worker's compute, the exchange, the
 * optimizer, and the rest of the step (scheduling, bookkeeping).
 */
export function stepTimeChart(): TopLevelSpec {
  return {
    $schema: SCHEMA,
    title: 'Time per step, by epoch',
    width: WIDTH,
    height: HEIGHT,
    data: { name: DATASETS.epochs },
    transform: [...STEP_PART_TRANSFORMS],
    mark: 'bar',
    encoding: {
      x: { field: 'epoch', type: 'ordinal', title: 'epoch', axis: { labelAngle: 0 } },
      y: {
        field: 'seconds',
        type: 'quantitative',
        stack: 'zero',
        title: 'seconds per step (mean)',
      },
      color: {
        field: 'part',
        type: 'nominal',
        title: null,
        scale: {
          domain: STEP_PARTS.map(([part]) => part),
          range: ['#1f77b4', '#ff7f0e', '#2ca02c', '#c7c7c7'],
        },
        legend: { orient: 'bottom' },
      },
      order: { field: 'order', type: 'quantitative' },
      tooltip: [
        { field: 'epoch', type: 'ordinal' },
        { field: 'part', type: 'nominal' },
        { field: 'seconds', type: 'quantitative', format: '.4f' },
      ],
    },
  };
}

/**
 * Where each step's time goes, as shares of the step: the slowest worker's compute, the
 * exchange, the optimizer and the rest, stacked to 100% over the steps (each part a moving mean
 * of `smoothing` steps, since single steps' timings are noisy). The live page draws it from the
 * first step on; {@link stepTimeChart} gives the same split in seconds once epochs end.
 */
export function stepShareChart(options: CurveOptions = {}): TopLevelSpec {
  const window = Math.max(1, Math.round(options.smoothing ?? 1));
  const every = Math.max(1, Math.round(options.every ?? 1));
  const parts = STEP_PARTS.map(([part]) => part);
  return {
    $schema: SCHEMA,
    title: window > 1 ? `Share of each step (mean of ${window} steps)` : 'Share of each step',
    width: WIDTH,
    height: HEIGHT,
    data: { name: DATASETS.steps },
    transform: [
      ...STEP_PART_TRANSFORMS,
      // Averaged before thinning, so that a thinned point still stands for every step.
      ...(window > 1
        ? [
            {
              window: [{ op: 'mean' as const, field: 'seconds', as: 'mean_seconds' }],
              frame: [-(window - 1), 0],
              groupby: ['part'],
              sort: [{ field: 'step' }],
            },
          ]
        : [{ calculate: 'datum.seconds', as: 'mean_seconds' }]),
      ...thinned(every),
    ],
    mark: { type: 'area', interpolate: 'step-after' },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step' },
      y: {
        field: 'mean_seconds',
        type: 'quantitative',
        stack: 'normalize',
        title: 'share of the step',
        axis: { format: '%' },
      },
      color: {
        field: 'part',
        type: 'nominal',
        title: null,
        scale: { domain: parts, range: ['#1f77b4', '#ff7f0e', '#2ca02c', '#c7c7c7'] },
        legend: { orient: 'bottom' },
      },
      order: { field: 'order', type: 'quantitative' },
      tooltip: [
        { field: 'step', type: 'quantitative' },
        { field: 'part', type: 'nominal' },
        { field: 'mean_seconds', type: 'quantitative', format: '.4f', title: 'seconds' },
      ],
    },
  };
}

/**
 * The confusion matrix as a heat map: rows are the true class, columns the predicted one; the
 * colour is the cell's share of its row (so rare classes read as well as common ones), the text
 * its count.
 */
export function confusionChart(options: { classes?: number } = {}): TopLevelSpec {
  const cell = Math.max(18, Math.min(44, Math.floor(440 / Math.max(1, options.classes ?? 10))));
  const side = cell * Math.max(1, options.classes ?? 10);
  const axis = (field: string, index: string, title: string) => ({
    field,
    type: 'ordinal' as const,
    sort: { field: index, op: 'min' as const },
    title,
  });
  return {
    $schema: SCHEMA,
    title: 'Confusion matrix (last epoch)',
    width: side,
    height: side,
    data: { name: DATASETS.confusion },
    encoding: {
      x: {
        ...axis('predicted_class', 'predicted_index', 'predicted class'),
        axis: { labelAngle: -45 },
      },
      y: axis('true_class', 'true_index', 'true class'),
    },
    layer: [
      {
        mark: 'rect',
        encoding: {
          color: {
            field: 'row_fraction',
            type: 'quantitative',
            title: 'share of row',
            scale: { scheme: 'blues', domain: [0, 1] },
            legend: { format: '%' },
          },
          tooltip: [
            { field: 'true_class', type: 'nominal', title: 'true' },
            { field: 'predicted_class', type: 'nominal', title: 'predicted' },
            { field: 'count', type: 'quantitative' },
          ],
        },
      },
      {
        mark: { type: 'text', fontSize: Math.max(8, Math.min(12, cell / 3)) },
        encoding: {
          text: { field: 'count', type: 'quantitative' },
          color: {
            condition: { test: 'datum.row_fraction > 0.5', value: 'white' },
            value: 'black',
          },
        },
      },
    ],
  };
}

/**
 * Workers over the run: how many computed each step (a step line), and each join or leave as a
 * point at the step it happened after, with the worker and the reason in its tooltip.
 */
export function workersChart(options: { every?: number } = {}): TopLevelSpec {
  const x = { field: 'step', type: 'quantitative' as const, title: 'step' };
  const every = Math.max(1, Math.round(options.every ?? 1));
  return {
    $schema: SCHEMA,
    title: 'Workers over time',
    width: WIDTH,
    height: 160,
    layer: [
      {
        data: { name: DATASETS.steps },
        // Thinned, a step line must still turn where the count changed: keep those steps too.
        transform:
          every > 1
            ? [
                {
                  window: [{ op: 'lag', field: 'workers', as: 'before' }],
                  sort: [{ field: 'step' }],
                },
                {
                  filter: `datum.step % ${every} === 0 || datum.step === 1 || datum.before !== datum.workers`,
                },
              ]
            : [],
        mark: { type: 'line', interpolate: 'step-after', strokeWidth: 2 },
        encoding: {
          x,
          y: {
            field: 'workers',
            type: 'quantitative',
            title: 'workers',
            axis: { tickMinStep: 1, format: 'd' },
            scale: { zero: true },
          },
          color: { value: SERIES.smoothed },
        },
      },
      {
        data: { name: DATASETS.membership },
        transform: [{ filter: 'isValid(datum.workers)' }],
        mark: { type: 'point', filled: true, size: 70 },
        encoding: {
          x,
          y: { field: 'workers', type: 'quantitative' },
          // Same field, title and legend for both channels: Vega-Lite merges them into one.
          shape: {
            field: 'change',
            type: 'nominal',
            title: null,
            scale: { domain: ['joined', 'left'], range: ['triangle-up', 'triangle-down'] },
            legend: { orient: 'bottom' },
          },
          color: {
            field: 'change',
            type: 'nominal',
            title: null,
            scale: { domain: ['joined', 'left'], range: ['#2ca02c', '#d62728'] },
            legend: { orient: 'bottom' },
          },
          tooltip: [
            { field: 'worker', type: 'nominal' },
            { field: 'change', type: 'nominal' },
            { field: 'step', type: 'quantitative' },
            { field: 'reason', type: 'nominal' },
          ],
        },
      },
    ],
  };
}

/** One chart of the report: its file name (without `.svg`), its heading, and its spec. */
export interface ReportChart {
  name: 'loss' | 'accuracy' | 'step-time' | 'confusion' | 'workers';
  title: string;
  spec: TopLevelSpec;
}

/** Attaches rows to a spec's named datasets (Vega-Lite's top-level `datasets`). */
export function withData(spec: TopLevelSpec, data: ChartData): TopLevelSpec {
  return {
    ...spec,
    datasets: {
      [DATASETS.steps]: [...data.steps],
      [DATASETS.epochs]: [...data.epochs],
      [DATASETS.confusion]: [...data.confusion],
      [DATASETS.membership]: [...data.membership],
    },
  } as TopLevelSpec;
}

/**
 * The report's charts for a run, each with its rows attached. The confusion matrix is left out
 * when no epoch recorded one.
 */
export function reportCharts(run: RecordedRun): ReportChart[] {
  const data = chartData(run);
  const smoothing = smoothingWindow(data.steps.length);
  const every = pointEvery(data.steps.length);
  const charts: ReportChart[] = [
    { name: 'loss', title: 'Loss', spec: lossChart({ smoothing, every }) },
    { name: 'accuracy', title: 'Accuracy', spec: accuracyChart({ smoothing, every }) },
    { name: 'step-time', title: 'Time per step', spec: stepTimeChart() },
    ...(data.confusion.length > 0
      ? [
          {
            name: 'confusion' as const,
            title: 'Confusion matrix',
            spec: confusionChart({ classes: run.classNames.length }),
          },
        ]
      : []),
    { name: 'workers', title: 'Workers over time', spec: workersChart({ every }) },
  ];
  return charts.map((chart) => ({ ...chart, spec: withData(chart.spec, data) }));
}
