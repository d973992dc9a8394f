/**
 * The dashboard of real runs of the built CLI: `curl <dashboard>/metrics` during a distributed
 * run returns every metric the coordinator README lists, in a text Prometheus can parse, with
 * values that move as the run trains and refused calls counted by reason; `/api/state` and
 * `/api/events` describe the same run; a remote worker's `--metrics-listen` serves its own; a
 * taken 7071 moves the default to a free port; in-process runs have the dashboard too, and
 * `--dashboard off` has none.
 *
 * Short runs (an MLP on 2,048 images) on loopback; the workers and the coordinator are real
 * processes, the scrapes real HTTP requests.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import {
  CHANNEL_OPTIONS,
  CoordinatorClient,
  createTokenInterceptor,
  PROTOCOL_VERSION,
} from '@shardline/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RunSnapshot } from '../src/dashboard/runState.js';
import { joinRequest } from './joinRequest.js';
import { killStarted, logged, startProcess, within, workerCli } from './processes.js';
import { type MetricFamily, parsePrometheusText, sampleValue } from './prometheusText.js';
import { cliPath } from './runCli.js';
import { readEvents } from './serverSentEvents.js';

const TOKEN = 'dashboard-e2e-token-0123456789abcdef';

/** A Join as a rogue client sends it, with or without the token; resolves when answered. */
function rogueJoin(
  address: string,
  token: string | undefined,
  protocolVersion: number,
): Promise<void> {
  const client = new CoordinatorClient(address, credentials.createInsecure(), {
    ...CHANNEL_OPTIONS,
    ...(token === undefined ? {} : { interceptors: [createTokenInterceptor(token)] }),
  });
  return new Promise((resolve) =>
    client.join(joinRequest({ protocolVersion }), () => {
      client.close();
      resolve();
    }),
  );
}

let out: string;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-dashboard-'));
});
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});
afterEach(() => killStarted());

const SHORT_RUN = [
  'train',
  '--model',
  'mlp',
  '--limit-train',
  '2048',
  '--limit-test',
  '300',
  '--log-format',
  'json',
];

/** Holds 127.0.0.1:`port` for a test; resolves undefined when something else already holds it. */
function occupy(port: number): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EADDRINUSE' ? resolve(undefined) : reject(error),
    );
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

async function scrape(url: string): Promise<Map<string, MetricFamily>> {
  const response = await fetch(url);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await response.text());
}

