/**
 * What the dashboard serves its page, on real sockets with no training: the charts as the
 * report's own Vega-Lite specs (valid, drawn without warnings by the real Vega), the chart
 * libraries' browser bundles from node_modules and nothing else from there, test images encoded
 * from the run's own test set with every other path under the route refused, the token rule on
 * those routes, and the run state's latest misclassified images.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@shardline/core';
import type { ImageSet } from '@shardline/datasets';
import type { EpochMetrics } from '@shardline/training';
import sharp from 'sharp';
import type { TopLevelSpec } from 'vega-lite';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { LIVE_CHART_NAMES, type LiveCharts, liveCharts } from '../src/dashboard/liveCharts.js';
import { createCoordinatorMetrics } from '../src/dashboard/metrics.js';
import { createRunState } from '../src/dashboard/runState.js';
import { type DashboardServer, startDashboardServer } from '../src/dashboard/server.js';
import { createTestImages } from '../src/dashboard/testImages.js';
import {
  confusionCells,
  DATASETS,
  stepShareChart,
  stepTimeChart,
  withData,
} from '../src/report/charts.js';
import { renderSvg } from '../src/report/svg.js';

const TOKEN = 'dashboard-page-token-0123456789abcdef';
const logger = createLogger({ level: 'silent' });
const assets = mkdtempSync(join(tmpdir(), 'shardline-dashboard-page-'));
writeFileSync(join(assets, 'index.html'), '<!doctype html><title>run</title>');
afterAll(() => rmSync(assets, { recursive: true, force: true }));

const servers: DashboardServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close(100)));
});

/** Three 2x3 RGB test images: image i has every byte equal to 10 * (i + 1) + the byte's index. */
function tinyTestSet(): ImageSet {
  const [height, width, channels, count] = [2, 3, 3, 3];
  const size = height * width * channels;
  const images = new Uint8Array(count * size);
  for (let i = 0; i < count; i++) {
    for (let b = 0; b < size; b++) images[i * size + b] = 10 * (i + 1) + b;
  }
  return { images, labels: new Uint8Array([0, 1, 2]), count, height, width, channels };
}

async function start(options: { token?: string; set?: ImageSet } = {}) {
  const runState = createRunState();
  const metrics = createCoordinatorMetrics({
    runState: () => runState.state,
    workerStates: () => runState.workers().map((w) => w.state),
  });
  const testImages = createTestImages();
  if (options.set) testImages.use(options.set);
  const server = await startDashboardServer({
    settings: {
      address: options.token ? '0.0.0.0:0' : '127.0.0.1:0',
      fallback: false,
      ...(options.token ? { token: options.token } : {}),
    },
    content: { runState, registry: metrics.registry, testImages },
    logger,
    assetsDir: assets,
  });
  servers.push(server);
  return { server, runState };
}

const started = {
  mode: 'distributed' as const,
  model: 'mlp',
  dataset: 'fashion-mnist',
  backend: 'cpu',
  parameters: 10,
  train_samples: 3200,
  test_samples: 3,
  epochs: 4,
  batch_size: 32,
  steps_per_epoch: 100,
  out: '/tmp/run',
  class_names: ['cat', 'dog', 'bird'],
};

const epochEnd = (epoch: number, wrong: EpochMetrics['misclassified']): EpochMetrics => ({
  epoch,
  train_loss: 1,
  train_accuracy: 0.5,
  test_loss: 0.9,
  test_accuracy: 0.6,
  images_per_second: 64,
  workers: 1,
  step: epoch * 100,
  confusion: [
    [1, 0, 0],
    [0, 0, 1],
    [0, 0, 1],
  ],
  ...(wrong ? { misclassified: wrong } : {}),
});

