/**
 * Layer factories shared by the built-in models. Each takes the build context so its name and
 * initial weights are deterministic; activations and initialisers follow the seed CNN's source
 * (ReLU layers He-normal, the softmax layer Glorot-uniform, biases zero).
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelBuildContext } from './buildContext.js';

/** Appends `Dropout(rate)` when the rate is positive; nothing at 0, so the summary stays exact. */
export function maybeDropout(
  layers: tf.layers.Layer[],
  rate: number,
  ctx: ModelBuildContext,
): void {
  // No seed on purpose: tfjs reuses a Dropout layer's seed on every call, which would drop the
  // same units at every training step.
  if (rate > 0) layers.push(tf.layers.dropout({ rate, name: ctx.layerName('dropout') }));
}

/** `Conv2D(filters, kernelSize, padding same, ReLU)` with He-normal kernels and zero biases. */
export function reluConv2d(
  ctx: ModelBuildContext,
  filters: number,
  kernelSize: number,
  inputShape?: readonly number[],
): tf.layers.Layer {
  return tf.layers.conv2d({
    name: ctx.layerName('conv2d'),
    filters,
    kernelSize,
    padding: 'same',
    activation: 'relu',
    kernelInitializer: ctx.initializer('heNormal'),
    biasInitializer: 'zeros',
    ...(inputShape === undefined ? {} : { inputShape: [...inputShape] }),
  });
}

/** `Dense(units, ReLU)` with He-normal kernels (the book's choice for ReLU) and zero biases. */
export function reluDense(ctx: ModelBuildContext, units: number): tf.layers.Layer {
  return tf.layers.dense({
    name: ctx.layerName('dense'),
    units,
    activation: 'relu',
    kernelInitializer: ctx.initializer('heNormal'),
    biasInitializer: 'zeros',
  });
}

/** The softmax output layer, Glorot-uniform as Keras defaults to. */
export function softmaxDense(ctx: ModelBuildContext, units: number): tf.layers.Layer {
  return tf.layers.dense({
    name: ctx.layerName('dense'),
    units,
    activation: 'softmax',
    kernelInitializer: ctx.initializer('glorotUniform'),
    biasInitializer: 'zeros',
  });
}

/** `MaxPool(2)`: 2x2 windows, stride 2, padding valid (7x7 -> 3x3, as in the design). */
export function maxPool2(ctx: ModelBuildContext): tf.layers.Layer {
  return tf.layers.maxPooling2d({ name: ctx.layerName('max_pooling2d'), poolSize: 2, strides: 2 });
}

/**
 * Checks that an image shape survives `pools` 2x2 poolings (named `max_pooling2d_1` ...
 * `max_pooling2d_<pools>`, as the built-ins name them): says which pooling would shrink which
 * side below 1, and what to do, instead of letting tfjs fail inside the build.
 */
export function checkImageShape(inputShape: readonly number[], pools: number): string | undefined {
  const [height = 0, width = 0] = inputShape;
  const min = 2 ** pools;
  if (height >= min && width >= min) return undefined;
  // The first pooling whose input side is below 2: a 2x2 window with stride 2 leaves 0 rows.
  const sides: string[] = [];
  let layer = pools;
  for (const [side, size] of [
    ['height', height],
    ['width', width],
  ] as const) {
    if (size >= min) continue;
    const k = Math.max(1, Math.floor(Math.log2(Math.max(size, 1))) + 1);
    const before = Math.floor(size / 2 ** (k - 1));
    layer = Math.min(layer, k);
    sides.push(`the ${side} from ${before} to 0 at max_pooling2d_${k}`);
  }
  return (
    `inputShape must be at least ${min}x${min} (height x width) to survive ${pools} 2x2 poolings; ` +
    `found ${height}x${width}: the poolings would shrink ${sides.join(' and ')}, leaving max_pooling2d_${layer} ` +
    'an empty output. Resize the images (--image-size) or use a model with fewer poolings.'
  );
}

/** `Flatten`. */
export function flatten(ctx: ModelBuildContext, inputShape?: readonly number[]): tf.layers.Layer {
  return tf.layers.flatten({
    name: ctx.layerName('flatten'),
    ...(inputShape === undefined ? {} : { inputShape: [...inputShape] }),
  });
}
