/**
 * `/api/charts`: the page's charts as Vega-Lite specs, made by the same functions that draw
 * report.html (report/charts.ts), so the live page and the report cannot drift apart. The specs
 * read named datasets and carry no rows: the page compiles them in the browser and streams the
 * run's rows into those datasets as `/api/events` delivers them.
 *
 * Sized for the run as planned (epochs x steps per epoch), as the report sizes them for the run
 * as it went: the moving average spans about 1/20 of the run, and a line keeps about 1,500
 * points however long the run.
 */
import type { TopLevelSpec } from 'vega-lite';
import {
  accuracyChart,
  confusionChart,
  DATASETS,
  lossChart,
  pointEvery,
  smoothingWindow,
  stepShareChart,
  stepTimeChart,
} from '../report/charts.js';
import type { RunSnapshot } from './runState.js';

/** The names of the page's charts, in the order it shows them. */
export const LIVE_CHART_NAMES = [
  'loss',
  'accuracy',
  'step-share',
  'step-time',
  'confusion',
] as const;

/** A value of {@link LIVE_CHART_NAMES}. */
export type LiveChartName = (typeof LIVE_CHART_NAMES)[number];

/** One chart of the page. */
export interface LiveChart {
  name: LiveChartName;
  spec: TopLevelSpec;
  /** The named datasets the spec reads ({@link DATASETS} values): where the page puts rows. */
  datasets: string[];
}

/** `/api/charts`. */
export interface LiveCharts {
  /** The dataset names, as report/charts.ts `DATASETS`. */
  datasets: typeof DATASETS;
  /** Planned steps the charts were sized for (0 before the run's `started`). */
  planned_steps: number;
  charts: LiveChart[];
}

/** The named datasets `spec` reads, anywhere in its layers. */
function datasetsOf(spec: unknown): string[] {
  const names = new Set<string>();
  const visit = (node: unknown) => {
    if (Array.isArray(node)) {
      for (const child of node) visit(child);
      return;
    }
    if (typeof node !== 'object' || node === null) return;
    const record = node as Record<string, unknown>;
    const data = record.data as { name?: unknown } | undefined;
    if (typeof data?.name === 'string') names.add(data.name);
    if (Array.isArray(record.layer)) visit(record.layer);
  };
  visit(spec);
  return [...names];
}

/**
 * The page's charts for a run as far as `run` knows it (before `started` the run's size is
 * unknown, and the charts are sized for a short one).
 *
 * @example
 * ```ts
 * const { charts } = liveCharts(runState.snapshot());
 * charts.map((c) => c.name); // ['loss', 'accuracy', 'step-share', 'step-time', 'confusion']
 * ```
 */
export function liveCharts(
  run: Pick<RunSnapshot, 'epochs' | 'steps_per_epoch' | 'class_names'>,
): LiveCharts {
  const planned = Math.max(0, run.epochs * run.steps_per_epoch);
  const smoothing = smoothingWindow(planned);
  const every = pointEvery(planned);
  const specs: Record<LiveChartName, TopLevelSpec> = {
    loss: lossChart({ smoothing, every }),
    accuracy: accuracyChart({ smoothing, every }),
    'step-share': stepShareChart({ smoothing, every }),
    'step-time': stepTimeChart(),
    confusion: confusionChart({ classes: Math.max(1, run.class_names.length) }),
  };
  return {
    datasets: DATASETS,
    planned_steps: planned,
    charts: LIVE_CHART_NAMES.map((name) => ({
      name,
      spec: specs[name],
      datasets: datasetsOf(specs[name]),
    })),
  };
}
