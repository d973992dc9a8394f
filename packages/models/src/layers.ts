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

/** Checks that an image shape survives `pools` 2x2 poolings: says what to do when not. */
export function checkImageShape(inputShape: readonly number[], pools: number): string | undefined {
  const [height = 0, width = 0] = inputShape;
  const min = 2 ** pools;
  if (height < min || width < min) {
    return (
      `inputShape must be at least ${min}x${min} (height x width) to survive ${pools} 2x2 poolings; ` +
      `found ${height}x${width}. Resize the images or use a model with fewer poolings.`
    );
  }
  return undefined;
}

/** `Flatten`. */
export function flatten(ctx: ModelBuildContext, inputShape?: readonly number[]): tf.layers.Layer {
  return tf.layers.flatten({
    name: ctx.layerName('flatten'),
    ...(inputShape === undefined ? {} : { inputShape: [...inputShape] }),
  });
}
