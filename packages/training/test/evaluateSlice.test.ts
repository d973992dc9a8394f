import { selectBackend } from '@shardline/core';
import type { ImageSet } from '@shardline/datasets';
import { createModel } from '@shardline/models';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluateSlice } from '../src/localWorker.js';

/** `count` 4x4 grayscale images, labels cycling through `numClasses`. */
function imageSet(count: number, numClasses: number): ImageSet {
  return {
    images: Uint8Array.from({ length: count * 16 }, (_, i) => (i * 53) % 256),
    labels: Uint8Array.from({ length: count }, (_, i) => i % numClasses),
    count,
    height: 4,
    width: 4,
    channels: 1,
    numClasses,
  };
}

const count = 40;
const set = imageSet(count, 3);
const classNames = ['a', 'b', 'c'];
let model: ReturnType<typeof createModel>;

beforeAll(async () => {
  await selectBackend('wasm');
  model = createModel('mlp', { inputShape: [4, 4, 1], numClasses: 3, seed: 2 });
});
afterAll(() => model.dispose());

/** Counts event-loop turns (setImmediate callbacks) until stopped. */
function countTurns(): { stop(): number } {
  let turns = 0;
  let running = true;
  const tick = () => {
    if (!running) return;
    turns += 1;
    setImmediate(tick);
  };
  setImmediate(tick);
  return {
    stop() {
      running = false;
      return turns;
    },
  };
}

describe('evaluateSlice', () => {
  it('gives the event loop a turn between batches, so keepalive pings are answered mid-evaluation', async () => {
    const turns = countTurns();
    const state = await evaluateSlice(model, set, { start: 0, end: count }, classNames, 4);
    // 10 batches: at least one turn between each pair.
    expect(turns.stop()).toBeGreaterThanOrEqual(9);
    expect(state.count).toBe(count);
  });

  it('stops between batches once its signal is aborted', async () => {
    const controller = new AbortController();
    setImmediate(() => controller.abort(new Error('evaluation cancelled')));
    await expect(
      evaluateSlice(model, set, { start: 0, end: count }, classNames, 4, controller.signal),
    ).rejects.toThrow('evaluation cancelled');
  });

  it('evaluates a 2-class model (top-3 of 2 classes used to be refused)', async () => {
    const binary = createModel('mlp', { inputShape: [4, 4, 1], numClasses: 2, seed: 1 });
    const state = await evaluateSlice(
      binary,
      imageSet(10, 2),
      { start: 0, end: 10 },
      ['no', 'yes'],
      4,
    );
    expect(state.topK).toEqual([1]);
    expect(state.count).toBe(10);
    expect(state.confusion.reduce((a, b) => a + b, 0)).toBe(10);
    binary.dispose();
  });

  it('gives the same state whatever the batch size', async () => {
    const whole = await evaluateSlice(model, set, { start: 0, end: count }, classNames, count);
    const batched = await evaluateSlice(model, set, { start: 0, end: count }, classNames, 7);
    expect(batched.confusion).toEqual(whole.confusion);
    expect(batched.count).toBe(whole.count);
  });
});
