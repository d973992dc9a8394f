/**
 * A ring-mode replica's whole state on the wire (ReplicaStateChunk): the weights and the
 * optimizer's slots as one float32 tensor, chunked and checksummed like any other, plus a small
 * header with the optimizer's kind, step and settings. The coordinator pulls one from a worker
 * for checkpoints and pushes one to a worker that joins or fell behind; both directions use
 * these functions, so the layout (weights first, then the slots in the header's order) cannot
 * differ between them.
 */
// Type-only from the root: protocol loads without TensorFlow.js, which the root entry imports.
import type { OptimizerState } from '@shardline/core';
import { formatCount, ShardlineError } from '@shardline/core/errors';
import { chunkTensor, DEFAULT_CHUNK_BYTES } from './chunking.js';
import type { OptimizerStateHeader, ReplicaStateChunk } from './gen/shardline/v1/coordinator.js';
import { DataType } from './gen/shardline/v1/tensor.js';

/** The most optimizer slots a state may carry (adam has two). */
export const MAX_OPTIMIZER_SLOTS = 4;

/** What one replica holds: weights version `version` and the optimizer state that goes with it. */
export interface ReplicaStateValues {
  version: number;
  params: Float32Array;
  optimizer: OptimizerState;
}

/** The header of an optimizer state: everything but the slots' values. */
export function optimizerStateHeader(state: OptimizerState): OptimizerStateHeader {
  const numbers: Record<string, number> = {};
  const flags: Record<string, boolean> = {};
  for (const [name, value] of Object.entries(state.config)) {
    if (typeof value === 'boolean') flags[name] = value;
    else numbers[name] = value;
  }
  return {
    kind: state.kind,
    step: BigInt(state.step),
    slotNames: Object.keys(state.slots),
    numbers,
    flags,
  };
}

/**
 * A replica's state as ReplicaStateChunk messages, lazily (pass them to `writeMessages` after
 * wrapping each in the stream's message type). The values are copied into one buffer first, so
 * the replica may change while a slow stream is still writing. A fresh optimizer's state (step 0,
 * every slot zero) travels as the weights alone.
 */
export function* replicaStateChunks(
  state: ReplicaStateValues,
  layoutFingerprint: string,
  options: { requestId?: bigint; maxChunkBytes?: number; transferId?: string } = {},
): Generator<ReplicaStateChunk, void, undefined> {
  const size = state.params.length;
  // A fresh optimizer's slots are all zeros: leave them out (the receiver fills them in), so a
  // run's first push of an adam state moves one weights' worth instead of three.
  const fresh = state.optimizer.step === 0 && Object.values(state.optimizer.slots).every(isAllZero);
  const slots = fresh ? [] : Object.values(state.optimizer.slots);
  const values = new Float32Array(size * (1 + slots.length));
  values.set(state.params, 0);
  slots.forEach((slot, i) => {
    if (slot.length !== size) {
      throw new ShardlineError(
        'INTERNAL',
        `Optimizer slot ${i} holds ${formatCount(slot.length)} values, expected ${formatCount(size)} (one per parameter).`,
      );
    }
    values.set(slot, size * (i + 1));
  });
  const meta = {
    dtype: DataType.FLOAT32,
    shape: [1 + slots.length, size],
    elementCount: values.length,
    layoutFingerprint,
    version: BigInt(state.version),
    step: BigInt(state.version),
  };
  const header = optimizerStateHeader(state.optimizer);
  const bytes = new Uint8Array(values.buffer);
  const chunks = chunkTensor(meta, bytes, options.maxChunkBytes ?? DEFAULT_CHUNK_BYTES, {
    ...(options.transferId === undefined ? {} : { transferId: options.transferId }),
  });
  for (const chunk of chunks) {
    yield {
      requestId: options.requestId ?? 0n,
      optimizer: chunk.chunkIndex === 0 ? header : undefined,
      chunk,
    };
  }
}

/**
 * The replica state in an assembled ReplicaStateChunk tensor, checked against the header and
 * the model's parameter count. The arrays are fresh copies, owned by the caller.
 *
 * @throws ShardlineError `INVALID_ARGUMENT` when the header is missing or malformed, `MISMATCH`
 *   when the tensor's size does not match the parameter count and the header's slots.
 */
export function replicaStateFromTensor(
  header: OptimizerStateHeader | undefined,
  values: Float32Array,
  version: number,
  parameterCount: number,
  from: string,
): ReplicaStateValues {
  if (!header) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `A replica state from ${from} came without its optimizer header (expected on the first chunk). Run the same Shardline version on every machine.`,
    );
  }
  const slots = header.slotNames;
  if (slots.length > MAX_OPTIMIZER_SLOTS || new Set(slots).size !== slots.length) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `A replica state from ${from} names the optimizer slots [${slots.slice(0, 8).join(', ')}]: expected at most ${MAX_OPTIMIZER_SLOTS} distinct names.`,
    );
  }
  const expected = parameterCount * (1 + slots.length);
  // A state at step 0 may leave its slots out: they are all zeros (see replicaStateChunks).
  const zeroSlots = header.step === 0n && values.length === parameterCount;
  if (values.length !== expected && !zeroSlots) {
    throw new ShardlineError(
      'MISMATCH',
      `A replica state from ${from} holds ${formatCount(values.length)} values, expected ${formatCount(expected)} ` +
        `(${formatCount(parameterCount)} weights and ${slots.length} optimizer slot(s) of the same size).`,
    );
  }
  const params = values.slice(0, parameterCount);
  const slotValues: Record<string, Float32Array> = {};
  slots.forEach((name, i) => {
    slotValues[name] = zeroSlots
      ? new Float32Array(parameterCount)
      : values.slice(parameterCount * (i + 1), parameterCount * (i + 2));
  });
  const step = Number(header.step);
  return {
    version,
    params,
    optimizer: {
      kind: header.kind as OptimizerState['kind'],
      step,
      config: { ...header.numbers, ...header.flags },
      slots: slotValues,
    },
  };
}

function isAllZero(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) if (values[i] !== 0) return false;
  return true;
}
