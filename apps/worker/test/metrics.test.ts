/**
 * `--metrics-listen`: the worker's metrics served over real HTTP, fed through the monitor the
 * session calls; the token rule beyond loopback (refused at start without a token, 401 without
 * it, 200 with "Authorization: Bearer"); a taken port named in the error. A real worker process
 * scraped while it trains against a real coordinator is in the coordinator's dashboard e2e test.
 */
import { request } from 'node:http';
import { createServer } from 'node:net';
import { createLogger } from '@shardline/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  checkMetricsListen,
  type MetricsServer,
  serveWorkerMetrics,
} from '../src/metrics/metricsServer.js';
import { createWorkerMetrics } from '../src/metrics/workerMetrics.js';
import { runWorkerCli } from '../src/program.js';

const TOKEN = 'worker-metrics-token-0123456789ab';
const logger = createLogger({ level: 'silent' });
const servers: MetricsServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode!, type: res.headers['content-type'], body }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

/** The value of the sample line `name{labels}` (labels as written), or undefined. */
function sampleOf(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('the worker metrics', () => {
  it('count what the session reports: steps, compute time, traffic, all-reduces, evaluations, the connection', async () => {
    const metrics = createWorkerMetrics('gpu-1');
    const server = await serveWorkerMetrics({
      address: '127.0.0.1:0',
      registry: metrics.registry,
      logger,
    });
    servers.push(server);
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const m = metrics.monitor;
    m.joined({ workerId: 'id-1', backend: 'wasm', rejoin: false });
    m.connection('connected');
    m.stepComputed(0.02, 16);
    m.stepComputed(0.04, 16);
    m.tensorBytes('in', 1000);
    m.tensorBytes('out', 400);
    m.ringAllReduce({ seconds: 0.01, sentBytes: 300, failed: false });
    m.ringAllReduce({ seconds: 0.5, sentBytes: 0, failed: true });
    m.evaluated(0.1);
    m.connection('disconnected');
    m.connection('connecting');
    m.joined({ workerId: 'id-2', backend: 'wasm', rejoin: true });
    m.connection('connected');

    const scraped = await get(server.url);
    expect(scraped.status).toBe(200);
    expect(scraped.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = scraped.body;
    expect(sampleOf(text, 'shardline_worker_steps_total')).toBe(2);
    expect(sampleOf(text, 'shardline_worker_compute_seconds_count')).toBe(2);
    expect(sampleOf(text, 'shardline_worker_compute_seconds_sum')).toBeCloseTo(0.06, 9);
    expect(sampleOf(text, 'shardline_worker_compute_seconds_bucket{le="0.025"}')).toBe(1);
    expect(sampleOf(text, 'shardline_worker_tensor_bytes_total{direction="in"}')).toBe(1000);
    expect(sampleOf(text, 'shardline_worker_tensor_bytes_total{direction="out"}')).toBe(400);
    expect(sampleOf(text, 'shardline_worker_ring_allreduces_total{outcome="ok"}')).toBe(1);
    expect(sampleOf(text, 'shardline_worker_ring_allreduces_total{outcome="failed"}')).toBe(1);
    expect(sampleOf(text, 'shardline_worker_ring_allreduce_seconds_count')).toBe(1);
    expect(sampleOf(text, 'shardline_worker_ring_bytes_sent_total')).toBe(300);
    expect(sampleOf(text, 'shardline_worker_evaluations_total')).toBe(1);
    expect(sampleOf(text, 'shardline_worker_rejoins_total')).toBe(1);
    expect(sampleOf(text, 'shardline_worker_connection_state{state="connected"}')).toBe(1);
    expect(sampleOf(text, 'shardline_worker_connection_state{state="disconnected"}')).toBe(0);
    // One info series, the current worker id's.
    expect(text).toContain('shardline_worker_info{name="gpu-1",backend="wasm",worker_id="id-2"} 1');
    expect(text).not.toContain('worker_id="id-1"');
    expect(text).toMatch(/^# TYPE process_cpu_user_seconds_total counter$/m);
    expect((await get(server.url.replace('/metrics', '/'))).status).toBe(404);
  });

  it('keeps each worker in a registry of its own', async () => {
    const a = createWorkerMetrics('a');
    const b = createWorkerMetrics('b');
    a.monitor.stepComputed(0.01, 1);
    const server = await serveWorkerMetrics({
      address: '127.0.0.1:0',
      registry: b.registry,
      logger,
    });
    servers.push(server);
    expect(sampleOf((await get(server.url)).body, 'shardline_worker_steps_total')).toBe(0);
  });
});

describe('beyond loopback, the worker token', () => {
  it('is required at start, with what to do', () => {
    expect(() => checkMetricsListen('0.0.0.0:9464', undefined)).toThrow(
      /Refusing to serve metrics on 0\.0\.0\.0:9464 \(--metrics-listen\) without a token.*--token, --token-file or SHARDLINE_TOKEN.*or listen on 127\.0\.0\.1/,
    );
    expect(() => checkMetricsListen('0.0.0.0:9464', TOKEN)).not.toThrow();
    expect(() => checkMetricsListen('127.0.0.1:9464', undefined)).not.toThrow();
    expect(() => checkMetricsListen(undefined, undefined)).not.toThrow();
  });

  it('is refused by the CLI before the worker starts', async () => {
    let stderr = '';
    const code = await runWorkerCli(
      ['node', 'shardline-worker', '--coordinator', '127.0.0.1:1', '--metrics-listen', '0.0.0.0:0'],
      { stdout: { write: () => true }, stderr: { write: (s: string) => (stderr += s) } },
      { env: {} },
    );
    expect(code).toBe(1);
    expect(stderr).toMatch(/^shardline-worker: Refusing to serve metrics on 0\.0\.0\.0:0/);
  });

  it('answers 401 without it or with another, 200 with "Authorization: Bearer <token>"', async () => {
    const metrics = createWorkerMetrics('w');
    const server = await serveWorkerMetrics({
      address: '0.0.0.0:0',
      token: TOKEN,
      registry: metrics.registry,
      logger,
    });
    servers.push(server);
    const none = await get(server.url);
    expect(none.status).toBe(401);
    expect(none.body).toMatch(/require its token .* "Authorization: Bearer <token>"/);
    expect((await get(server.url, { authorization: 'Bearer another' })).status).toBe(401);
    const allowed = await get(server.url, { authorization: `bearer ${TOKEN}` });
    expect(allowed.status).toBe(200);
    expect(allowed.body).toContain('shardline_worker_steps_total 0');
  });
});

describe('the address', () => {
  it('names a taken port and the flag to change', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    try {
      await expect(
        serveWorkerMetrics({
          address: `127.0.0.1:${port}`,
          registry: createWorkerMetrics('w').registry,
          logger,
        }),
      ).rejects.toThrow(
        `Cannot serve metrics on 127.0.0.1:${port} (--metrics-listen): the port is taken. Choose another host:port (port 0 takes any free one).`,
      );
    } finally {
      blocker.close();
    }
  });
});
