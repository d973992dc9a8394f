/**
 * The dashboard's server on real sockets, fed a run's events by hand (no training): the token
 * rules beyond loopback (401 without it, Bearer, the browser's ?token= that sets an HttpOnly
 * cookie), the routes, the page's files and nothing outside their folder, the event stream's
 * bound on a client that does not read, the default address moving off a taken port while an
 * explicit one fails, and the checks run before anything starts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@shardline/core';
import type { StepProgress } from '@shardline/training';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { accessCookieName } from '../src/dashboard/access.js';
import { checkDashboard } from '../src/dashboard/address.js';
import { createCoordinatorMetrics } from '../src/dashboard/metrics.js';
import { openRunDashboard } from '../src/dashboard/runDashboard.js';
import { createRunState } from '../src/dashboard/runState.js';
import { type DashboardServer, startDashboardServer } from '../src/dashboard/server.js';
import { createEventReporter } from '../src/reporter.js';
import { parsePrometheusText, sampleValue } from './prometheusText.js';
import { readEvents } from './serverSentEvents.js';

const TOKEN = 'dashboard-token-0123456789abcdef';
const logger = createLogger({ level: 'silent' });
const assets = mkdtempSync(join(tmpdir(), 'shardline-dashboard-assets-'));
writeFileSync(join(assets, 'index.html'), '<!doctype html><title>run</title>');
writeFileSync(join(assets, 'app.js'), 'console.log(1);');
writeFileSync(join(tmpdir(), 'shardline-dashboard-outside.txt'), 'secret');
afterAll(() => rmSync(assets, { recursive: true, force: true }));

const servers: DashboardServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close(100)));
});

async function start(
  address: string,
  options: { token?: string; fallback?: boolean; maxBufferedBytes?: number } = {},
) {
  const runState = createRunState();
  const metrics = createCoordinatorMetrics({
    runState: () => runState.state,
    workerStates: () => runState.workers().map((w) => w.state),
  });
  const server = await startDashboardServer({
    settings: {
      address,
      fallback: options.fallback ?? false,
      ...(options.token === undefined ? {} : { token: options.token }),
    },
    content: { runState, registry: metrics.registry },
    logger,
    assetsDir: assets,
    events: { maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024, keepAliveMs: 50 },
  });
  servers.push(server);
  return { server, runState, metrics };
}

/** A GET with Node's client: raw headers, no redirects followed, no cookie jar. */
function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Resolves once `condition` holds, checking every 10 ms. */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((r) => setTimeout(r, 10));
}

const step = (n: number): StepProgress => ({
  epoch: 1,
  epochs: 1,
  stepInEpoch: n,
  stepsPerEpoch: 1000,
  loss: 1,
  accuracy: 0.5,
  imagesPerSecond: 100,
  step: n,
  stepLoss: 1,
  stepAccuracy: 0.5,
  samples: 32,
  workers: 1,
  stepSeconds: 0.01,
  computeSeconds: 0.008,
  exchangeSeconds: 0.001,
  optimizerSeconds: 0.001,
});

