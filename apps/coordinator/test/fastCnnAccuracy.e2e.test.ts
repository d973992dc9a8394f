import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './runCli.js';

let out: string;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), 'shardline-fastcnn-'));
});
afterAll(async () => {
  await rm(out, { recursive: true, force: true });
});

// The accuracy promise of the foundation: fast-cnn, one process, one epoch over all 60,000
// Fashion-MNIST training images on the wasm backend, evaluated on all 10,000 test images.
// About three minutes on two cores.
describe('fast-cnn on Fashion-MNIST', () => {
  it('reaches at least 0.85 test accuracy after one epoch in one process', {
    timeout: 900_000,
  }, async () => {
    const run = await runCli([
      'train',
      '--in-process',
      '--model',
      'fast-cnn',
      '--epochs',
      '1',
      '--batch-size',
      '32',
      '--backend',
      'wasm',
      '--out',
      out,
      '--log-format',
      'json',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const done = run.events().find((e) => e.event === 'done')!;
    expect(done).toMatchObject({ epoch: 1, step: 1875, workers: 1 });
    expect(done.test_accuracy).toBeGreaterThanOrEqual(0.85);
  });
});
