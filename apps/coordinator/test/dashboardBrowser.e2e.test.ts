/**
 * The dashboard page in a real browser (Debian's Chromium, driven by playwright-core) against a
 * real distributed run of the built CLI: a coordinator with no local workers and two remote
 * worker processes training fast-cnn on 3,072 Fashion-MNIST images. The page loads from the
 * coordinator alone (no console errors, no request to another origin), finds its stream again
 * after the coordinator refused it once (re-reading api/state), counts steps and grows its loss
 * curve while the run trains, shows a SIGKILLed worker as gone while the other carries on, draws
 * the confusion heat map and the misclassified test images (decoded by the browser) after an
 * epoch, and shows the run's final state when the coordinator stops.
 *
 * A screenshot taken mid-training goes to `<out>/dashboard.png` (and, with
 * SHARDLINE_DASHBOARD_SCREENSHOT=<path>, to that path too, as a 256-colour PNG: docs/dashboard.png
 * is made this way).
 *
 * About 30 s on 2 cores. Skipped only when /usr/bin/chromium is missing (`apt-get install -y
 * chromium`; .ci/run installs it).
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Browser, chromium, type Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  killStarted,
  logged,
  startProcess,
  type TestProcess,
  within,
  workerCli,
} from './processes.js';
import { cliPath } from './runCli.js';

const CHROMIUM = '/usr/bin/chromium';
const missing = existsSync(CHROMIUM)
  ? undefined
  : `skipped: ${CHROMIUM} is missing (apt-get install -y chromium)`;

const EPOCHS = 6;
const STEPS_PER_EPOCH = 96; // 3,072 images, batch 32

let out: string;
let browser: Browser | undefined;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-dashboard-browser-'));
});
afterEach(async () => {
  await browser?.close();
  browser = undefined;
  killStarted();
});
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});

/** Starts a remote worker of the job at `listen`. */
function remoteWorker(listen: string, name: string): TestProcess {
  return startProcess(workerCli, ['--coordinator', listen, '--name', name, '--log-format', 'json']);
}

/**
 * Reads `read` every 150 ms until `ok` accepts what it read; fails after `timeoutMs` naming
 * `what` and the last value. (Polled from Node: this project's TypeScript has no DOM types, so
 * what runs in the page is passed as expressions.)
 */
async function eventually<T>(
  what: string,
  read: () => Promise<T>,
  ok: (value: T) => boolean,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(
        `${what}: not seen within ${timeoutMs / 1000} s; last: ${JSON.stringify(value)}`,
      );
    }
    await sleep(150);
  }
}

/** What the page shows in `selector`'s `data-<name>` (null when there is no such element). */
function dataOf(page: Page, selector: string, name: string): Promise<string | null> {
  return page
    .locator(selector)
    .first()
    .getAttribute(`data-${name}`, { timeout: 1000 })
    .catch(() => null);
}

/** The page's step counter. */
async function pageStep(page: Page): Promise<number> {
  return Number(await dataOf(page, '#step', 'value'));
}

/** Rows of a dataset in one of the page's Vega views (0 before the charts are built). */
function chartRows(page: Page, chart: string, dataset: string): Promise<number> {
  return page.evaluate(
    `globalThis.shardlineDashboard.views[${JSON.stringify(chart)}]?.data(${JSON.stringify(dataset)}).length ?? 0`,
  ) as Promise<number>;
}