describe('beyond loopback, every request needs the job token', () => {
  it('answers 401 without it, 200 with "Authorization: Bearer <token>", on every route', async () => {
    const { server } = await start('0.0.0.0:0', { token: TOKEN });
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    for (const path of ['metrics', 'api/state', 'healthz', '', 'app.js']) {
      const refused = await get(`${server.url}${path}`);
      expect(refused.status, path).toBe(401);
      expect(refused.headers['www-authenticate']).toBe('Bearer realm="shardline"');
      expect(refused.body).toMatch(/requires the job's token.*carried none/);
      expect(refused.body).not.toContain(TOKEN);
      const wrong = await get(`${server.url}${path}`, { authorization: 'Bearer nope' });
      expect(wrong.status, path).toBe(401);
      expect(wrong.body).toMatch(/carried a wrong one/);
      const allowed = await get(`${server.url}${path}`, { authorization: `Bearer ${TOKEN}` });
      expect(allowed.status, path).toBe(200);
    }
  });

  it('takes ?token= once from a browser: an HttpOnly cookie, and a redirect that drops the token', async () => {
    const { server } = await start('0.0.0.0:0', { token: TOKEN });
    const port = Number(new URL(server.url).port);
    const opened = await get(`${server.url}?token=${TOKEN}&view=1`, {
      accept: 'text/html',
      'sec-fetch-mode': 'navigate',
    });
    expect(opened.status).toBe(303);
    expect(opened.headers.location).toBe('/?view=1');
    const cookie = String(opened.headers['set-cookie']);
    expect(cookie).toMatch(
      new RegExp(`^${accessCookieName(port)}=[0-9a-f]{64}; Path=/; HttpOnly; SameSite=Strict$`),
    );
    // A digest, not the token: a leaked cookie does not open the job's gRPC port.
    expect(cookie).not.toContain(TOKEN);
    const page = await get(server.url, { cookie: cookie.split(';')[0]! });
    expect(page.status).toBe(200);
    expect(page.body).toContain('<title>run</title>');
    // Scripts (not navigations) are answered at once, with the cookie set as well.
    const direct = await get(`${server.url}api/state?token=${TOKEN}`);
    expect(direct.status).toBe(200);
    expect(direct.headers['set-cookie']).toBeDefined();
    // Another dashboard's cookie (another port, another token) opens nothing here.
    const foreign = await get(server.url, {
      cookie: `${accessCookieName(port)}=${'0'.repeat(64)}`,
    });
    expect(foreign.status).toBe(401);
  });

  it('is not asked on loopback', async () => {
    const { server } = await start('127.0.0.1:0', { token: TOKEN });
    expect((await get(`${server.url}metrics`)).status).toBe(200);
  });

  it('is required before anything starts: a dashboard beyond loopback without a token is refused, with what to do', () => {
    expect(() => checkDashboard({ address: '0.0.0.0:7071', fallback: false }, {})).toThrow(
      /Refusing to serve the dashboard on 0\.0\.0\.0:7071 without a token.*--token.*--dashboard off/s,
    );
    expect(() =>
      checkDashboard({ address: '0.0.0.0:7071', fallback: false, token: TOKEN }, {}),
    ).not.toThrow();
    expect(() =>
      checkDashboard({ address: '127.0.0.1:7070', fallback: false }, { listen: '0.0.0.0:7070' }),
    ).toThrow(/uses the port of --listen 0\.0\.0\.0:7070/);
    // The default address is not refused for a shared port: it moves.
    expect(() =>
      checkDashboard(
        { address: '127.0.0.1:7071', fallback: true },
        { healthListen: '0.0.0.0:7071' },
      ),
    ).not.toThrow();
  });
});

describe('routes', () => {
  it('serves /metrics in the text format with a per-run registry, /healthz, /api/state, and 404 elsewhere', async () => {
    const a = await start('127.0.0.1:0');
    const b = await start('127.0.0.1:0');
    a.runState.reporter.progress(step(1));
    a.metrics.reporter.progress(step(1));
    a.metrics.refused('wrong_token');
    const families = parsePrometheusText((await get(`${a.server.url}metrics`)).body);
    expect(sampleValue(families, 'shardline_steps_total')).toBe(1);
    expect(
      sampleValue(families, 'shardline_rejected_messages_total', { reason: 'wrong_token' }),
    ).toBe(1);
    expect(sampleValue(families, 'shardline_rejected_messages_total', { reason: 'plugins' })).toBe(
      0,
    );
    expect(families.get('process_cpu_user_seconds_total')?.type).toBe('counter');
    // Another run in the same process has metrics of its own.
    const other = parsePrometheusText((await get(`${b.server.url}metrics`)).body);
    expect(sampleValue(other, 'shardline_steps_total')).toBe(0);

    expect((await get(`${a.server.url}healthz`)).body).toBe('ok\n');
    const state = JSON.parse((await get(`${a.server.url}api/state`)).body);
    expect(state).toMatchObject({ state: 'training', step: 1, train: { total: 1, stride: 1 } });
    const missing = await get(`${a.server.url}nothing.html`);
    expect(missing.status).toBe(404);
    expect(missing.body).toMatch(/Try \/, \/metrics, \/api\/state or \/api\/events/);
  });

  it("serves the page's files with their types and a CSP, and nothing outside their folder", async () => {
    const { server } = await start('127.0.0.1:0');
    const page = await get(server.url);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toMatch(/default-src 'self'/);
    expect((await get(`${server.url}app.js`)).headers['content-type']).toMatch(/^text\/javascript/);
    for (const path of [
      '../shardline-dashboard-outside.txt',
      '%2e%2e/shardline-dashboard-outside.txt',
      '%2e%2e%2fshardline-dashboard-outside.txt',
    ]) {
      const escaped = await get(`${server.url}${path}`);
      expect(escaped.status, path).toBe(404);
      expect(escaped.body).not.toContain('secret');
    }
  });

  it('answers only GET and HEAD', async () => {
    const { server } = await start('127.0.0.1:0');
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${server.url}api/state`, { method: 'POST' }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(405);
  });
});

describe('/api/events', () => {
  it('starts with a snapshot, then pushes step, worker, epoch_end and state deltas, with keep-alives', async () => {
    const { server, runState } = await start('127.0.0.1:0');
    const stream = readEvents(`${server.url}api/events`);
    await stream.next((e) => e.event === 'snapshot');
    const run = runState.reporter;
    run.started({
      mode: 'distributed',
      model: 'mlp',
      dataset: 'fashion-mnist',
      backend: 'cpu',
      parameters: 10,
      train_samples: 32_000,
      test_samples: 100,
      epochs: 1,
      batch_size: 32,
      steps_per_epoch: 1000,
      out: '/tmp/x',
      class_names: ['a', 'b'],
    });
    run.workerJoined({ worker: 'w1', worker_id: 'id-1', backend: 'cpu', peer: 'ipv4:1.2.3.4:5' });
    run.progress(step(1));
    run.epochEnd({
      epoch: 1,
      train_loss: 1,
      train_accuracy: 0.5,
      test_loss: 1,
      test_accuracy: 0.5,
      images_per_second: 100,
      workers: 1,
      step: 1,
      confusion: [
        [1, 0],
        [0, 1],
      ],
    });
    const epochEnd = await stream.next((e) => e.event === 'epoch_end');
    expect(epochEnd.data).toMatchObject({ epoch: 1, confusion: { class_names: ['a', 'b'] } });
    expect(stream.events.map((e) => e.event)).toEqual([
      'snapshot',
      'state',
      'worker',
      'state',
      'step',
      'epoch_end',
    ]);
    expect(stream.events[2]!.data).toMatchObject({ id: 'id-1', name: 'w1', state: 'attached' });
    expect(stream.events[4]!.data).toMatchObject({
      step: 1,
      running_loss: 1,
      time: expect.any(Number),
    });
    await until(() => stream.comments.includes('keep-alive'));
    runState.finish({ state: 'failed', error: 'it broke' });
    expect((await stream.next((e) => e.data.state === 'failed')).data.error).toBe('it broke');
    stream.close();
  });

  it('disconnects a client that does not read rather than buffer for it without bound', async () => {
    const { server, runState } = await start('127.0.0.1:0', { maxBufferedBytes: 64 * 1024 });
    const stuck = readEvents(`${server.url}api/events`);
    const response = await stuck.response;
    // Take nothing more from the socket: the server's queue for this client can only grow.
    response.pause();
    const reading = readEvents(`${server.url}api/events`);
    await reading.next((e) => e.event === 'snapshot');
    // 16 KiB events (a worker row with a long name), until the stuck client is dropped: the
    // kernel's socket buffers take a few MiB first.
    const name = 'x'.repeat(16 * 1024);
    for (let i = 0; i < 4000 && server.events.dropped === 0; i++) {
      runState.reporter.workerJoined({ worker: name, worker_id: 'same', pid: i });
      await new Promise((r) => setImmediate(r));
    }
    expect(server.events.dropped).toBe(1);
    // The client that reads keeps its stream.
    expect(server.events.clients).toBe(1);
    stuck.close();
    reading.close();
  });
});

describe('the address', () => {
  it('moves the default off a taken port, and says so; refuses an explicit one that is taken', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const moved = await start(`127.0.0.1:${port}`, { fallback: true });
      expect(new URL(moved.server.url).port).not.toBe(String(port));
      expect(moved.server.moved).toEqual({
        wanted: `127.0.0.1:${port}`,
        why: 'taken by another program',
      });
      await expect(start(`127.0.0.1:${port}`)).rejects.toThrow(
        new RegExp(
          `Cannot serve the dashboard on 127\\.0\\.0\\.1:${port}: the port is taken\\. Choose another --dashboard host:port`,
        ),
      );
    } finally {
      blocker.close();
    }
  });

  it("leaves the job's own ports (--health-listen) to the job", async () => {
    const runState = createRunState();
    const metrics = createCoordinatorMetrics({ runState: () => 'waiting', workerStates: () => [] });
    const server = await startDashboardServer({
      settings: { address: '127.0.0.1:7071', fallback: true },
      content: { runState, registry: metrics.registry },
      logger,
      reservedPorts: [7071],
    });
    servers.push(server);
    expect(new URL(server.url).port).not.toBe('7071');
    expect(server.moved?.why).toBe('a port of this job');
  });
});

describe('openRunDashboard', () => {
  it('adds the URL to `started` for the reporter it wraps, and keeps its output and close', async () => {
    const events: Array<Record<string, unknown>> = [];
    const closed: string[] = [];
    const dashboard = await openRunDashboard(
      { address: '127.0.0.1:0', fallback: false },
      { logger },
    );
    const inner = { ...createEventReporter((e) => events.push(e)), close: () => closed.push('x') };
    const reporter = dashboard.observe(inner);
    reporter.started({
      mode: 'in-process',
      model: 'mlp',
      dataset: 'd',
      backend: 'cpu',
      parameters: 1,
      train_samples: 1,
      test_samples: 1,
      epochs: 1,
      batch_size: 1,
      steps_per_epoch: 1,
      out: '/tmp/x',
    });
    reporter.close?.();
    expect(events[0]).toMatchObject({ event: 'started', dashboard: dashboard.url });
    expect(closed).toEqual(['x']);
    await dashboard.close();
    expect(dashboard.runState?.state).toBe('stopped');
    await expect(get(`${dashboard.url}healthz`)).rejects.toThrow();
  });

  it('is nothing when off: the reporter unchanged, no URL', async () => {
    const dashboard = await openRunDashboard(undefined, { logger });
    const reporter = createEventReporter(() => {});
    expect(dashboard.observe(reporter)).toBe(reporter);
    expect(dashboard.url).toBeUndefined();
    await dashboard.close();
  });
});
