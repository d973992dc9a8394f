/**
 * `report.html`: one self-contained page about a run, built from its files alone: the run
 * record (`events.jsonl`) and, once the run finished, `summary.json`. The charts are inline SVG
 * drawn by Vega (charts.ts, svg.ts), the styles are inline, there are no scripts and no URLs,
 * so it opens from disk on a machine with no network. Each chart is also written as
 * `plots/<name>.svg` for slides and papers.
 *
 * The page holds nothing but what those files say (no time of building, no absolute path of
 * the reader): `shardline-coordinator report <out>` rebuilds the same bytes the run wrote,
 * with the same release.
 */
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  formatCount,
  type Logger,
  ShardlineError,
  toShardlineError,
  writeFileAtomic,
} from '@shardline/core';
import { type ClassScores, precisionRecallF1 } from '@shardline/metrics';
import { formatShape, type ModelSummary } from '@shardline/models';
import { type RunSummaryFile, SUMMARY_FILE } from '../runOutputs.js';
import { type ReportChart, reportCharts } from './charts.js';
import { type RecordedRun, readRunRecord } from './record.js';
import { EVENTS_FILE } from './recorder.js';
import { renderSvg } from './svg.js';

/** The report's file name under `--out`, and the folder of its SVG plots. */
export const REPORT_FILE = 'report.html';
export const PLOTS_DIR = 'plots';

const version = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

/** What a report is built from: a run's record, and its summary once it finished. */
export interface ReportInputs {
  run: RecordedRun;
  summary?: RunSummaryFile;
}

/** What {@link writeRunReport} wrote. */
export interface WrittenReport {
  reportPath: string;
  /** `plots/<name>.svg`, one per chart, in the report's order. */
  plotPaths: string[];
  /** Damaged lines of events.jsonl that were skipped (1-based), for a warning. */
  badLines: number[];
}

async function listFolder(out: string): Promise<string[]> {
  const entries = await readdir(out);
  return entries.sort();
}

function describeEntries(entries: readonly string[]): string {
  if (entries.length === 0) return 'an empty folder';
  const shown = entries.slice(0, 8).join(', ');
  return `${shown}${entries.length > 8 ? `, and ${entries.length - 8} more` : ''}`;
}

/**
 * Reads what a report needs from a run's `--out` folder. Throws NOT_FOUND, with what was
 * expected, what was found and what to do, for a missing folder, a folder that is not a run, and
 * a run from a release that kept no record (no events.jsonl).
 */
export async function readReportInputs(out: string): Promise<ReportInputs> {
  const info = await stat(out).catch(() => undefined);
  if (!info) {
    throw new ShardlineError(
      'NOT_FOUND',
      `${out}: no such folder. Pass the --out folder of a training run (it holds ${EVENTS_FILE}).`,
    );
  }
  if (!info.isDirectory()) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${out} is a file; expected the --out folder of a training run (holding ${EVENTS_FILE} and, once it finished, ${SUMMARY_FILE}). Pass that folder.`,
    );
  }
  const entries = await listFolder(out);
  const summary = entries.includes(SUMMARY_FILE) ? await readSummary(out) : undefined;
  if (!entries.includes(EVENTS_FILE)) {
    if (summary || entries.includes('checkpoints')) {
      throw new ShardlineError(
        'NOT_FOUND',
        `${out} holds a run (${summary ? SUMMARY_FILE : 'checkpoints'}) but no ${EVENTS_FILE}: it was trained by a Shardline release from before run records, and the report is drawn from that record. Train it again with this release to get report.html.`,
      );
    }
    throw new ShardlineError(
      'NOT_FOUND',
      `${out} is not a training run: expected ${EVENTS_FILE} (and ${SUMMARY_FILE} once the run finished), as \`train --out\` writes them; found ${describeEntries(entries)}. Pass the --out folder of a training run.`,
    );
  }
  const run = await readRunRecord(join(out, EVENTS_FILE));
  return { run, ...(summary ? { summary } : {}) };
}

async function readSummary(out: string): Promise<RunSummaryFile> {
  const path = join(out, SUMMARY_FILE);
  try {
    return JSON.parse(await readFile(path, 'utf8')) as RunSummaryFile;
  } catch (error) {
    throw new ShardlineError(
      'DATA_CORRUPT',
      `${path} is not readable JSON (${toShardlineError(error).message}); the report needs the run's summary as train wrote it. Restore it, or move it away to report the run as unfinished.`,
      { cause: error },
    );
  }
}

