import { createOptimizer, type OptimizerState } from '@shardline/core';
import { describe, expect, it } from 'vitest';
import { createTensorAssembler } from '../src/chunking.js';
import { decodeTensor } from '../src/codecs.js';
import type { ReplicaStateChunk } from '../src/gen/shardline/v1/coordinator.js';
import {
  type ReplicaStateValues,
  replicaStateChunks,
  replicaStateFromTensor,
} from '../src/replicaState.js';

const SIZE = 300_000;
const FINGERPRINT = '0123456789abcdef';

/** An adam state after `steps` updates of a deterministic gradient. */
function adamState(steps: number): ReplicaStateValues {
  const optimizer = createOptimizer({ kind: 'adam', size: SIZE, weightDecay: 0.01 });
  const params = Float32Array.from({ length: SIZE }, (_, i) => Math.sin(i));
  const gradient = Float32Array.from({ length: SIZE }, (_, i) => Math.cos(i) / 10);
  for (let s = 0; s < steps; s++) optimizer.apply(params, gradient, 0.01);
  return { version: steps, params, optimizer: optimizer.getState() };
}

/** Sends `state` through its chunks and an assembler, as a Train stream does. */
function roundTrip(state: ReplicaStateValues) {
  const assembler = createTensorAssembler({
    expectedFingerprint: FINGERPRINT,
    maxTensorBytes: SIZE * 4 * 5,
  });
  let header: ReplicaStateChunk | undefined;
  let elements = 0;
  let decoded: ReplicaStateValues | undefined;
  for (const chunk of replicaStateChunks(state, FINGERPRINT, {
    requestId: 7n,
    maxChunkBytes: 256 * 1024,
  })) {
    expect(chunk.requestId).toBe(7n);
    if (chunk.chunk!.chunkIndex === 0) header = chunk;
    else expect(chunk.optimizer).toBeUndefined();
    const tensor = assembler.push(chunk.chunk!);
    if (!tensor) continue;
    elements = tensor.meta.elementCount;
    decoded = replicaStateFromTensor(
      header!.optimizer,
      decodeTensor(tensor.bytes, tensor.meta.dtype),
      Number(tensor.meta.version),
      SIZE,
      'worker w-1',
    );
  }
  return { decoded: decoded!, elements };
}

const same = (a: OptimizerState, b: OptimizerState) => {
  expect(b.kind).toBe(a.kind);
  expect(b.step).toBe(a.step);
  expect(b.config).toEqual(a.config);
  expect(Object.keys(b.slots)).toEqual(Object.keys(a.slots));
  for (const name of Object.keys(a.slots)) {
    expect(Buffer.from(b.slots[name]!.buffer).equals(Buffer.from(a.slots[name]!.buffer))).toBe(
      true,
    );
  }
};

describe('replica state on the wire', () => {
  it('carries the weights and every optimizer slot bit for bit, with the kind, step and settings', () => {
    const state = adamState(3);
    const { decoded, elements } = roundTrip(state);
    expect(elements).toBe(SIZE * 3);
    expect(decoded.version).toBe(3);
    expect(Buffer.from(decoded.params.buffer).equals(Buffer.from(state.params.buffer))).toBe(true);
    same(state.optimizer, decoded.optimizer);
    // The decoded state restores an optimizer that continues exactly as the original does.
    const restored = createOptimizer({ kind: 'adam', size: SIZE, weightDecay: 0.01 });
    restored.setState(decoded.optimizer);
    expect(restored.step).toBe(3);
  });

  it("sends a fresh optimizer's state as the weights alone and fills its slots with zeros", () => {
    const state = adamState(0);
    const { decoded, elements } = roundTrip(state);
    expect(elements).toBe(SIZE);
    same(state.optimizer, decoded.optimizer);
  });

  it('refuses a state without its header, with the wrong size, or with too many slots', () => {
    const values = new Float32Array(SIZE * 3);
    expect(() => replicaStateFromTensor(undefined, values, 1, SIZE, 'worker w-2')).toThrow(
      /from worker w-2 came without its optimizer header/,
    );
    const header = {
      kind: 'adam',
      step: 4n,
      slotNames: ['m', 'v'],
      numbers: {},
      flags: {},
    };
    expect(() =>
      replicaStateFromTensor(header, values.subarray(0, SIZE * 2), 4, SIZE, 'worker w-2'),
    ).toThrow(/holds 600,000 values, expected 900,000/);
    // Only a step-0 state may leave its slots out.
    expect(() =>
      replicaStateFromTensor(header, values.subarray(0, SIZE), 4, SIZE, 'worker w-2'),
    ).toThrow(/expected 900,000/);
    expect(() =>
      replicaStateFromTensor(
        { ...header, slotNames: ['a', 'b', 'c', 'd', 'e'] },
        values,
        4,
        SIZE,
        'worker w-2',
      ),
    ).toThrow(/at most 4 distinct names/);
  });
});