describe('/api/charts', () => {
  it("serves the report's specs, sized for the run as planned, each naming the datasets it reads", async () => {
    const { server, runState } = await start();
    runState.reporter.started(started);
    const response = await fetch(`${server.url}api/charts`);
    expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const body = (await response.json()) as LiveCharts;
    expect(body.datasets).toEqual(DATASETS);
    expect(body.planned_steps).toBe(400);
    expect(body.charts.map((c) => c.name)).toEqual([...LIVE_CHART_NAMES]);
    const byName = Object.fromEntries(body.charts.map((c) => [c.name, c]));
    expect(byName.loss!.datasets.sort()).toEqual(['epochs', 'steps']);
    expect(byName['step-share']!.datasets).toEqual(['steps']);
    expect(byName['step-time']!.datasets).toEqual(['epochs']);
    expect(byName.confusion!.datasets).toEqual(['confusion']);
    // The same spec as the report's, with the run's smoothing (400 steps / 20).
    expect(byName['step-time']!.spec).toEqual(JSON.parse(JSON.stringify(stepTimeChart())));
    expect(JSON.stringify(byName.loss!.spec)).toContain('train (mean of 20 steps)');
    // The heat map has a cell per pair of the run's classes.
    expect((byName.confusion!.spec as { width?: number }).width).toBe(3 * 44);
  });

  it('before the run starts, still serves drawable specs (for a short run)', () => {
    const charts = liveCharts({ epochs: 0, steps_per_epoch: 0, class_names: [] });
    expect(charts.planned_steps).toBe(0);
    expect(charts.charts).toHaveLength(LIVE_CHART_NAMES.length);
  });

  it("draws every live spec with rows like the page's, with no warning from Vega-Lite or Vega", async () => {
    const steps = Array.from({ length: 60 }, (_, i) => ({
      step: i + 1,
      epoch: 1,
      step_in_epoch: i + 1,
      batch_loss: 2 / (i + 1),
      batch_accuracy: i / 60,
      running_loss: 1,
      running_accuracy: 0.5,
      samples: 32,
      images_per_second: 300,
      step_seconds: 0.1,
      compute_seconds: 0.06,
      exchange_seconds: 0.02,
      optimizer_seconds: 0.01,
      workers: 2,
      time: `2026-01-01T00:00:${String(i % 60).padStart(2, '0')}Z`,
    }));
    const epochs = [
      {
        ...epochEnd(1, undefined),
        step_seconds: 0.1,
        compute_seconds: 0.06,
        exchange_seconds: 0.02,
        optimizer_seconds: 0.01,
        time: '2026-01-01T00:01:00Z',
      },
    ];
    const data = {
      steps,
      epochs,
      confusion: confusionCells(epochEnd(1, undefined).confusion!, started.class_names),
      membership: [],
    };
    const specs: TopLevelSpec[] = [
      ...liveCharts(started).charts.map((c) => c.spec),
      stepShareChart({ smoothing: 1 }),
      stepShareChart({ smoothing: 5, every: 3 }),
    ];
    for (const spec of specs) {
      const warnings: string[] = [];
      const svg = await renderSvg(withData(spec, data), { onWarning: (w) => warnings.push(w) });
      expect(warnings, String(spec.title)).toEqual([]);
      expect(svg).toMatch(/^<svg/);
    }
  });
});