/**
 * Builds report.html and plots/*.svg for the run in `out` from its files, writing each
 * atomically. Used at the end of every run and by `shardline-coordinator report`.
 *
 * @example
 * ```ts
 * const { reportPath } = await writeRunReport('runs/fashion');
 * ```
 */
export async function writeRunReport(out: string): Promise<WrittenReport> {
  const inputs = await readReportInputs(out);
  const charts = reportCharts(inputs.run);
  const svgs = new Map<ReportChart['name'], string>();
  for (const chart of charts) svgs.set(chart.name, await renderSvg(chart.spec));
  const plots = join(out, PLOTS_DIR);
  await mkdir(plots, { recursive: true });
  const plotPaths: string[] = [];
  for (const [name, svg] of svgs) {
    const path = join(plots, `${name}.svg`);
    await writeFileAtomic(path, svg);
    plotPaths.push(path);
  }
  const reportPath = join(out, REPORT_FILE);
  await writeFileAtomic(reportPath, buildReportHtml(inputs, svgs));
  return { reportPath, plotPaths, badLines: inputs.run.badLines };
}

/**
 * {@link writeRunReport} at the end of a training run: a report that cannot be built must not
 * fail a run whose model is saved, so a failure is a warning that says how to rebuild it.
 * Returns report.html's path, or undefined when it was not written.
 */
export async function writeReportAfterRun(
  out: string,
  logger: Logger,
): Promise<string | undefined> {
  try {
    const written = await writeRunReport(out);
    if (written.badLines.length > 0) {
      logger.warn(
        `${EVENTS_FILE} has ${written.badLines.length} damaged lines (${written.badLines.slice(0, 5).join(', ')}); the report leaves them out`,
      );
    }
    return written.reportPath;
  } catch (error) {
    logger.warn(
      `the run finished, but its report could not be built: ${toShardlineError(error).message}. Rebuild it with: shardline-coordinator report ${out}`,
    );
    return undefined;
  }
}

// --- HTML -------------------------------------------------------------------------------------

const esc = (text: string): string =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
const pct = (x: number | undefined) =>
  x === undefined || !Number.isFinite(x) ? '–' : `${(x * 100).toFixed(2)}%`;
const fixed = (x: number | undefined, digits = 4) =>
  x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
const ms = (seconds: number | undefined) =>
  seconds === undefined || !Number.isFinite(seconds) ? '–' : `${(seconds * 1000).toFixed(1)} ms`;

/** Seconds for people: `12.3 s`, `4 min 05 s`, `2 h 03 min`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

const plural = (n: number, word: string) => `${formatCount(n)} ${word}${n === 1 ? '' : 's'}`;
const elapsed = (from: string, to: string) => (Date.parse(to) - Date.parse(from)) / 1000;

function table(head: readonly string[], rows: readonly (readonly string[])[], id?: string): string {
  const th = head.map((h) => `<th scope="col">${h}</th>`).join('');
  const body = rows
    .map(
      (row) =>
        `<tr>${row.map((cell, i) => (i === 0 ? `<th scope="row">${cell}</th>` : `<td>${cell}</td>`)).join('')}</tr>`,
    )
    .join('\n');
  return `<table${id ? ` id="${id}"` : ''}><thead><tr>${th}</tr></thead>\n<tbody>\n${body}\n</tbody></table>`;
}

function section(id: string, title: string, body: string): string {
  return `<section id="${id}">\n<h2>${esc(title)}</h2>\n${body}\n</section>`;
}

/** The SVG as it goes inline: the namespace declarations HTML does not need are dropped. */
function inlineSvg(svg: string, name: string): string {
  return `<figure class="plot" id="plot-${name}">${svg.replace(/\s+xmlns(:xlink)?="[^"]*"/g, '')}</figure>`;
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return value;
  return JSON.stringify(value) ?? String(value);
}

/** Total training seconds: each session from its start to its last event. */
function trainingSeconds(run: RecordedRun): number {
  return run.sessions.reduce((sum, s) => sum + Math.max(0, elapsed(s.startedAt, s.endedAt)), 0);
}

