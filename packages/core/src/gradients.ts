/**
 * The gradient step that every mode of training shares: in one process, and on each worker of a
 * data-parallel job. It computes the loss of a batch and the gradient of every trainable weight,
 * and hands the gradient back as one flat Float32Array in the model's layout.
 */
import * as tf from '@tensorflow/tfjs';
import { formatCount, ShardlineError } from './errors.js';
import { describeLayout, type HasTrainableWeights, type ParamLayout } from './params.js';

/** A batch ready for training: NHWC images and integer class labels. */
export interface TrainingBatch {
  /** Float32 images, NHWC, row-major; length = size x height x width x channels. */
  xs: Float32Array;
  /** Class index of each image. */
  labels: Int32Array | Uint8Array;
  /** [batch, height, width, channels]. */
  shape: readonly [number, number, number, number];
}

/** A model that can be applied to a batch; tf.LayersModel fits. */
export interface TrainableModel extends HasTrainableWeights {
  apply(
    inputs: tf.Tensor,
    kwargs?: { training?: boolean },
  ): tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[];
}

/** The result of {@link computeGradients}. */
export interface GradientResult {
  /** d(mean loss)/d(weights), flat, in `layout` order. */
  gradient: Float32Array;
  /** Mean cross-entropy over the batch. */
  loss: number;
  /** Number of samples the mean was taken over (the weight of this gradient in an average). */
  sampleCount: number;
  /** Samples whose arg-max prediction equals the label. */
  correct: number;
}

const EPSILON = 1e-7; // Keras's clip for cross-entropy on probabilities.

function asTensor(out: ReturnType<TrainableModel['apply']>): tf.Tensor {
  if (Array.isArray(out) || !(out instanceof tf.Tensor)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      'Expected a model with one tensor output (class probabilities), found several or a symbolic one.',
    );
  }
  return out;
}

function checkBatch(batch: TrainingBatch): void {
  const [n, h, w, c] = batch.shape;
  if (batch.xs.length !== n * h * w * c || batch.labels.length !== n || n === 0) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Inconsistent batch: shape [${batch.shape.join(', ')}] needs ${formatCount(n * h * w * c)} pixel values and ${n} labels ` +
        `(at least one), found ${formatCount(batch.xs.length)} and ${batch.labels.length}.`,
    );
  }
}

/**
 * Forward pass with cross-entropy loss, returning the mean loss over the batch, its gradient
 * with respect to every trainable weight as one flat vector, and the number of correct
 * predictions. The model must end in a softmax over classes. Leaves no tensors behind.
 *
 * Pass `out` (a Float32Array of `layout.size`) to have the gradient written there instead of
 * into fresh memory: a worker that computes a 5.6 MB gradient every step then allocates nothing
 * per step for it, which keeps the garbage collector (whose pauses land in the gradient
 * exchange) quiet. The result's `gradient` is then `out` itself, overwritten by the next call.
 *
 * @example
 * ```ts
 * const { gradient, loss, sampleCount } = computeGradients(model, batch);
 * ```
 */
export function computeGradients(
  model: TrainableModel,
  batch: TrainingBatch,
  layout: ParamLayout = describeLayout(model),
  out?: Float32Array,
): GradientResult {
  checkBatch(batch);
  if (out !== undefined && out.length !== layout.size) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The gradient output buffer has the wrong length: expected ${formatCount(layout.size)} values ` +
        `(the model's parameter count), found ${formatCount(out.length)}. Allocate it as ` +
        'new Float32Array(layout.size), or leave it out.',
    );
  }
  const n = batch.shape[0];
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  let correct = 0;
  const { value, grads } = tf.variableGrads(() => {
    const xs = tf.tensor4d(batch.xs, [...batch.shape], 'float32');
    const probs = asTensor(model.apply(xs, { training: true }));
    const labels = tf.tensor1d(Int32Array.from(batch.labels), 'int32');
    const numClasses = probs.shape[1] ?? 0;
    const oneHot = tf.oneHot(labels, numClasses);
    const logp = tf.log(tf.clipByValue(probs, EPSILON, 1 - EPSILON));
    const loss = tf.neg(tf.mean(tf.sum(tf.mul(oneHot, logp), -1)));
    // The accuracy reading rides along the forward pass; keep() it out of the gradient tape's tidy.
    const hits = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(probs, -1), labels), 'int32')));
    correct = hits.dataSync()[0] ?? 0;
    hits.dispose();
    return loss as tf.Scalar;
  }, variables);
  try {
    const gradient = out ?? new Float32Array(layout.size);
    variables.forEach((v, i) => {
      const g = grads[v.name];
      if (!g)
        throw new ShardlineError(
          'INTERNAL',
          `No gradient for ${v.name}: is it connected to the output?`,
        );
      gradient.set(g.dataSync() as Float32Array, layout.slots[i]!.offset);
    });
    const loss = value.dataSync()[0] ?? Number.NaN;
    return { gradient, loss, sampleCount: n, correct };
  } finally {
    value.dispose();
    tf.dispose(grads);
  }
}

/**
 * Class probabilities for a batch of images, without training-only behaviour (dropout off).
 * Returns a row-major Float32Array of batch x classes. Leaves no tensors behind.
 */
export function predictProbabilities(
  model: TrainableModel,
  xs: Float32Array,
  shape: readonly [number, number, number, number],
): Float32Array {
  return tf.tidy(() => {
    const out = asTensor(model.apply(tf.tensor4d(xs, [...shape], 'float32'), { training: false }));
    return out.dataSync() as Float32Array;
  });
}
