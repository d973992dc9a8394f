/**
 * A tiny Prometheus registry: counters, gauges and histograms with labels, rendered in the text
 * exposition format version 0.0.4, for the coordinator's `/metrics` endpoint.
 *
 * Format reference: https://prometheus.io/docs/instrumenting/exposition_formats/
 */
import { describeValue, invalidArgument } from './validation.js';

/** The `Content-Type` to serve {@link Registry.render} output with. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Default histogram buckets (upper bounds, seconds): the Prometheus client libraries' defaults,
 * suited to request and step latencies from 5 ms to 10 s.
 */
export const DEFAULT_BUCKETS: readonly number[] = Object.freeze([
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);

/** Valid metric names (Prometheus data model). */
export const METRIC_NAME_PATTERN = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
/** Valid label names (Prometheus data model); names starting with `__` are reserved. */
export const LABEL_NAME_PATTERN = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Label values keyed by label name; numbers are rendered with `String()`. */
export type LabelValues = Readonly<Record<string, string | number>>;

/** Options shared by every metric. */
export interface MetricOptions {
  /** Metric name, matching {@link METRIC_NAME_PATTERN}; by convention counters end in `_total`. */
  name: string;
  /** One line describing the metric (newlines and backslashes are escaped). */
  help: string;
  /** Label names every sample of this metric carries, in the order they are rendered. */
  labelNames?: readonly string[];
}

/** Options of {@link Registry.histogram}. */
export interface HistogramOptions extends MetricOptions {
  /** Finite, strictly increasing upper bounds; `+Inf` is added. Default {@link DEFAULT_BUCKETS}. */
  buckets?: readonly number[];
}

/** A value that only goes up (resets when the process restarts). */
export interface Counter {
  readonly name: string;
  /** Adds `value` (default 1, must be finite and >= 0) to the unlabelled series. */
  inc(value?: number): void;
  /** Adds `value` (default 1, must be finite and >= 0) to the series with these labels. */
  inc(labels: LabelValues, value?: number): void;
  /** The current value of a series (0 if never incremented). */
  get(labels?: LabelValues): number;
  /** Removes every series. */
  reset(): void;
}

/** A value that goes up and down. */
export interface Gauge {
  readonly name: string;
  /** Sets the unlabelled series. Any number, including NaN and ±Inf, is rendered. */
  set(value: number): void;
  /** Sets the series with these labels. */
  set(labels: LabelValues, value: number): void;
  /** Adds `value` (default 1, finite). */
  inc(value?: number): void;
  inc(labels: LabelValues, value?: number): void;
  /** Subtracts `value` (default 1, finite). */
  dec(value?: number): void;
  dec(labels: LabelValues, value?: number): void;
  /** The current value of a series (0 if never set). */
  get(labels?: LabelValues): number;
  /** Removes every series. */
  reset(): void;
}

/** The state of one histogram series. */
export interface HistogramSnapshot {
  /** Cumulative counts: how many observations were <= each `le`, ending with `+Inf`. */
  buckets: { le: number; count: number }[];
  sum: number;
  count: number;
}

/** Counts observations in cumulative buckets, with their sum and count. */
export interface Histogram {
  readonly name: string;
  /** Records one observation (finite) in the unlabelled series. */
  observe(value: number): void;
  /** Records one observation (finite) in the series with these labels. */
  observe(labels: LabelValues, value: number): void;
  /** The state of a series (all zero if never observed). */
  get(labels?: LabelValues): HistogramSnapshot;
  /** Removes every series. */
  reset(): void;
}

/** A set of metrics rendered together. Create with {@link createRegistry}. */
export interface Registry {
  /** Registers a counter. @throws ShardlineError `INVALID_ARGUMENT` on a bad or taken name. */
  counter(options: MetricOptions): Counter;
  /** Registers a gauge. @throws ShardlineError `INVALID_ARGUMENT` on a bad or taken name. */
  gauge(options: MetricOptions): Gauge;
  /** Registers a histogram. @throws ShardlineError `INVALID_ARGUMENT` on a bad or taken name or buckets. */
  histogram(options: HistogramOptions): Histogram;
  /**
   * Every metric in registration order, series in first-use order, as text exposition format
   * 0.0.4 (serve with {@link PROMETHEUS_CONTENT_TYPE}). Ends with a newline.
   */
  render(): string;
}

type MetricType = 'counter' | 'gauge' | 'histogram';

interface Family {
  type: MetricType;
  name: string;
  help: string;
  labelNames: readonly string[];
  render(lines: string[]): void;
}

/** One labelled series: the label values in `labelNames` order, and its state. */
interface Series<T> {
  values: string[];
  state: T;
}

/**
 * Creates an empty metrics registry.
 *
 * @example
 * ```ts
 * const registry = createRegistry();
 * const images = registry.counter({ name: 'shardline_images_total', help: 'Images trained on.', labelNames: ['worker'] });
 * images.inc({ worker: 'w1' }, 64);
 * const rate = registry.gauge({ name: 'shardline_images_per_second', help: 'Smoothed training throughput.' });
 * rate.set(1234.5);
 * response.setHeader('Content-Type', PROMETHEUS_CONTENT_TYPE);
 * response.end(registry.render());
 * ```
 */
export function createRegistry(): Registry {
  const families: Family[] = [];
  // Every sample name in use: a histogram `x` also owns `x_bucket`, `x_sum` and `x_count`.
  const taken = new Map<string, string>();

  const register = (
    options: MetricOptions,
    type: MetricType,
    sampleNames: (name: string) => string[],
  ) => {
    if (typeof options !== 'object' || options === null) {
      invalidArgument(
        `A ${type} needs options { name, help, labelNames? }, found ${describeValue(options)}.`,
      );
    }
    const { name, help } = options;
    if (typeof name !== 'string' || !METRIC_NAME_PATTERN.test(name)) {
      invalidArgument(
        `Metric name ${describeValue(name)} is invalid: expected letters, digits, '_' and ':', not starting ` +
          `with a digit (${METRIC_NAME_PATTERN}). Use e.g. 'shardline_images_total'.`,
      );
    }
    if (typeof help !== 'string')
      invalidArgument(`help for ${name} must be a string, found ${describeValue(help)}.`);
    const labelNames = [...(options.labelNames ?? [])];
    const seen = new Set<string>();
    for (const label of labelNames) {
      if (typeof label !== 'string' || !LABEL_NAME_PATTERN.test(label) || label.startsWith('__')) {
        invalidArgument(
          `Label name ${describeValue(label)} of ${name} is invalid: expected letters, digits and '_', not ` +
            `starting with a digit or '__' (${LABEL_NAME_PATTERN}).`,
        );
      }
      if (type === 'histogram' && label === 'le') {
        invalidArgument(
          `Histogram ${name} cannot have a label named 'le': it is reserved for bucket bounds.`,
        );
      }
      if (seen.has(label))
        invalidArgument(`Label name '${label}' appears twice in ${name}'s labelNames.`);
      seen.add(label);
    }
    const names = sampleNames(name);
    for (const sample of names) {
      const owner = taken.get(sample);
      if (owner !== undefined) {
        invalidArgument(
          `Metric name ${name} clashes with the already registered ${owner}${owner === sample ? '' : ` (which renders ${sample})`}. ` +
            'Pick another name, or reuse the metric you registered.',
        );
      }
    }
    for (const sample of names) taken.set(sample, name);
    return { name, help, labelNames };
  };

  return {
    counter(options) {
      const meta = register(options, 'counter', (n) => [n]);
      const series = createSeriesMap<{ value: number }>(meta.name, meta.labelNames, () => ({
        value: 0,
      }));
      const inc = (a?: LabelValues | number, b?: number): void => {
        const [labels, value] = splitArgs(a, b, 1);
        if (!(Number.isFinite(value) && value >= 0)) {
          invalidArgument(
            `Counter ${meta.name} can only be increased by a finite number >= 0, found ${describeValue(value)}. ` +
              'Use a gauge for values that go down.',
          );
        }
        series.get(labels).state.value += value;
      };
      families.push({
        type: 'counter',
        ...meta,
        render: (lines) =>
          renderSimple(lines, meta.name, meta.labelNames, series.all(), (s) => s.value),
      });
      return {
        name: meta.name,
        inc,
        get: (labels = {}) => series.peek(labels)?.state.value ?? 0,
        reset: () => series.clear(),
      };
    },

    gauge(options) {
      const meta = register(options, 'gauge', (n) => [n]);
      const series = createSeriesMap<{ value: number }>(meta.name, meta.labelNames, () => ({
        value: 0,
      }));
      const add =
        (sign: 1 | -1) =>
        (a?: LabelValues | number, b?: number): void => {
          const [labels, value] = splitArgs(a, b, 1);
          if (!Number.isFinite(value)) {
            invalidArgument(
              `Gauge ${meta.name} can only change by a finite number, found ${describeValue(value)}.`,
            );
          }
          series.get(labels).state.value += sign * value;
        };
      families.push({
        type: 'gauge',
        ...meta,
        render: (lines) =>
          renderSimple(lines, meta.name, meta.labelNames, series.all(), (s) => s.value),
      });
      return {
        name: meta.name,
        set(a: LabelValues | number, b?: number) {
          const [labels, value] = splitArgs(a, b, undefined);
          if (typeof value !== 'number') {
            invalidArgument(
              `Gauge ${meta.name}.set needs a number, found ${describeValue(value)}.`,
            );
          }
          series.get(labels).state.value = value;
        },
        inc: add(1),
        dec: add(-1),
        get: (labels = {}) => series.peek(labels)?.state.value ?? 0,
        reset: () => series.clear(),
      } as Gauge;
    },

    histogram(options) {
      const meta = register(options, 'histogram', (n) => [
        n,
        `${n}_bucket`,
        `${n}_sum`,
        `${n}_count`,
      ]);
      const bounds = resolveBuckets(meta.name, options.buckets ?? DEFAULT_BUCKETS);
      const series = createSeriesMap<{ counts: Float64Array; sum: number; count: number }>(
        meta.name,
        meta.labelNames,
        () => ({ counts: new Float64Array(bounds.length), sum: 0, count: 0 }),
      );
      const snapshotOf = (state: {
        counts: Float64Array;
        sum: number;
        count: number;
      }): HistogramSnapshot => {
        let cumulative = 0;
        const buckets = bounds.map((le, i) => {
          cumulative += state.counts[i]!;
          return { le, count: cumulative };
        });
        buckets.push({ le: Number.POSITIVE_INFINITY, count: state.count });
        return { buckets, sum: state.sum, count: state.count };
      };
      families.push({
        type: 'histogram',
        ...meta,
        render(lines) {
          const all = series.all();
          if (all.length === 0 && meta.labelNames.length === 0) {
            all.push({
              values: [],
              state: { counts: new Float64Array(bounds.length), sum: 0, count: 0 },
            });
          }
          for (const { values, state } of all) {
            const snap = snapshotOf(state);
            for (const bucket of snap.buckets) {
              const labels = renderLabels(
                [...meta.labelNames, 'le'],
                [...values, formatNumber(bucket.le)],
              );
              lines.push(`${meta.name}_bucket${labels} ${formatNumber(bucket.count)}`);
            }
            const labels = renderLabels(meta.labelNames, values);
            lines.push(`${meta.name}_sum${labels} ${formatNumber(snap.sum)}`);
            lines.push(`${meta.name}_count${labels} ${formatNumber(snap.count)}`);
          }
        },
      });
      return {
        name: meta.name,
        observe(a: LabelValues | number, b?: number) {
          const [labels, value] = splitArgs(a, b, undefined);
          if (typeof value !== 'number' || !Number.isFinite(value)) {
            invalidArgument(
              `Histogram ${meta.name} can only observe finite numbers, found ${describeValue(value)}.`,
            );
          }
          const state = series.get(labels).state;
          // Non-cumulative here; cumulated when rendered. Values above every bound land only in +Inf.
          const i = bounds.findIndex((le) => value <= le);
          if (i >= 0) state.counts[i]! += 1;
          state.sum += value;
          state.count += 1;
        },
        get(labels = {}) {
          const found = series.peek(labels);
          return snapshotOf(
            found?.state ?? { counts: new Float64Array(bounds.length), sum: 0, count: 0 },
          );
        },
        reset: () => series.clear(),
      } as Histogram;
    },

    render() {
      const lines: string[] = [];
      for (const family of families) {
        lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
        lines.push(`# TYPE ${family.name} ${family.type}`);
        family.render(lines);
      }
      return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
    },
  };
}

/** `(value)`, `(labels)`, `(labels, value)` -> `[labels, value]`, like the Prometheus client libraries. */
function splitArgs<D extends number | undefined>(
  a: LabelValues | number | undefined,
  b: number | undefined,
  fallback: D,
): [LabelValues, number | D] {
  if (typeof a === 'object' && a !== null) return [a, b ?? fallback];
  return [{}, a ?? fallback];
}

function createSeriesMap<T>(name: string, labelNames: readonly string[], init: () => T) {
  const map = new Map<string, Series<T>>();
  const valuesOf = (labels: LabelValues): string[] => {
    if (typeof labels !== 'object' || labels === null) {
      invalidArgument(`Labels for ${name} must be an object, found ${describeValue(labels)}.`);
    }
    const given = Object.keys(labels);
    const missing = labelNames.filter((l) => !Object.hasOwn(labels, l));
    const extra = given.filter((l) => !labelNames.includes(l));
    if (missing.length > 0 || extra.length > 0) {
      invalidArgument(
        `${name} takes labels {${labelNames.join(', ')}}, found {${given.join(', ')}}` +
          `${missing.length > 0 ? `; missing ${missing.join(', ')}` : ''}` +
          `${extra.length > 0 ? `; unexpected ${extra.join(', ')}` : ''}. Pass exactly the labelNames it was registered with.`,
      );
    }
    return labelNames.map((l) => {
      const v = labels[l];
      if (typeof v === 'number') return String(v);
      if (typeof v === 'string') return v;
      return invalidArgument(
        `Label ${l} of ${name} must be a string or a number, found ${describeValue(v)}.`,
      );
    });
  };
  return {
    get(labels: LabelValues): Series<T> {
      const values = valuesOf(labels);
      const key = JSON.stringify(values);
      let found = map.get(key);
      if (found === undefined) {
        found = { values, state: init() };
        map.set(key, found);
      }
      return found;
    },
    peek(labels: LabelValues): Series<T> | undefined {
      return map.get(JSON.stringify(valuesOf(labels)));
    },
    all: (): Series<T>[] => [...map.values()],
    clear: () => map.clear(),
  };
}

function renderSimple<T>(
  lines: string[],
  name: string,
  labelNames: readonly string[],
  all: Series<T>[],
  read: (state: T) => number,
): void {
  // An unlabelled metric always has its one series, 0 until touched, so dashboards see it at once.
  if (all.length === 0 && labelNames.length === 0) lines.push(`${name} 0`);
  for (const { values, state } of all) {
    lines.push(`${name}${renderLabels(labelNames, values)} ${formatNumber(read(state))}`);
  }
}

function resolveBuckets(name: string, buckets: readonly number[]): number[] {
  if (!Array.isArray(buckets) || buckets.length === 0) {
    invalidArgument(
      `Histogram ${name} needs a non-empty array of bucket bounds, found ${describeValue(buckets)}.`,
    );
  }
  const bounds = [...buckets];
  for (let i = 0; i < bounds.length; i++) {
    const le = bounds[i];
    if (typeof le !== 'number' || !Number.isFinite(le) || (i > 0 && le <= bounds[i - 1]!)) {
      invalidArgument(
        `Histogram ${name} buckets must be finite and strictly increasing, found ${describeValue(le)} at index ${i} ` +
          `([${bounds.join(', ')}]). Leave out +Inf: it is always added.`,
      );
    }
  }
  return bounds;
}

function renderLabels(names: readonly string[], values: readonly string[]): string {
  if (names.length === 0) return '';
  return `{${names.map((n, i) => `${n}="${escapeLabelValue(values[i]!)}"`).join(',')}}`;
}

/** Label values escape backslash, double quote and line feed (exposition format 0.0.4). */
function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}

/** HELP text escapes backslash and line feed only (quotes stay as they are). */
function escapeHelp(help: string): string {
  return help.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'));
}

/** Sample values and `le` bounds as Go's ParseFloat reads them: `+Inf`, `-Inf`, `NaN`, else decimal. */
function formatNumber(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}