function summarySection(inputs: ReportInputs): string {
  const { run } = inputs;
  const started = run.started;
  const last = run.epochs.at(-1);
  const best = run.epochs.reduce<(typeof run.epochs)[number] | undefined>(
    (a, e) => (a === undefined || e.test_accuracy > a.test_accuracy ? e : a),
    undefined,
  );
  const epochsPlanned = typeof started.epochs === 'number' ? started.epochs : undefined;
  const stepsPerEpoch = typeof started.steps_per_epoch === 'number' ? started.steps_per_epoch : 0;
  const lastStep = run.steps.at(-1)?.step ?? last?.step ?? 0;
  const stepSeconds = run.steps.reduce((a, s) => a + s.step_seconds, 0);
  const samples = run.steps.reduce((a, s) => a + s.samples, 0);
  const status =
    run.done || inputs.summary
      ? `Finished: ${plural(run.epochs.length, 'epoch')}, ${plural(lastStep, 'step')}.`
      : `Not finished: stopped after step ${formatCount(lastStep)} of ${formatCount(stepsPerEpoch * (epochsPlanned ?? 0))}. Continue it with the same flags plus --resume.`;
  const rows: [string, string][] = [
    ['Status', status],
    [
      'Final test accuracy',
      last ? `${pct(last.test_accuracy)} (loss ${fixed(last.test_loss)})` : '–',
    ],
    ['Best test accuracy', best ? `${pct(best.test_accuracy)} (epoch ${best.epoch})` : '–'],
    [
      'Final train accuracy',
      last ? `${pct(last.train_accuracy)} (loss ${fixed(last.train_loss)})` : '–',
    ],
    [
      'Epochs',
      `${formatCount(run.epochs.length)}${epochsPlanned === undefined ? '' : ` of ${formatCount(epochsPlanned)}`}`,
    ],
    ['Training time', formatDuration(trainingSeconds(run))],
    [
      'Throughput',
      stepSeconds > 0
        ? `${formatCount(Math.round(samples / stepSeconds))} images/s (over all steps)`
        : '–',
    ],
    ['Workers', formatCount(Math.max(0, ...run.steps.map((s) => s.workers)))],
    [
      'Mode',
      `${describeValue(started.mode)}${started.exchange ? `, ${describeValue(started.exchange)} exchange` : ''}, backend ${describeValue(started.backend)}`,
    ],
    ['Parameters', typeof started.parameters === 'number' ? formatCount(started.parameters) : '–'],
  ];
  if (run.sessions.length > 1) {
    rows.push([
      'Sessions',
      run.sessions
        .map(
          (s, i) =>
            `${i + 1}: ${s.resumedFromStep === undefined ? 'started' : `resumed from step ${formatCount(s.resumedFromStep)}`} at ${s.startedAt}`,
        )
        .join('; '),
    ]);
  }
  const warnings = [
    ...(run.badLines.length > 0
      ? [
          `${run.badLines.length} damaged lines of ${EVENTS_FILE} were left out (lines ${run.badLines.slice(0, 10).join(', ')}).`,
        ]
      : []),
    ...(run.tornTail
      ? [
          `The last line of ${EVENTS_FILE} was cut short (the run stopped mid-write) and was left out.`,
        ]
      : []),
  ];
  const dl = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('\n');
  return section(
    'summary',
    'Summary',
    `<dl class="summary">\n${dl}\n</dl>${warnings.map((w) => `\n<p class="warning">${esc(w)}</p>`).join('')}`,
  );
}

/** Per-class scores from the last epoch's confusion matrix (else summary.json's evaluation). */
function classScores(inputs: ReportInputs): ClassScores | undefined {
  const matrix =
    inputs.run.epochs.findLast((e) => e.confusion)?.confusion ??
    inputs.summary?.evaluation?.confusionMatrix;
  if (!matrix || matrix.length === 0) return undefined;
  return precisionRecallF1(matrix, { classNames: inputs.run.classNames });
}

function perClassSection(inputs: ReportInputs): string {
  const scores = classScores(inputs);
  if (!scores) {
    return section(
      'per-class',
      'Per-class precision, recall and F1',
      '<p>No epoch has ended yet: there is no evaluation to score.</p>',
    );
  }
  const rows = scores.perClass.map((c) => [
    esc(c.name),
    fixed(c.precision),
    fixed(c.recall),
    fixed(c.f1),
    formatCount(c.support),
  ]);
  const averages = [
    ['macro average', scores.macro],
    ['weighted average', scores.weighted],
  ] as const;
  const foot = averages
    .map(
      ([name, a]) =>
        `<tr><th scope="row">${name}</th><td>${fixed(a.precision)}</td><td>${fixed(a.recall)}</td><td>${fixed(a.f1)}</td><td>${formatCount(scores.count)}</td></tr>`,
    )
    .join('\n');
  const t = table(
    ['class', 'precision', 'recall', 'F1', 'support'],
    rows,
    'per-class-table',
  ).replace('</table>', `<tfoot>\n${foot}\n</tfoot></table>`);
  return section(
    'per-class',
    'Per-class precision, recall and F1',
    `<p>On the test set at the last epoch's evaluation: ${formatCount(scores.count)} images, accuracy ${pct(scores.accuracy)}.</p>\n${t}`,
  );
}

