/**
 * The dense baseline: Flatten -> Dense(300, ReLU) -> Dense(100, ReLU) -> Dense(10, softmax), the
 * Fashion-MNIST MLP from the same book as the seed CNN, the number a CNN has to beat.
 */
import * as tf from '@tensorflow/tfjs';
import { flatten, maybeDropout, reluDense, softmaxDense } from './layers.js';
import type { ModelSpec } from './registry.js';

/** Hyperparameters of `mlp`. */
export type MlpHyperparameters = {
  /** Shape of one input, flattened by the first layer. Default [28, 28, 1]. */
  readonly inputShape: readonly number[];
  /** Units of each hidden ReLU layer, in order; [] gives softmax regression. Default [300, 100]. */
  readonly hiddenUnits: readonly number[];
  /** Classes, the units of the softmax layer. Default 10. */
  readonly numClasses: number;
  /** Dropout rate after each hidden layer. Default 0 (no Dropout layers). */
  readonly dropout: number;
};

/** The `mlp` registry entry. */
export const mlpSpec: ModelSpec<MlpHyperparameters, tf.Sequential> = {
  name: 'mlp',
  description:
    'Dense baseline: Flatten -> Dense(300, relu) -> Dense(100, relu) -> Dense(10, softmax); ' +
    '266,610 parameters on 28x28x1.',
  hyperparameters: {
    inputShape: {
      type: 'integer[]',
      default: [28, 28, 1],
      min: 1,
      minLength: 1,
      description: 'Shape of one input (flattened first).',
    },
    hiddenUnits: {
      type: 'integer[]',
      default: [300, 100],
      min: 1,
      description: 'Units of each hidden ReLU layer, in order.',
    },
    numClasses: {
      type: 'integer',
      default: 10,
      min: 2,
      description: 'Number of classes (softmax units).',
    },
    dropout: {
      type: 'number',
      default: 0,
      min: 0,
      max: 1,
      maxExclusive: true,
      description: 'Dropout rate after each hidden layer; 0 adds no Dropout layers.',
    },
  },
  build({ inputShape, hiddenUnits, numClasses, dropout }, ctx) {
    const layers: tf.layers.Layer[] = [flatten(ctx, inputShape)];
    for (const units of hiddenUnits) {
      layers.push(reluDense(ctx, units));
      maybeDropout(layers, dropout, ctx);
    }
    layers.push(softmaxDense(ctx, numClasses));
    return tf.sequential({ name: 'mlp', layers });
  },
};
