/**
 * The short version of `pnpm bench:exchange` that CI runs: two workers, six steps, a small
 * gradient, star and ring, on emulated hosts (network namespaces, tbf). It checks that the
 * benchmark runs end to end and that its byte counts say what each mode is: star's coordinator
 * carries every gradient and weight copy, ring's carries none of them and each worker's link
 * carries about one gradient each way. Speeds are the benchmark's business, never a test's.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runToEnd } from './processes.js';

const bench = fileURLToPath(new URL('../bench/exchange.bench.mjs', import.meta.url));

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shardline-xbench-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Row {
  mode: string;
  workers: number;
  gradient_bytes: number;
  steps_per_second: number;
  coordinator_tensor_bytes_per_step: number;
  worker_wire_bytes_per_step: number;
}

describe('pnpm bench:exchange, short', () => {
  it('runs star and ring with two workers on emulated hosts and counts the bytes each mode moves', {
    timeout: 240_000,
  }, async (context) => {
    const json = join(dir, 'exchange.json');
    const run = await runToEnd(process.execPath, [
      bench,
      '--workers',
      '2',
      '--steps',
      '6',
      '--rate',
      '1gbit',
      '--params',
      '200k',
      '--modes',
      'star,ring',
      '--json',
      json,
    ]);
    // Without root or iproute2 the benchmark says why and skips; so does this test.
    if (/exchange benchmark skipped/.test(run.output)) context.skip();
    expect(run.code, run.output).toBe(0);
    const { rows } = JSON.parse(await readFile(json, 'utf8')) as { rows: Row[] };
    expect(rows.map((r) => `${r.mode} ${r.workers}`)).toEqual(['star 2', 'ring 2']);
    const [star, ring] = rows as [Row, Row];
    for (const row of rows) expect(row.steps_per_second).toBeGreaterThan(0);
    const g = star.gradient_bytes;
    // Star: 2 gradients in and 2 weight copies out per step.
    expect(star.coordinator_tensor_bytes_per_step).toBeCloseTo(4 * g, -3);
    // Ring: no tensor crosses the coordinator's link in the measured epoch's steps, and each
    // worker sends and receives one gradient per step (the wire adds headers and one worker's
    // state pull for the first epoch's checkpoint, spread over the steps).
    expect(ring.coordinator_tensor_bytes_per_step).toBeLessThan(
      star.coordinator_tensor_bytes_per_step / 2,
    );
    expect(ring.worker_wire_bytes_per_step).toBeGreaterThan(2 * g);
    expect(ring.worker_wire_bytes_per_step).toBeLessThan(3 * g);
  });
});
