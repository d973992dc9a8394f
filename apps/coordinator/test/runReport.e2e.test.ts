/**
 * The run record and report end to end, with the real CLI: a two-worker star run, a ring run and
 * an in-process run each leave events.jsonl (one step event per step, none on stdout),
 * report.html and plots/*.svg; the page's per-class scores are `evaluate --json`'s; `report`
 * rebuilds the same bytes; a run stopped and resumed reads as one run.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killStarted, startProcess } from './processes.js';
import { cliPath, runCli } from './runCli.js';

const PLOTS = ['loss', 'accuracy', 'step-time', 'confusion', 'workers'];

/** A small job: 32 steps of the MLP per epoch (1,024 images at batch 32), 300 test images. */
const JOB = [
  '--model',
  'mlp',
  '--batch-size',
  '32',
  '--limit-train',
  '1024',
  '--limit-test',
  '300',
  '--log-format',
  'json',
];
const STEPS_PER_EPOCH = 32;

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'shardline-report-e2e-'));
});
afterEach(() => killStarted());
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

type Event = Record<string, unknown> & { event: string };

async function recorded(out: string): Promise<Event[]> {
  const text = await readFile(join(out, 'events.jsonl'), 'utf8');
  return text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Event);
}

/** The rows of the per-class table: class -> [precision, recall, F1, support]. */
function perClassTable(html: string): Map<string, number[]> {
  const table = /<table id="per-class-table">.*?<tbody>(.*?)<\/tbody>/s.exec(html)![1]!;
  const rows = new Map<string, number[]>();
  for (const m of table.matchAll(/<tr><th scope="row">([^<]*)<\/th>(.*?)<\/tr>/g)) {
    const cells = [...m[2]!.matchAll(/<td>([^<]*)<\/td>/g)].map((c) =>
      Number(c[1]!.replace(/,/g, '')),
    );
    rows.set(m[1]!.replace(/&#39;/g, "'").replace(/&amp;/g, '&'), cells);
  }
  return rows;
}

/** report.html and each plot's bytes. */
async function reportFiles(out: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  files.set('report.html', await readFile(join(out, 'report.html'), 'utf8'));
  for (const plot of PLOTS) {
    files.set(plot, await readFile(join(out, 'plots', `${plot}.svg`), 'utf8'));
  }
  return files;
}

describe('a two-worker star run', () => {
  let out: string;
  let stdout: Event[];
  beforeAll(async () => {
    out = join(root, 'star');
    const run = await runCli([
      'train',
      ...JOB,
      '--epochs',
      '2',
      '--local-workers',
      '2',
      '--out',
      out,
    ]);
    expect(run.code, run.stderr).toBe(0);
    stdout = run.events();
  });

  it('records one step event per step, in order, and prints none of them', async () => {
    const events = await recorded(out);
    const steps = events.filter((e) => e.event === 'step');
    expect(steps.map((s) => s.step)).toEqual(
      Array.from({ length: 2 * STEPS_PER_EPOCH }, (_, i) => i + 1),
    );
    for (const s of steps) {
      expect(s).toMatchObject({ workers: 2, samples: 32 });
      for (const f of ['batch_loss', 'batch_accuracy', 'step_seconds', 'compute_seconds']) {
        expect(typeof s[f], f).toBe('number');
      }
    }
    expect(stdout.some((e) => e.event === 'step')).toBe(false);
    // Every event stdout printed is in the record too.
    const kinds = (list: Event[]) => list.map((e) => e.event).filter((k) => k !== 'step');
    expect(kinds(events)).toEqual(expect.arrayContaining(kinds(stdout)));
    expect(stdout[0]!.class_names).toHaveLength(10);
    const last = stdout.filter((e) => e.event === 'epoch_end').at(-1)!;
    const confusion = last.confusion as number[][];
    expect(confusion.flat().reduce((a, b) => a + b, 0)).toBe(300);
  });

  it('writes a self-contained report.html with every plot inline and as an SVG file', async () => {
    const html = await readFile(join(out, 'report.html'), 'utf8');
    expect(html.match(/<svg/g)).toHaveLength(PLOTS.length);
    for (const plot of PLOTS) {
      expect(html).toContain(`id="plot-${plot}"`);
      expect((await readFile(join(out, 'plots', `${plot}.svg`), 'utf8')).startsWith('<svg')).toBe(
        true,
      );
    }
    const references = [...html.matchAll(/\s(?:src|href)="([^"]*)"/g)].map((m) => m[1]!);
    expect(references.filter((r) => !r.startsWith('#'))).toEqual([]);
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<script/i);
    expect(html).toContain('Finished: 2 epochs, 64 steps.');
    expect(html).toContain('dense_1 (Dense)');
  });

  it('shows the per-class scores evaluate --json gives for the saved model', async () => {
    const evaluated = await runCli(['evaluate', '--model', out, '--limit-test', '300', '--json']);
    expect(evaluated.code, evaluated.stderr).toBe(0);
    const report = JSON.parse(evaluated.stdout) as {
      perClass: { name: string; precision: number; recall: number; f1: number; support: number }[];
    };
    const table = perClassTable(await readFile(join(out, 'report.html'), 'utf8'));
    expect([...table.keys()]).toEqual(report.perClass.map((c) => c.name));
    for (const c of report.perClass) {
      const [precision, recall, f1, support] = table.get(c.name)!;
      // The table shows four places: equal within rounding.
      expect(precision).toBeCloseTo(c.precision, 4);
      expect(recall).toBeCloseTo(c.recall, 4);
      expect(f1).toBeCloseTo(c.f1, 4);
      expect(support).toBe(c.support);
    }
  });

  it('rebuilds the same report.html and plots with `report <out>`', async () => {
    const before = await reportFiles(out);
    await rm(join(out, 'report.html'));
    await rm(join(out, 'plots'), { recursive: true });
    const rebuilt = await runCli(['report', out]);
    expect(rebuilt.code, rebuilt.stderr).toBe(0);
    expect(rebuilt.stdout).toContain(join(out, 'report.html'));
    const after = await reportFiles(out);
    for (const [name, bytes] of before) expect(after.get(name), name).toBe(bytes);
  });
});

describe('other modes', () => {
  it('records and reports a ring run, whose steps carry the all-reduce time', async () => {
    const out = join(root, 'ring');
    const run = await runCli([
      'train',
      ...JOB,
      '--epochs',
      '1',
      '--local-workers',
      '2',
      '--exchange',
      'ring',
      '--out',
      out,
    ]);
    expect(run.code, run.stderr).toBe(0);
    const steps = (await recorded(out)).filter((e) => e.event === 'step');
    expect(steps).toHaveLength(STEPS_PER_EPOCH);
    expect(steps.every((s) => (s.exchange_seconds as number) > 0)).toBe(true);
    const html = await readFile(join(out, 'report.html'), 'utf8');
    expect(html.match(/<svg/g)).toHaveLength(PLOTS.length);
    expect(html).toContain("Exchange: the slowest member's ring all-reduce.");
  });

  it('reads a run stopped by SIGINT and resumed as one run of two sessions', async () => {
    const out = join(root, 'resumed');
    const args = ['train', ...JOB, '--in-process', '--epochs', '3', '--out', out];
    const first = startProcess(cliPath, args);
    // Stop it once it has recorded a few steps: it finishes the step in flight and checkpoints.
    const events = join(out, 'events.jsonl');
    for (;;) {
      const text = existsSync(events) ? await readFile(events, 'utf8') : '';
      if ((text.match(/"event":"step"/g) ?? []).length >= 3) break;
      if (first.child.exitCode !== null) {
        throw new Error(`train exited before 3 steps were recorded: ${first.stderr()}`);
      }
      await sleep(10);
    }
    first.child.kill('SIGINT');
    // A graceful stop: whatever status it ends with, it left a checkpoint to resume.
    await first.closed;
    expect(first.stderr()).toContain('stopped before the end');
    const stoppedAt = (await recorded(out)).filter((e) => e.event === 'step').length;
    expect(stoppedAt).toBeLessThan(3 * STEPS_PER_EPOCH);
    expect(existsSync(join(out, 'report.html'))).toBe(false);

    const resumed = await runCli([...args, '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    const all = await recorded(out);
    expect(all.filter((e) => e.event === 'started').map((e) => e.resumed_from_step)).toEqual([
      undefined,
      stoppedAt,
    ]);
    const html = await readFile(join(out, 'report.html'), 'utf8');
    expect(html).toContain('Finished: 3 epochs, 96 steps.');
    expect(html).toContain(`2: resumed from step ${stoppedAt}`);
    // The record's steps, joined, are 1..96 once each: the plots drew each step once.
    const loss = await readFile(join(out, 'plots', 'loss.svg'), 'utf8');
    const train = /aria-roledescription="line mark" d="([^"]*)"/.exec(loss)![1]!;
    expect(train.match(/[ML]/g)).toHaveLength(3 * STEPS_PER_EPOCH);
  });

  it('refuses to report a folder that is not a run, or a run from before run records', async () => {
    const empty = join(root, 'not-a-run');
    await mkdir(empty);
    const refused = await runCli(['report', empty]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /is not a training run: expected events\.jsonl .* found an empty folder\. Pass the --out folder of a training run\.\n$/,
    );
    const old = join(root, 'old-run');
    await mkdir(old);
    await writeFile(join(old, 'summary.json'), '{"version":1}\n');
    const old_ = await runCli(['report', old]);
    expect(old_.code).toBe(1);
    expect(old_.stderr).toContain('before run records');
  });
});