function plotOrNote(
  svgs: ReadonlyMap<ReportChart['name'], string>,
  name: ReportChart['name'],
  note: string,
): string {
  const svg = svgs.get(name);
  return svg ? inlineSvg(svg, name) : `<p>${esc(note)}</p>`;
}

/** What each part of a step's time is, in the run's mode. */
function timingsLegend(started: RecordedRun['started']): string {
  const compute = "Compute: the slowest worker's forward and backward pass.";
  const other = 'Other: the rest of the step (waiting for workers, scheduling, bookkeeping).';
  if (started.mode === 'in-process') {
    return `${compute} Exchange: none, the run trained in one process. Optimizer: applying the update. ${other}`;
  }
  if (started.exchange === 'ring') {
    return `${compute} Exchange: the slowest member's ring all-reduce. Optimizer: committing the step on every member. ${other}`;
  }
  return `${compute} Exchange: waiting for the gradients beyond that compute (transfer, encoding, queueing). Optimizer: averaging the gradients and applying the update. ${other}`;
}

function timingsSection(
  inputs: ReportInputs,
  svgs: ReadonlyMap<ReportChart['name'], string>,
): string {
  const rows = inputs.run.epochs.map((e) => {
    const parts = (e.compute_seconds ?? 0) + (e.exchange_seconds ?? 0) + (e.optimizer_seconds ?? 0);
    return [
      String(e.epoch),
      ms(e.step_seconds),
      ms(e.compute_seconds),
      ms(e.exchange_seconds),
      ms(e.optimizer_seconds),
      ms(e.step_seconds === undefined ? undefined : Math.max(0, e.step_seconds - parts)),
      formatCount(Math.round(e.images_per_second)),
      formatCount(e.workers),
    ];
  });
  return section(
    'timings',
    'Timings per epoch',
    `<p>Mean seconds per step. ${timingsLegend(inputs.run.started)}</p>\n${plotOrNote(svgs, 'step-time', 'No epoch has ended yet.')}\n${table(
      ['epoch', 'step', 'compute', 'exchange', 'optimizer', 'other', 'images/s', 'workers'],
      rows,
      'timings-table',
    )}`,
  );
}

function workersSection(
  inputs: ReportInputs,
  svgs: ReadonlyMap<ReportChart['name'], string>,
): string {
  const { run } = inputs;
  const start = run.sessions[0]?.startedAt ?? run.started.time;
  const sessions = run.sessions.length > 1;
  const rows = run.membership.map((m) => [
    `+${formatDuration(elapsed(start, m.time))}`,
    ...(sessions ? [String(m.session + 1)] : []),
    formatCount(m.step),
    esc(m.worker),
    m.change,
    esc(
      m.change === 'joined'
        ? [m.hostname && `host ${m.hostname}`, m.backend && `backend ${m.backend}`]
            .filter(Boolean)
            .join(', ')
        : (m.reason ?? ''),
    ),
    m.workers === undefined ? '–' : formatCount(m.workers),
  ]);
  const list =
    rows.length === 0
      ? `<p>No worker joined or left: ${run.started.mode === 'in-process' ? 'the run trained in its own process' : 'none was recorded'}.</p>`
      : table(
          [
            'after',
            ...(sessions ? ['session'] : []),
            'step',
            'worker',
            'change',
            'details',
            'workers then',
          ],
          rows,
          'workers-table',
        );
  return section(
    'workers',
    'Workers over time',
    `${plotOrNote(svgs, 'workers', 'No step was recorded.')}\n${list}`,
  );
}

function configurationSection(inputs: ReportInputs): string {
  const skip = new Set(['event', 'time', 'class_names']);
  const job = Object.entries(inputs.run.started)
    .filter(([k]) => !skip.has(k))
    .map(([k, v]) => [esc(k), esc(describeValue(v))]);
  const config = inputs.summary?.config
    ? Object.entries(inputs.summary.config)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => [esc(k), esc(describeValue(v))])
    : [];
  return section(
    'configuration',
    'Configuration',
    `<h3>Job (the started event)</h3>\n${table(['field', 'value'], job, 'job-table')}\n<h3>Settings (${SUMMARY_FILE})</h3>\n${
      config.length > 0
        ? table(['setting', 'value'], config, 'settings-table')
        : `<p>Not available: the run has not finished, so there is no ${SUMMARY_FILE} yet.</p>`
    }\n<p>Classes, in label order: ${esc(inputs.run.classNames.join(', '))}.</p>`,
  );
}

