// The report from a known run record: each chart spec rendered to SVG by the real Vega, with
// the marks the record calls for; the page built from it; and the folder checks of `report`.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasErrorCode } from '@shardline/core';
import { precisionRecallF1 } from '@shardline/metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  accuracyChart,
  chartData,
  lossChart,
  type ReportChart,
  reportCharts,
  withData,
  workersChart,
} from '../src/report/charts.js';
import { joinRunEvents, parseEventLines, type RecordedRun } from '../src/report/record.js';
import { buildReportHtml, readReportInputs, writeRunReport } from '../src/report/report.js';
import { renderSvg } from '../src/report/svg.js';
import type { RunSummaryFile } from '../src/runOutputs.js';

const CLASSES = ['cat', 'dog', 'bird'];
const STEPS_PER_EPOCH = 5;
const EPOCHS = 2;
const CONFUSION = [
  [8, 1, 1],
  [2, 6, 2],
  [0, 3, 7],
];

/** A run of 2 epochs x 5 steps: two workers join, one leaves after step 7. */
function knownRecord(): string {
  const t = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
  const lines: object[] = [
    {
      event: 'started',
      time: t(0),
      mode: 'distributed',
      model: 'tiny',
      dataset: 'pets',
      backend: 'cpu',
      parameters: 1234,
      epochs: EPOCHS,
      steps_per_epoch: STEPS_PER_EPOCH,
      exchange: 'star',
      class_names: CLASSES,
      out: '/runs/known',
    },
    { event: 'worker_joined', time: t(1), worker: 'w1', hostname: 'a', workers: 1 },
    { event: 'worker_joined', time: t(1), worker: 'w2', hostname: 'b', workers: 2 },
  ];
  for (let step = 1; step <= EPOCHS * STEPS_PER_EPOCH; step++) {
    const epoch = Math.ceil(step / STEPS_PER_EPOCH);
    lines.push({
      event: 'step',
      time: t(1 + step),
      step,
      epoch,
      step_in_epoch: step - (epoch - 1) * STEPS_PER_EPOCH,
      steps_per_epoch: STEPS_PER_EPOCH,
      batch_loss: 2 / step,
      batch_accuracy: step / 20,
      running_loss: 2 / step,
      running_accuracy: step / 20,
      samples: 16,
      images_per_second: 160,
      step_seconds: 0.1,
      compute_seconds: 0.06,
      exchange_seconds: 0.02,
      optimizer_seconds: 0.01,
      workers: step <= 7 ? 2 : 1,
    });
    if (step === 7) {
      lines.push({
        event: 'worker_left',
        time: t(9),
        worker: 'w2',
        reason: 'it crashed',
        workers: 1,
      });
    }
    if (step % STEPS_PER_EPOCH === 0) {
      lines.push({
        event: 'epoch_end',
        time: t(1 + step),
        epoch,
        step,
        train_loss: 1 / epoch,
        train_accuracy: 0.5 * epoch,
        test_loss: 1.1 / epoch,
        test_accuracy: 0.4 * epoch,
        images_per_second: 160,
        workers: 2,
        step_seconds: 0.1,
        compute_seconds: 0.06,
        exchange_seconds: 0.02,
        optimizer_seconds: 0.01,
        confusion: CONFUSION,
      });
    }
  }
  lines.push({ event: 'done', time: t(20), epoch: 2 });
  return lines.map((l) => `${JSON.stringify(l)}\n`).join('');
}

const run: RecordedRun = joinRunEvents(parseEventLines(knownRecord()));

/** Renders a spec, failing on any warning Vega-Lite or Vega gives about it. */
async function render(spec: Parameters<typeof renderSvg>[0]): Promise<string> {
  const warnings: string[] = [];
  const svg = await renderSvg(spec, { onWarning: (w) => warnings.push(w) });
  expect(warnings).toEqual([]);
  return svg;
}

/** The items of each mark group of an SVG, by the group's name (`layer_0_marks`, ...). */
function markGroups(svg: string): Map<string, { type: string; items: string[] }> {
  const groups = new Map<string, { type: string; items: string[] }>();
  for (const m of svg.matchAll(/<g class="mark-(\w+) role-mark (\w+)"[^>]*>(.*?)<\/g>/g)) {
    const items = [...m[3]!.matchAll(/<(path|text)[^>]*role="graphics-symbol"[^>]*>/g)].map(
      (i) => i[0],
    );
    groups.set(m[2]!, { type: m[1]!, items });
  }
  return groups;
}