/** Scrapes `url` until `ready` holds for what it parses (the run moves on meanwhile). */
async function scrapeUntil(
  url: string,
  ready: (families: Map<string, MetricFamily>) => boolean,
): Promise<Map<string, MetricFamily>> {
  for (;;) {
    const families = await scrape(url);
    if (ready(families)) return families;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The coordinator metrics the README promises, with their types. */
const COORDINATOR_METRICS: Record<string, MetricFamily['type']> = {
  shardline_steps_total: 'counter',
  shardline_images_per_second: 'gauge',
  shardline_train_loss: 'gauge',
  shardline_train_accuracy: 'gauge',
  shardline_test_loss: 'gauge',
  shardline_test_accuracy: 'gauge',
  shardline_epoch: 'gauge',
  shardline_step_seconds: 'histogram',
  shardline_compute_seconds: 'histogram',
  shardline_exchange_seconds: 'histogram',
  shardline_optimizer_seconds: 'histogram',
  shardline_workers: 'gauge',
  shardline_tensor_bytes_total: 'counter',
  shardline_rejected_messages_total: 'counter',
  shardline_run_state: 'gauge',
  process_cpu_user_seconds_total: 'counter',
  process_resident_memory_bytes: 'gauge',
  nodejs_eventloop_lag_seconds: 'gauge',
};

describe('the dashboard of a distributed run', () => {
  it('serves /metrics, /api/state and /api/events while it trains, the remote worker serves its --metrics-listen, and a taken 7071 moves the default to a free port', async () => {
    const held = await occupy(7071);
    try {
      const coordinator = startProcess(
        cliPath,
        [
          ...SHORT_RUN,
          '--epochs',
          '2',
          '--batch-size',
          '16',
          '--local-workers',
          '1',
          '--min-workers',
          '2',
          '--listen',
          '127.0.0.1:0',
          '--out',
          join(out, 'distributed'),
        ],
        { env: { SHARDLINE_TOKEN: TOKEN } },
      );
      // The dashboard's URL is the run's first log line, before the data loads.
      const first = await within(
        logged(coordinator, () => true),
        60_000,
        'the first log line',
      );
      expect(first).toMatchObject({ msg: 'dashboard listening' });
      const url = String(first.url);
      expect(new URL(url).port).not.toBe('7071');
      expect(first).toMatchObject({
        wanted: '127.0.0.1:7071',
        moved_because: 'taken by another program',
      });

      // Events from the start: the stream opens before the run's `started`.
      const stream = readEvents(`${url}api/events`);
      expect((await stream.response).headers['content-type']).toMatch(/^text\/event-stream/);

      const started = await within(coordinator.event('started'), 60_000, 'started');
      expect(started.dashboard).toBe(url);
      const worker = startProcess(
        workerCli,
        [
          '--coordinator',
          String(started.listen),
          '--name',
          'remote-1',
          '--metrics-listen',
          '127.0.0.1:0',
          '--log-format',
          'json',
        ],
        { env: { SHARDLINE_TOKEN: TOKEN } },
      );
      // Refused calls, counted by reason: one without the token, one from another protocol.
      await rogueJoin(String(started.listen), undefined, PROTOCOL_VERSION);
      await rogueJoin(String(started.listen), TOKEN, PROTOCOL_VERSION + 1);
      const workerMetrics = String(
        (
          await within(
            logged(worker, (r) => r.msg === 'metrics listening'),
            60_000,
            'the worker',
          )
        ).url,
      );

      // Two scrapes while it trains: every metric there, steps growing between them.
      const steps = (f: Map<string, MetricFamily>) => sampleValue(f, 'shardline_steps_total');
      const one = await within(
        scrapeUntil(`${url}metrics`, (f) => steps(f) > 0),
        90_000,
        'the first step',
      );
      const two = await within(
        scrapeUntil(`${url}metrics`, (f) => steps(f) > steps(one)),
        30_000,
        'more steps',
      );
      for (const [name, type] of Object.entries(COORDINATOR_METRICS)) {
        expect(two.get(name)?.type, name).toBe(type);
      }
      expect(sampleValue(two, 'shardline_epoch')).toBeGreaterThanOrEqual(1);
      expect(sampleValue(two, 'shardline_images_per_second')).toBeGreaterThan(0);
      expect(sampleValue(two, 'shardline_train_loss')).toBeGreaterThan(0);
      const accuracy = sampleValue(two, 'shardline_train_accuracy');
      expect(accuracy).toBeGreaterThan(0);
      expect(accuracy).toBeLessThanOrEqual(1);
      for (const name of ['step', 'compute', 'exchange', 'optimizer']) {
        const count = sampleValue(two, `shardline_${name}_seconds_count`);
        expect(count, name).toBe(steps(two));
        expect(sampleValue(two, `shardline_${name}_seconds_sum`), name).toBeGreaterThanOrEqual(0);
        expect(two.get(`shardline_${name}_seconds`)!.samples.length).toBeGreaterThan(3);
      }
      expect(sampleValue(two, 'shardline_workers', { state: 'attached' })).toBe(2);
      expect(sampleValue(two, 'shardline_workers', { state: 'left' })).toBe(0);
      expect(
        sampleValue(two, 'shardline_tensor_bytes_total', { direction: 'out' }),
      ).toBeGreaterThan(sampleValue(one, 'shardline_tensor_bytes_total', { direction: 'out' }));
      expect(sampleValue(two, 'shardline_tensor_bytes_total', { direction: 'in' })).toBeGreaterThan(
        0,
      );
      const rejected = (reason: string) =>
        sampleValue(two, 'shardline_rejected_messages_total', { reason });
      expect(rejected('no_token')).toBe(1);
      expect(rejected('protocol_version')).toBe(1);
      expect(rejected('wrong_token')).toBe(0);
      expect(
        sampleValue(two, 'shardline_run_state', { state: 'training' }) +
          sampleValue(two, 'shardline_run_state', { state: 'evaluating' }),
      ).toBe(1);

      // The remote worker's own metrics, scraped from its --metrics-listen port meanwhile.
      const fromWorker = await within(
        scrapeUntil(workerMetrics, (f) => sampleValue(f, 'shardline_worker_steps_total') > 0),
        30_000,
        "the worker's first step",
      );
      expect(
        sampleValue(fromWorker, 'shardline_worker_connection_state', { state: 'connected' }),
      ).toBe(1);
      expect(sampleValue(fromWorker, 'shardline_worker_compute_seconds_count')).toBeGreaterThan(0);
      expect(
        sampleValue(fromWorker, 'shardline_worker_tensor_bytes_total', { direction: 'in' }),
      ).toBeGreaterThan(0);
      expect(
        sampleValue(fromWorker, 'shardline_worker_tensor_bytes_total', { direction: 'out' }),
      ).toBeGreaterThan(0);
      expect(fromWorker.get('shardline_worker_info')!.samples[0]!.labels).toMatchObject({
        name: 'remote-1',
      });
      expect(fromWorker.get('shardline_worker_rejoins_total')?.type).toBe('counter');
      expect(fromWorker.get('shardline_worker_ring_allreduce_seconds')?.type).toBe('histogram');
      expect(fromWorker.get('shardline_worker_evaluations_total')?.type).toBe('counter');

      // The page and its script come from the package's dashboard/ folder, found from dist/.
      const page = await fetch(url);
      expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(await page.text()).toContain('<script type="module" src="app.js"></script>');
      expect((await fetch(`${url}app.js`)).status).toBe(200);

      const state = (await (await fetch(`${url}api/state`)).json()) as RunSnapshot;
      expect(['training', 'evaluating']).toContain(state.state);
      expect(state.job).toMatchObject({ mode: 'distributed', model: 'mlp', epochs: 2 });
      expect(state.class_names).toHaveLength(10);
      expect(state.steps_per_epoch).toBe(128);
      expect(state.train.points.length).toBeGreaterThan(0);
      expect(state.train.points.at(-1)).toMatchObject({
        epoch: expect.any(Number),
        running_loss: expect.any(Number),
        step_seconds: expect.any(Number),
      });
      const names = state.workers.map((w) => w.name).sort();
      expect(names).toEqual(['local-1', 'remote-1']);
      for (const w of state.workers) {
        expect(w).toMatchObject({
          state: 'attached',
          backend: expect.any(String),
          peer: expect.any(String),
        });
      }

      expect(await within(coordinator.closed, 120_000, 'the run')).toBe(0);
      await within(worker.closed, 30_000, 'the worker');
      // The stream ends with the server, after the final state: every kind of delta came.
      await within(stream.ended, 10_000, 'the end of the event stream');
      const kinds = new Set(stream.events.map((e) => e.event));
      expect(stream.events[0]!.event).toBe('snapshot');
      for (const kind of ['step', 'epoch_end', 'worker', 'state']) expect(kinds).toContain(kind);
      const epochEnds = stream.events.filter((e) => e.event === 'epoch_end');
      expect(epochEnds.map((e) => e.data.epoch)).toEqual([1, 2]);
      expect((epochEnds[1]!.data.confusion as { matrix: number[][] }).matrix).toHaveLength(10);
      const states = stream.events.filter((e) => e.event === 'state').map((e) => e.data.state);
      expect(states.at(-1)).toBe('done');
      const done = coordinator.events.find((e) => e.event === 'done')!;
      expect(stream.events.filter((e) => e.event === 'step').length).toBe(done.step);
      // Closed with the run.
      await expect(fetch(`${url}healthz`)).rejects.toThrow();
    } finally {
      held?.close();
    }
  });
});

describe('the dashboard of an in-process run', () => {
  it('serves the run too, and the page gets the final state before the server closes', async () => {
    const run = startProcess(cliPath, [
      ...SHORT_RUN,
      '--in-process',
      '--epochs',
      '1',
      '--dashboard',
      '127.0.0.1:0',
      '--out',
      join(out, 'in-process'),
    ]);
    const first = await within(
      logged(run, () => true),
      60_000,
      'the first log line',
    );
    expect(first).toMatchObject({ msg: 'dashboard listening' });
    const url = String(first.url);
    const stream = readEvents(`${url}api/events`);
    expect((await within(run.event('started'), 60_000, 'started')).dashboard).toBe(url);
    expect(await within(run.closed, 60_000, 'the run')).toBe(0);
    await within(stream.ended, 10_000, 'the end of the event stream');
    const last = stream.events.filter((e) => e.event === 'state').at(-1);
    expect(last?.data.state).toBe('done');
    const worker = stream.events.filter((e) => e.event === 'worker').at(-1);
    expect(worker?.data).toMatchObject({ id: 'in-process', state: 'finished', share: 1 });
  });

  it('--dashboard off: nothing listens, and `started` has no dashboard', async () => {
    const run = startProcess(cliPath, [
      ...SHORT_RUN,
      '--in-process',
      '--epochs',
      '1',
      '--limit-train',
      '256',
      '--dashboard',
      'off',
      '--out',
      join(out, 'off'),
    ]);
    const started = await within(run.event('started'), 60_000, 'started');
    expect(started).not.toHaveProperty('dashboard');
    expect(await within(run.closed, 60_000, 'the run')).toBe(0);
    expect(run.stderr()).not.toContain('dashboard listening');
  });
});
