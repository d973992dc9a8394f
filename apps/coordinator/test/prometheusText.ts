/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: what
 * `/metrics` answers must parse line by line, or the test fails naming the line. prom-client
 * writes this format but cannot read it back, and a loose regex would accept what Prometheus
 * refuses.
 *
 * Checked: every line is a `# HELP`, a `# TYPE`, another comment, a blank line or a sample; metric
 * and label names are valid; label values are quoted with only \\, \" and \n escapes; values are
 * numbers (or NaN, +Inf, -Inf, in any case); each family is typed once, before its samples; a sample belongs to
 * a typed family (`x`, or `x_bucket` / `x_sum` / `x_count` of a histogram or summary); no series
 * is repeated; a histogram's buckets have `le`, are cumulative, and end with `+Inf` equal to its
 * `_count`.
 */

/** One sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** One metric family: its type, help text and samples. */
export interface MetricFamily {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/**
 * A sample value as Prometheus reads it (Go's ParseFloat): a decimal number, or NaN and Inf in
 * any case (prom-client writes `Nan`).
 */
function parseValue(text: string, line: number): number {
  if (/^nan$/i.test(text)) return Number.NaN;
  if (/^\+?inf(inity)?$/i.test(text)) return Number.POSITIVE_INFINITY;
  if (/^-inf(inity)?$/i.test(text)) return Number.NEGATIVE_INFINITY;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) {
    throw new Error(`line ${line}: expected a number, found ${JSON.stringify(text)}`);
  }
  return Number(text);
}

/** Reads `{a="1",b="x\"y"}` from `text` at `start`; returns the labels and the index after `}`. */
function parseLabels(
  text: string,
  start: number,
  line: number,
): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = start + 1;
  for (;;) {
    if (text[i] === '}') return { labels, end: i + 1 };
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`line ${line}: a label without "="`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`line ${line}: bad label name ${name}`);
    if (name in labels) throw new Error(`line ${line}: label ${name} twice`);
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label ${name}'s value is not quoted`);
    let value = '';
    let j = eq + 2;
    for (; ; j++) {
      const c = text[j];
      if (c === undefined) throw new Error(`line ${line}: unterminated label value`);
      if (c === '"') break;
      if (c === '\\') {
        const next = text[++j];
        if (next === 'n') value += '\n';
        else if (next === '\\' || next === '"') value += next;
        else throw new Error(`line ${line}: bad escape \\${next}`);
      } else {
        value += c;
      }
    }
    labels[name] = value;
    i = j + 1;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw new Error(`line ${line}: expected "," or "}" after a label`);
  }
}

/** The family a sample name belongs to, given the typed families. */
function familyOf(name: string, families: Map<string, MetricFamily>): MetricFamily | undefined {
  const direct = families.get(name);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const family = families.get(name.slice(0, -suffix.length));
    if (!family) continue;
    if (family.type === 'histogram') return family;
    if (family.type === 'summary' && suffix !== '_bucket') return family;
  }
  return undefined;
}

/** Checks one histogram's series: cumulative buckets ending in +Inf, which equals _count. */
function checkHistogram(family: MetricFamily): void {
  const series = new Map<string, { buckets: Array<[number, number]>; count?: number }>();
  for (const s of family.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (s.name.endsWith('_bucket')) {
      if (le === undefined) throw new Error(`${family.name}: a bucket without le`);
      entry.buckets.push([parseValue(le, 0), s.value]);
    } else if (s.name.endsWith('_count')) {
      entry.count = s.value;
    }
  }
  for (const { buckets, count } of series.values()) {
    const last = buckets.at(-1);
    if (!last || last[0] !== Number.POSITIVE_INFINITY) {
      throw new Error(`${family.name}: the last bucket is not le="+Inf"`);
    }
    for (let k = 1; k < buckets.length; k++) {
      if (buckets[k]![0] <= buckets[k - 1]![0] || buckets[k]![1] < buckets[k - 1]![1]) {
        throw new Error(`${family.name}: buckets are not increasing and cumulative`);
      }
    }
    if (count !== last[1]) throw new Error(`${family.name}: _count ${count} != +Inf ${last[1]}`);
  }
}

/**
 * Parses `text` strictly (see the module comment); throws an Error naming the first problem.
 *
 * @example
 * ```ts
 * const families = parsePrometheusText(await (await fetch(`${url}metrics`)).text());
 * families.get('shardline_steps_total')!.samples[0]!.value;
 * ```
 */
export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  const helps = new Map<string, string>();
  const seen = new Set<string>();
  const lines = text.split('\n');
  if (lines.at(-1) !== '') throw new Error('the text does not end with a newline');
  lines.forEach((raw, index) => {
    const line = index + 1;
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw);
      if (!m) return; // another comment
      const [, keyword, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
      if (keyword === 'HELP') {
        if (helps.has(name)) throw new Error(`line ${line}: HELP of ${name} twice`);
        helps.set(name, rest);
        const family = families.get(name);
        if (family) family.help = rest;
        return;
      }
      if (!TYPES.has(rest)) throw new Error(`line ${line}: unknown type ${rest}`);
      if (families.has(name)) throw new Error(`line ${line}: TYPE of ${name} twice`);
      families.set(name, {
        name,
        type: rest as MetricFamily['type'],
        help: helps.get(name) ?? '',
        samples: [],
      });
      return;
    }
    const nameEnd = raw.search(/[{ ]/);
    if (nameEnd <= 0) throw new Error(`line ${line}: not a sample: ${raw}`);
    const name = raw.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
    let labels: Record<string, string> = {};
    let rest = raw.slice(nameEnd);
    if (rest.startsWith('{')) {
      const parsed = parseLabels(raw, nameEnd, line);
      labels = parsed.labels;
      rest = raw.slice(parsed.end);
    }
    const parts = rest.trim().split(' ');
    if (!rest.startsWith(' ') || parts.length < 1 || parts.length > 2) {
      throw new Error(`line ${line}: expected " value [timestamp]" after the name: ${raw}`);
    }
    const value = parseValue(parts[0]!, line);
    const family = familyOf(name, families);
    if (!family) throw new Error(`line ${line}: sample ${name} before (or without) its TYPE`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(key)) throw new Error(`line ${line}: series ${key} twice`);
    seen.add(key);
    family.samples.push({ name, labels, value });
  });
  for (const family of families.values()) {
    if (family.type === 'histogram') checkHistogram(family);
  }
  return families;
}

/** The value of the one sample of `name` with `labels` (a subset), or an Error. */
export function sampleValue(
  families: Map<string, MetricFamily>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const family = familyOf(name, families);
  const sample = family?.samples.find(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (!sample) throw new Error(`no sample ${name}${JSON.stringify(labels)}`);
  return sample.value;
}
