/**
 * A small, fast CNN: Conv2D(32,3) -> MaxPool -> Conv2D(64,3) -> MaxPool -> Flatten -> Dense(128)
 * -> Dense(10, softmax). It trades the seed CNN's last points of accuracy for a twentieth of the
 * compute per image (4.2 M multiply-adds forward against the seed CNN's 89 M), which makes it
 * the model for quick runs, smoke tests and CI.
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkImageShape,
  flatten,
  maxPool2,
  maybeDropout,
  reluConv2d,
  reluDense,
  softmaxDense,
} from './layers.js';
import type { ModelSpec } from './registry.js';

/** Hyperparameters of `fast-cnn`. */
export type FastCnnHyperparameters = {
  /** Height, width, channels of one image. Default [28, 28, 1]. */
  readonly inputShape: readonly number[];
  /** Classes, the units of the softmax layer. Default 10. */
  readonly numClasses: number;
  /** Filters of each Conv2D(3x3) + MaxPool(2) block, in order. Default [32, 64]. */
  readonly filters: readonly number[];
  /** Units of the hidden dense layer. Default 128. */
  readonly denseUnits: number;
  /** Dropout rate after the hidden dense layer. Default 0 (no Dropout layer). */
  readonly dropout: number;
};

/** The `fast-cnn` registry entry. */
export const fastCnnSpec: ModelSpec<FastCnnHyperparameters, tf.Sequential> = {
  name: 'fast-cnn',
  description:
    'Small CNN for quick runs: Conv2D(32,3) -> MaxPool -> Conv2D(64,3) -> MaxPool -> Flatten -> ' +
    'Dense(128) -> Dense(10, softmax); 421,642 parameters on 28x28x1. Target: about 0.88 test ' +
    'accuracy on Fashion-MNIST after one epoch with Adam (learning rate 1e-3, batch 32-64).',
  hyperparameters: {
    inputShape: {
      type: 'integer[]',
      default: [28, 28, 1],
      min: 1,
      minLength: 3,
      maxLength: 3,
      description: 'Height, width and channels of one image.',
    },
    numClasses: {
      type: 'integer',
      default: 10,
      min: 2,
      description: 'Number of classes (softmax units).',
    },
    filters: {
      type: 'integer[]',
      default: [32, 64],
      min: 1,
      minLength: 1,
      maxLength: 6,
      description: 'Filters of each Conv2D(3x3, relu) + MaxPool(2) block, in order.',
    },
    denseUnits: {
      type: 'integer',
      default: 128,
      min: 1,
      description: 'Units of the hidden dense layer.',
    },
    dropout: {
      type: 'number',
      default: 0,
      min: 0,
      max: 1,
      maxExclusive: true,
      description: 'Dropout rate after the hidden dense layer; 0 adds no Dropout layer.',
    },
  },
  validate: ({ inputShape, filters }) => checkImageShape(inputShape, filters.length),
  build({ inputShape, numClasses, filters, denseUnits, dropout }, ctx) {
    const layers: tf.layers.Layer[] = [];
    filters.forEach((count, i) => {
      layers.push(reluConv2d(ctx, count, 3, i === 0 ? inputShape : undefined), maxPool2(ctx));
    });
    layers.push(flatten(ctx), reluDense(ctx, denseUnits));
    maybeDropout(layers, dropout, ctx);
    layers.push(softmaxDense(ctx, numClasses));
    return tf.sequential({ name: 'fast-cnn', layers });
  },
};
