/**
 * The seed CNN: the Fashion-MNIST classifier from the design (Géron, "Hands-On Machine
 * Learning", chapter 14), layer for layer. With the defaults its summary is exactly the table
 * in the design: 12 layers, 1,413,834 parameters, all trainable.
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

// A type alias, not an interface: only aliases fit the `Hyperparameters` index signature.
/** Hyperparameters of `seed-cnn`. */
export type SeedCnnHyperparameters = {
  /** Height, width, channels of one image. Default [28, 28, 1]. */
  readonly inputShape: readonly number[];
  /** Classes, the units of the softmax layer. Default 10. */
  readonly numClasses: number;
  /**
   * Dropout rate after each of the two hidden dense layers. Default 0: no Dropout layers at all,
   * so the summary matches the design; the book's version used 0.5.
   */
  readonly dropout: number;
};

/** The `seed-cnn` registry entry. */
export const seedCnnSpec: ModelSpec<SeedCnnHyperparameters, tf.Sequential> = {
  name: 'seed-cnn',
  description:
    'The seed CNN from the design: Conv2D(64,7) -> MaxPool -> 2x Conv2D(128,3) -> MaxPool -> ' +
    '2x Conv2D(256,3) -> MaxPool -> Flatten -> Dense(128) -> Dense(64) -> Dense(10, softmax); ' +
    '1,413,834 parameters on 28x28x1. 0.9054 test accuracy on Fashion-MNIST after 30 epochs.',
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
    dropout: {
      type: 'number',
      default: 0,
      min: 0,
      max: 1,
      maxExclusive: true,
      description: 'Dropout rate after each hidden dense layer; 0 adds no Dropout layers.',
    },
  },
  validate: ({ inputShape }) => checkImageShape(inputShape, 3),
  build({ inputShape, numClasses, dropout }, ctx) {
    const layers: tf.layers.Layer[] = [
      reluConv2d(ctx, 64, 7, inputShape),
      maxPool2(ctx),
      reluConv2d(ctx, 128, 3),
      reluConv2d(ctx, 128, 3),
      maxPool2(ctx),
      reluConv2d(ctx, 256, 3),
      reluConv2d(ctx, 256, 3),
      maxPool2(ctx),
      flatten(ctx),
      reluDense(ctx, 128),
    ];
    maybeDropout(layers, dropout, ctx);
    layers.push(reluDense(ctx, 64));
    maybeDropout(layers, dropout, ctx);
    layers.push(softmaxDense(ctx, numClasses));
    return tf.sequential({ name: 'seed-cnn', layers });
  },
};