/** Vertices of a line item's path (`M` and `L` commands). */
const vertices = (item: string) => (/ d="([^"]*)"/.exec(item)?.[1]?.match(/[ML]/g) ?? []).length;

describe('report charts rendered by Vega', () => {
  const charts = new Map<ReportChart['name'], string>();
  beforeAll(async () => {
    for (const chart of reportCharts(run)) charts.set(chart.name, await render(chart.spec));
  });

  it('renders every chart of a run, in the order of the page', () => {
    expect([...charts.keys()]).toEqual(['loss', 'accuracy', 'step-time', 'confusion', 'workers']);
    for (const svg of charts.values()) expect(svg.startsWith('<svg')).toBe(true);
  });

  it('draws the train curves through every step and the test curves through every epoch', () => {
    for (const name of ['loss', 'accuracy'] as const) {
      const groups = markGroups(charts.get(name)!);
      // Ten steps are too few to smooth: one train line, then the test line and its points.
      const [train, testLine, testPoints] = [...groups.values()];
      expect(train!.type).toBe('line');
      expect(vertices(train!.items[0]!)).toBe(EPOCHS * STEPS_PER_EPOCH);
      expect(vertices(testLine!.items[0]!)).toBe(EPOCHS);
      expect(testPoints!.type).toBe('symbol');
      expect(testPoints!.items).toHaveLength(EPOCHS);
    }
  });

  it('draws every n-th step when asked to thin a long run, the step line turning where the workers changed', async () => {
    const data = chartData(run);
    const [train] = [...markGroups(await render(withData(lossChart({ every: 4 }), data))).values()];
    // Steps 1, 4 and 8 of 10.
    expect(vertices(train!.items[0]!)).toBe(3);
    const [line] = [
      ...markGroups(await render(withData(workersChart({ every: 3 }), data))).values(),
    ];
    // Steps 1, 3, 6 and 9, and step 8, where one worker left; step-after draws two vertices per
    // point but the first.
    expect(vertices(line!.items[0]!)).toBe(2 * 5 - 1);
  });

  it('adds a moving average when asked to smooth', async () => {
    const data = chartData(run);
    for (const spec of [lossChart({ smoothing: 3 }), accuracyChart({ smoothing: 3 })]) {
      const groups = [...markGroups(await render(withData(spec, data))).values()];
      expect(groups.map((g) => g.type)).toEqual(['line', 'line', 'line', 'symbol']);
      expect(vertices(groups[1]!.items[0]!)).toBe(EPOCHS * STEPS_PER_EPOCH);
    }
    expect(await render(withData(lossChart({ smoothing: 3 }), data))).toContain(
      'train (mean of 3 steps)',
    );
  });

  it('stacks compute, exchange, optimizer and the rest for each epoch', () => {
    const [bars] = [...markGroups(charts.get('step-time')!).values()];
    expect(bars!.type).toBe('rect');
    expect(bars!.items).toHaveLength(EPOCHS * 4);
    const labels = bars!.items.map((i) => /aria-label="([^"]*)"/.exec(i)![1]!);
    for (const part of ['compute', 'exchange', 'optimizer', 'other']) {
      expect(labels.filter((l) => l.includes(`part: ${part}`))).toHaveLength(EPOCHS);
    }
  });

  it('draws one cell and one count per pair of classes of the last confusion matrix', () => {
    const [cells, counts] = [...markGroups(charts.get('confusion')!).values()];
    expect(cells!.type).toBe('rect');
    expect(cells!.items).toHaveLength(CLASSES.length ** 2);
    expect(counts!.type).toBe('text');
    const svg = charts.get('confusion')!;
    const texts = [...svg.matchAll(/aria-roledescription="text mark"[^>]*>([^<]*)<\/text>/g)].map(
      (m) => Number(m[1]),
    );
    expect(texts.sort((a, b) => a - b)).toEqual(CONFUSION.flat().sort((a, b) => a - b));
    for (const name of CLASSES) expect(svg).toContain(`>${name}</text>`);
  });

  it('draws the workers of every step and a point per join or leave', () => {
    const [line, points] = [...markGroups(charts.get('workers')!).values()];
    expect(line!.type).toBe('line');
    expect(line!.items).toHaveLength(1);
    expect(points!.type).toBe('symbol');
    expect(points!.items).toHaveLength(3);
    expect(points!.items.filter((p) => p.includes('change: left'))).toHaveLength(1);
  });

  it('gives the same bytes for the same record', async () => {
    const [loss] = reportCharts(run);
    expect(await render(loss!.spec)).toBe(charts.get('loss'));
  });

  it('builds a page with every section, the plots inline and nothing fetched from anywhere', () => {
    const summary = {
      config: { epochs: 2, model: 'tiny' },
      finishedAt: '2026-01-01T00:00:20.000Z',
      modelSummary: {
        name: 'tiny',
        layers: [{ name: 'dense_1', className: 'Dense', outputShape: [null, 3], params: 1234 }],
        totalParams: 1234,
        trainableParams: 1234,
        nonTrainableParams: 0,
      },
    } as unknown as RunSummaryFile;
    const html = buildReportHtml({ run, summary }, charts);
    for (const id of [
      'summary',
      'curves',
      'per-class',
      'confusion',
      'timings',
      'workers',
      'configuration',
      'model',
    ]) {
      expect(html).toContain(`<section id="${id}">`);
    }
    expect(html.match(/<svg/g)).toHaveLength(5);
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<script|<link|<img|\ssrc=/i);
    // Per-class scores from @shardline/metrics, to four places.
    const scores = precisionRecallF1(CONFUSION, { classNames: CLASSES });
    for (const c of scores.perClass) {
      expect(html).toContain(
        `<tr><th scope="row">${c.name}</th><td>${c.precision.toFixed(4)}</td><td>${c.recall.toFixed(4)}</td><td>${c.f1.toFixed(4)}</td><td>${c.support}</td></tr>`,
      );
    }
    expect(html).toContain('Finished: 2 epochs, 10 steps.');
    expect(html).toContain('<td>it crashed</td>');
    expect(html).toContain('dense_1 (Dense)');
    expect(html).toContain('<td>(None, 3)</td>');
  });
});

