/**
 * Batches as TensorFlow.js tensors. Kept apart from the rest of the package (import it as
 * `@shardline/datasets/tensors`) so loading, sharding and batching work without tfjs, and a
 * coordinator that only plans batches never pays for loading it.
 */
import * as tf from '@tensorflow/tfjs';
import type { Batch } from './batch.js';

// A type alias, not an interface, so it is assignable to tfjs's TensorContainer (tf.dispose).
/** The tensors of one batch. The caller owns them: dispose with `tf.dispose(tensors)`. */
export type BatchTensors = {
  /** Images, float32 `[size, height, width, channels]`. */
  xs: tf.Tensor4D;
  /** Class indices, int32 `[size]`. */
  labels: tf.Tensor1D;
  /** One-hot labels, float32 `[size, numClasses]`, when the batch has them. */
  oneHot?: tf.Tensor2D;
};

/**
 * Wraps a {@link Batch} in tensors (one copy each, into the active backend).
 *
 * @example
 * ```ts
 * const t = toTensors(makeBatch(train, indices, { oneHot: true }));
 * try { model.trainOnBatch(t.xs, t.oneHot!); } finally { tf.dispose(t); }
 * ```
 */
export function toTensors(batch: Batch): BatchTensors {
  const [n, h, w, c] = batch.shape;
  const xs = tf.tensor4d(batch.xs, [n, h, w, c], 'float32');
  const labels = tf.tensor1d(batch.labels, 'int32');
  if (batch.oneHot === undefined) return { xs, labels };
  const numClasses = batch.numClasses ?? batch.oneHot.length / Math.max(1, n);
  return { xs, labels, oneHot: tf.tensor2d(batch.oneHot, [n, numClasses], 'float32') };
}