describe('/vendor/', () => {
  it("serves Vega's and Vega-Lite's browser bundles from node_modules, with the page's CSP", async () => {
    const { server } = await start();
    for (const [name, global] of [
      ['vega.min.js', 'vega'],
      ['vega-lite.min.js', 'vegaLite'],
    ] as const) {
      const response = await fetch(`${server.url}vendor/${name}`);
      expect(response.status, name).toBe(200);
      expect(response.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
      expect(response.headers.get('content-security-policy')).toContain("default-src 'self'");
      // A UMD bundle that defines the global the page reads.
      expect((await response.text()).slice(0, 400)).toContain(`.${global}=`);
    }
  });

  it('serves nothing else from node_modules', async () => {
    const { server } = await start();
    for (const path of [
      'vendor/vega.js',
      'vendor/vega-core.min.js',
      'vendor/package.json',
      'vendor/../package.json',
      'vendor/%2e%2e/vega.min.js',
      'vendor/constructor',
      'vendor/',
    ]) {
      expect((await fetch(`${server.url}${path}`)).status, path).toBe(404);
    }
  });
});

describe('/api/test-images/<index>.png', () => {
  it("encodes the run's own test image as a PNG of its size and pixels", async () => {
    const set = tinyTestSet();
    const { server } = await start({ set });
    for (const index of [0, 2]) {
      const response = await fetch(`${server.url}api/test-images/${index}.png`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('image/png');
      const png = Buffer.from(await response.arrayBuffer());
      const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height, info.channels]).toEqual([3, 2, 3]);
      const size = 2 * 3 * 3;
      expect([...data]).toEqual([
        ...(set.images as Uint8Array).slice(index * size, (index + 1) * size),
      ]);
    }
  });

  it('encodes single-channel images as grey PNGs', async () => {
    const images = new Uint8Array([0, 64, 128, 255]);
    const set: ImageSet = {
      images,
      labels: new Uint8Array([1]),
      count: 1,
      height: 2,
      width: 2,
      channels: 1,
    };
    const { server } = await start({ set });
    const png = Buffer.from(
      await (await fetch(`${server.url}api/test-images/0.png`)).arrayBuffer(),
    );
    expect((await sharp(png).metadata()).channels).toBe(1);
    const data = await sharp(png).toColourspace('b-w').raw().toBuffer();
    expect([...data]).toEqual([0, 64, 128, 255]);
  });

  it('answers 404 past the last image, saying how many there are', async () => {
    const { server } = await start({ set: tinyTestSet() });
    const response = await fetch(`${server.url}api/test-images/3.png`);
    expect(response.status).toBe(404);
    expect(await response.text()).toBe(
      "No test image 3: this run's test set has 3 images, indices 0 to 2.\n",
    );
  });

  it('answers 404 to any other path under the route', async () => {
    const { server } = await start({ set: tinyTestSet() });
    for (const path of [
      '-1.png',
      '01.png',
      '1.0.png',
      '1e0.png',
      '1.png.png',
      '1.jpg',
      '1',
      '%31.png',
      '..%2f..%2fpackage.json',
      '1.png/',
      '9999999999.png',
      '',
    ]) {
      const response = await fetch(`${server.url}api/test-images/${path}`);
      expect(response.status, path).toBe(404);
      expect(await response.text(), path).toMatch(/^No test image at \/api\/test-images\//);
    }
  });

  it('answers 404 without a test set, saying that the page shows labels only', async () => {
    const { server } = await start();
    const response = await fetch(`${server.url}api/test-images/0.png`);
    expect(response.status).toBe(404);
    expect(await response.text()).toMatch(/holds no copy of the run's test images.*labels/);
  });

  it('beyond loopback, needs the token like every route', async () => {
    const { server } = await start({ token: TOKEN, set: tinyTestSet() });
    for (const path of ['api/test-images/0.png', 'api/charts', 'vendor/vega.min.js']) {
      expect((await fetch(`${server.url}${path}`)).status, path).toBe(401);
      const allowed = await fetch(`${server.url}${path}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(allowed.status, path).toBe(200);
    }
  });
});

describe("the run state's misclassified images", () => {
  it("keeps the latest evaluation's, out of the test series, and pushes them with epoch_end", () => {
    const run = createRunState();
    const pushed: unknown[] = [];
    run.subscribe((d) => d.event === 'epoch_end' && pushed.push(d.data.misclassified));
    run.reporter.started(started);
    const first = [{ index: 2, label: 1, predicted: 2, confidence: 0.75 }];
    const second = [{ index: 1, label: 0, predicted: 2, confidence: 0.5 }];
    run.reporter.epochEnd(epochEnd(1, first));
    run.reporter.epochEnd(epochEnd(2, second));
    const snapshot = run.snapshot();
    expect(snapshot.misclassified).toEqual({ epoch: 2, samples: second });
    for (const point of snapshot.test) expect(point).not.toHaveProperty('misclassified');
    expect(pushed).toEqual([
      { epoch: 1, samples: first },
      { epoch: 2, samples: second },
    ]);
    // An evaluation that kept none leaves the latest that did.
    run.reporter.epochEnd(epochEnd(3, undefined));
    expect(run.snapshot().misclassified?.epoch).toBe(2);
    run.reporter.done({ ...epochEnd(4, second), model_path: '/m', summary_path: '/s' });
    expect(run.snapshot().result).not.toHaveProperty('misclassified');
  });
});