describe('reading a run folder', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'shardline-report-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const refusal = (out: string): Promise<Error> =>
    readReportInputs(out).then(
      () => {
        throw new Error(`expected ${out} to be refused`);
      },
      (e: unknown) => e as Error,
    );

  it('says what a run folder holds when given one that is not', async () => {
    const empty = join(root, 'empty');
    await mkdir(empty);
    const error = await refusal(empty);
    expect(hasErrorCode(error, 'NOT_FOUND')).toBe(true);
    expect(error.message).toContain('is not a training run: expected events.jsonl');
    expect(error.message).toContain('found an empty folder');
    await writeFile(join(empty, 'notes.txt'), 'x');
    expect((await refusal(empty)).message).toContain('found notes.txt');
    expect((await refusal(join(root, 'missing'))).message).toContain('no such folder');
    expect((await refusal(join(empty, 'notes.txt'))).message).toContain('is a file');
  });

  it('names a run from before run records as such', async () => {
    const old = join(root, 'old');
    await mkdir(old);
    await writeFile(join(old, 'summary.json'), '{"version":1}');
    const error = await refusal(old);
    expect(error.message).toContain('but no events.jsonl');
    expect(error.message).toContain('before run records');
  });

  it('reports an unfinished run from its record alone', async () => {
    const partial = join(root, 'partial');
    await mkdir(partial);
    // The first epoch and two steps of the second, then the run was stopped (no summary.json).
    const cut = knownRecord()
      .split('\n')
      .filter((l) => l !== '')
      .slice(0, 12);
    await writeFile(join(partial, 'events.jsonl'), `${cut.join('\n')}\n`);
    const written = await writeRunReport(partial);
    const html = await readFile(written.reportPath, 'utf8');
    expect(html).toContain('Not finished: stopped after step 7 of 10');
    expect(html).toContain('there is no summary.json yet');
    expect(written.plotPaths.map((p) => p.slice(partial.length + 1))).toEqual([
      'plots/loss.svg',
      'plots/accuracy.svg',
      'plots/step-time.svg',
      'plots/confusion.svg',
      'plots/workers.svg',
    ]);
  });
});