function modelSection(inputs: ReportInputs): string {
  const s: ModelSummary | undefined = inputs.summary?.modelSummary;
  if (!s) {
    return section(
      'model',
      'Model summary',
      `<p>Not recorded: ${inputs.summary ? `this run's ${SUMMARY_FILE} was written before model summaries were` : 'the run has not finished'}.</p>`,
    );
  }
  const rows = s.layers.map((l) => [
    `${esc(l.name)} (${esc(l.className)})`,
    esc(formatShape(l.outputShape)),
    formatCount(l.params),
  ]);
  return section(
    'model',
    `Model summary: ${s.name}`,
    `${table(['layer (type)', 'output shape', 'parameters'], rows, 'model-table')}\n<p>Total parameters: ${formatCount(s.totalParams)} (trainable ${formatCount(s.trainableParams)}, non-trainable ${formatCount(s.nonTrainableParams)}).</p>`,
  );
}

const STYLE = `
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #222; margin: 0 auto; max-width: 1000px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; }
.sub { color: #666; margin: 0; }
nav a { margin-right: 12px; color: #1f77b4; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; }
dl.summary dt { font-weight: 600; }
dl.summary dd { margin: 0; }
.warning { background: #fff4e5; border-left: 4px solid #ff7f0e; padding: 6px 10px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th[scope=row], thead th:first-child { text-align: left; }
thead th { border-bottom: 2px solid #ccc; }
tfoot th, tfoot td { border-top: 2px solid #ccc; }
#job-table td, #settings-table td, #workers-table td:nth-child(6) { text-align: left; word-break: break-all; }
figure.plot { margin: 12px 0; }
figure.plot svg { max-width: 100%; height: auto; }
footer { color: #888; margin-top: 40px; font-size: 12px; }
`;

/**
 * The report page for `inputs`, with the charts' SVGs (by chart name). Pure: the same inputs
 * give the same bytes.
 */
export function buildReportHtml(
  inputs: ReportInputs,
  svgs: ReadonlyMap<ReportChart['name'], string>,
): string {
  const { run } = inputs;
  const model = describeValue(run.started.model);
  const dataset = describeValue(run.started.dataset);
  const title = `Shardline run: ${model} on ${dataset}`;
  const sections = [
    summarySection(inputs),
    section(
      'curves',
      'Training curves',
      `${plotOrNote(svgs, 'loss', 'No step was recorded.')}\n${plotOrNote(svgs, 'accuracy', 'No step was recorded.')}`,
    ),
    perClassSection(inputs),
    section(
      'confusion',
      'Confusion matrix',
      `<p>Rows: the true class; columns: the predicted class. Colour: the share of the row; text: the count.</p>\n${plotOrNote(svgs, 'confusion', 'No epoch has ended yet.')}`,
    ),
    timingsSection(inputs, svgs),
    workersSection(inputs, svgs),
    configurationSection(inputs),
    modelSection(inputs),
  ];
  const nav = [
    ['summary', 'Summary'],
    ['curves', 'Curves'],
    ['per-class', 'Per class'],
    ['confusion', 'Confusion'],
    ['timings', 'Timings'],
    ['workers', 'Workers'],
    ['configuration', 'Configuration'],
    ['model', 'Model'],
  ]
    .map(([id, label]) => `<a href="#${id}">${label}</a>`)
    .join('');
  const sources = inputs.summary ? `${EVENTS_FILE} and ${SUMMARY_FILE}` : EVENTS_FILE;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>${esc(title)}</h1>
<p class="sub">Started ${esc(run.sessions[0]?.startedAt ?? run.started.time)}${run.done ? `, finished ${esc(run.done.time)}` : inputs.summary ? `, finished ${esc(inputs.summary.finishedAt)}` : ''}. Output folder: ${esc(describeValue(run.started.out))}</p>
<nav>${nav}</nav>
</header>
<main>
${sections.join('\n')}
</main>
<footer>Built by shardline-coordinator ${esc(version)} from ${sources}; rebuild with <code>shardline-coordinator report &lt;out&gt;</code>.</footer>
</body>
</html>
`;
}
