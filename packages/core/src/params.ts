/**
 * Flat parameter vectors. Workers and the coordinator exchange a model's trainable weights and
 * gradients as one Float32Array in a fixed layout (variable order, names, shapes). The layout's
 * fingerprint travels with every vector, so a vector from a different model, or from the same
 * model built in another order, is refused instead of silently misapplied.
 */
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import { formatCount, ShardlineError } from './errors.js';

/** One variable's place in a flat vector. */
export interface ParamSlot {
  /** The variable's stable name (e.g. `conv2d_1/kernel`), the same in every process. */
  name: string;
  shape: number[];
  /** Offset of its first element in the flat vector. */
  offset: number;
  /** Number of elements. */
  size: number;
}

/** The layout of a flat vector: its slots in order, total length and fingerprint. */
export interface ParamLayout {
  slots: ParamSlot[];
  /** Total number of elements. */
  size: number;
  /** 16 hex digits derived from names, shapes and order: equal layouts have equal fingerprints. */
  fingerprint: string;
}

/** Anything with trainable variables in a fixed order, such as a tf.LayersModel. */
export interface HasTrainableWeights {
  trainableWeights: ReadonlyArray<{
    name: string;
    /** tfjs-layers makes `name` unique per process (`dense_1/kernel_1`); `originalName` is stable. */
    originalName?: string;
    shape: ReadonlyArray<number | null>;
    read(): tf.Tensor;
  }>;
}

/**
 * Describes the flat layout of a model's trainable weights.
 *
 * @example
 * ```ts
 * const layout = describeLayout(model); // layout.size === 1_413_834 for seed-cnn
 * ```
 */
export function describeLayout(model: HasTrainableWeights): ParamLayout {
  let offset = 0;
  const slots = model.trainableWeights.map((w) => {
    if (w.shape.some((d) => d === null)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Variable ${w.name} has an unknown dimension in shape [${w.shape.join(', ')}]: build the model before describing its layout.`,
      );
    }
    const shape = w.shape as number[];
    const size = shape.reduce((a, b) => a * b, 1);
    const slot: ParamSlot = { name: w.originalName ?? w.name, shape: [...shape], offset, size };
    offset += size;
    return slot;
  });
  return { slots, size: offset, fingerprint: fingerprintOf(slots) };
}

/** The fingerprint of a list of slots (names, shapes, order). */
export function fingerprintOf(slots: Array<Pick<ParamSlot, 'name' | 'shape'>>): string {
  const text = slots.map((s) => `${s.name}:${s.shape.join('x')}`).join(';');
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** Throws `MISMATCH` unless `vector` fits `layout` (length) and `fingerprint` equals it. */
export function assertFitsLayout(
  layout: ParamLayout,
  vector: Float32Array,
  fingerprint?: string,
  what = 'vector',
): void {
  if (fingerprint !== undefined && fingerprint !== layout.fingerprint) {
    throw new ShardlineError(
      'MISMATCH',
      `The ${what} was made for a different model: expected layout fingerprint ${layout.fingerprint}, ` +
        `found ${fingerprint}. Make sure every process builds the same model with the same hyperparameters.`,
    );
  }
  if (vector.length !== layout.size) {
    throw new ShardlineError(
      'MISMATCH',
      `The ${what} has the wrong length: expected ${formatCount(layout.size)} float32 values, ` +
        `found ${formatCount(vector.length)}. Make sure every process builds the same model.`,
    );
  }
}

/** Copies a model's trainable weights into one Float32Array (in `layout` order). */
export function readWeights(
  model: HasTrainableWeights,
  layout: ParamLayout = describeLayout(model),
): Float32Array {
  const out = new Float32Array(layout.size);
  model.trainableWeights.forEach((w, i) => {
    const slot = layout.slots[i]!;
    out.set(w.read().dataSync() as Float32Array, slot.offset);
  });
  return out;
}

/** Writes a flat vector into a model's trainable weights. Leaves no tensors behind. */
export function writeWeights(
  model: HasTrainableWeights,
  flat: Float32Array,
  layout: ParamLayout = describeLayout(model),
): void {
  assertFitsLayout(layout, flat, undefined, 'weight vector');
  model.trainableWeights.forEach((w, i) => {
    const slot = layout.slots[i]!;
    const variable = w.read() as tf.Variable;
    // assign() takes its own reference to the data; tidy disposes the temporary.
    tf.tidy(() =>
      variable.assign(
        tf.tensor(flat.subarray(slot.offset, slot.offset + slot.size), slot.shape, 'float32'),
      ),
    );
  });
}