describe(`the dashboard page in Chromium${missing ? ` (${missing})` : ''}`, () => {
  it.skipIf(missing !== undefined)(
    'loads from the coordinator alone, follows the run live, shows a killed worker as gone, and draws the evaluation',
    { timeout: 150_000 },
    async () => {
      // The browser first, so the page can open while the run still prepares, as a user's
      // does (before `started` it learns the job from api/state once the run starts).
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--no-sandbox'],
      });
      const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
      const consoleErrors: string[] = [];
      const requests: string[] = [];
      page.on('console', (message) => {
        if (message.type() === 'error') consoleErrors.push(message.text());
      });
      page.on('pageerror', (error) => consoleErrors.push(`uncaught: ${error.message}`));
      page.on('request', (request) => requests.push(request.url()));
      // The first event stream is refused (as a proxy in between might): the page must re-read
      // api/state and open a new stream by itself.
      let refused = 0;
      await page.route('**/api/events', async (route) => {
        if (refused++ === 0) {
          await route.fulfill({ status: 503, contentType: 'text/plain', body: 'try later' });
        } else {
          await route.continue();
        }
      });

      const runOut = join(out, 'run');
      const coordinator = startProcess(cliPath, [
        'train',
        '--model',
        'fast-cnn',
        '--limit-train',
        String(STEPS_PER_EPOCH * 32),
        '--limit-test',
        '500',
        '--epochs',
        String(EPOCHS),
        '--batch-size',
        '32',
        '--local-workers',
        '0',
        '--min-workers',
        '1',
        '--listen',
        '127.0.0.1:0',
        '--dashboard',
        '127.0.0.1:0',
        '--out',
        runOut,
        '--log-format',
        'json',
      ]);
      // The dashboard's URL is the run's first log line, before the data loads.
      const listening = await within(
        logged(coordinator, (r) => r.msg === 'dashboard listening'),
        60_000,
        'the dashboard',
      );
      const url = String(listening.url);
      const origin = new URL(url).origin;
      await page.goto(url);
      const started = await within(coordinator.event('started'), 60_000, 'started');
      expect(started.dashboard).toBe(url);
      const listen = String(started.listen);
      const workers = [remoteWorker(listen, 'remote-1'), remoteWorker(listen, 'remote-2')];

      expect(await page.textContent('h1')).toBe('Shardline run');
      await eventually(
        'the page connected to the event stream',
        () => dataOf(page, '#connection', 'live'),
        (live) => live === 'true',
        30_000,
      );
      expect(refused).toBeGreaterThanOrEqual(2);
      const refusedAt = requests.findIndex((r) => r.endsWith('/api/events'));
      expect(requests.slice(refusedAt).some((r) => r.endsWith('/api/state'))).toBe(true);
      await page.unroute('**/api/events');

      // Both workers in the table, training; the step counter and the loss curve grow.
      await eventually(
        'two workers attached on the page',
        () => page.locator('#workers tbody tr[data-state="attached"]').count(),
        (n) => n === 2,
        60_000,
      );
      const first = await eventually(
        'a first step',
        () => pageStep(page),
        (n) => n > 0,
        60_000,
      );
      const rowsBefore = await chartRows(page, 'loss', 'steps');
      const second = await eventually(
        'more steps',
        () => pageStep(page),
        (n) => n > first + 5,
        30_000,
      );
      await eventually(
        "more points in the loss chart's steps",
        () => chartRows(page, 'loss', 'steps'),
        (n) => n > rowsBefore,
        30_000,
      );
      expect(second).toBeGreaterThan(first);
      expect(await dataOf(page, '#state', 'value')).toMatch(/^(training|evaluating)$/);
      expect(Number(await dataOf(page, '#throughput', 'value'))).toBeGreaterThan(0);

      // One worker dies: it stays in the table, as gone; the other trains on.
      workers[1]!.child.kill('SIGKILL');
      await eventually(
        'remote-2 shown as gone',
        () => page.locator('#workers tr[data-worker="remote-2"] td.state').textContent(),
        (text) => text === 'gone',
        30_000,
      );
      expect(await dataOf(page, '#workers tr[data-worker="remote-2"]', 'state')).toBe('left');
      expect(await page.textContent('#workers tr[data-worker="remote-1"] td.state')).toBe(
        'training',
      );
      const afterKill = await pageStep(page);
      await eventually(
        'steps after the kill',
        () => pageStep(page),
        (n) => n > afterKill + 5,
        60_000,
      );

      // After an epoch (the second, so that each test curve has a line): the heat map and the
      // grid of misclassified test images, decoded by the browser.
      await eventually(
        'the third epoch',
        async () => Number(await dataOf(page, '#epoch', 'value')),
        (epoch) => epoch >= 3,
        60_000,
      );
      // Each test curve has a point per finished epoch (charts redraw at most twice a second).
      await eventually(
        "the loss chart's test points",
        () => chartRows(page, 'loss', 'epochs'),
        (n) => n >= 2,
        10_000,
      );
      expect(await page.isVisible('#confusion-section')).toBe(true);
      await eventually(
        "the heat map's rows",
        () => chartRows(page, 'confusion', 'confusion'),
        (n) => n === 100,
        10_000,
      );
      await eventually(
        "the heat map's 100 cells",
        () => page.locator('[data-chart="confusion"] g.mark-rect.role-mark path').count(),
        (n) => n === 100,
        10_000,
      );
      expect(await page.isVisible('#misclassified-section')).toBe(true);
      const images = await eventually(
        'the misclassified images loaded',
        () =>
          page.evaluate(
            "[...document.querySelectorAll('#misclassified img')].map((img) => ({ complete: img.complete, width: img.naturalWidth, alt: img.alt }))",
          ) as Promise<Array<{ complete: boolean; width: number; alt: string }>>,
        (imgs) => imgs.length > 0 && imgs.every((img) => img.complete),
        10_000,
      );
      for (const image of images) {
        expect(image.width).toBe(28);
        expect(image.alt).toMatch(/^Test image \d+: a .+, predicted .+$/);
      }

      // Mid-training: the screenshot the docs use.
      expect(await dataOf(page, '#state', 'value')).toMatch(/^(training|evaluating)$/);
      const screenshot = join(runOut, 'dashboard.png');
      await page.screenshot({ path: screenshot, fullPage: true });
      expect(existsSync(screenshot)).toBe(true);
      const copyTo = process.env.SHARDLINE_DASHBOARD_SCREENSHOT;
      if (copyTo) {
        await mkdir(dirname(resolve(copyTo)), { recursive: true });
        // 256 colours: the same to the eye (flat colours, grey images), a third of the bytes.
        await sharp(screenshot)
          .png({ palette: true, compressionLevel: 9, effort: 10 })
          .toFile(resolve(copyTo));
      }

      // Stopped (SIGTERM: a checkpoint, then exit 0): the page gets the final state.
      coordinator.child.kill('SIGTERM');
      expect(await within(coordinator.closed, 60_000, 'the coordinator stopping')).toBe(0);
      await within(workers[0]!.closed, 30_000, 'the remaining worker');
      await eventually(
        'the final state on the page',
        () => dataOf(page, '#state', 'value'),
        (state) => state === 'stopped',
        10_000,
      );
      expect(await dataOf(page, '#connection', 'live')).toBe('false');

      // The only console error is the refusal injected above; every request went to the
      // coordinator.
      expect(consoleErrors.filter((e) => !/\b503\b/.test(e))).toEqual([]);
      const elsewhere = requests.filter(
        (r) => !r.startsWith('data:') && new URL(r).origin !== origin,
      );
      expect(elsewhere).toEqual([]);
      expect(requests).toContain(`${origin}/vendor/vega.min.js`);
      expect(requests).toContain(`${origin}/api/charts`);
    },
  );
});
