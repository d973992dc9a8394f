/**
 * @shardline/datasets: Fashion-MNIST and MNIST for TensorFlow.js training. IDX reading,
 * verified download and caching, deterministic shuffling, sharding by rank, batching and
 * seeded augmentation. Everything here works without TensorFlow.js; `toTensors` lives in
 * `@shardline/datasets/tensors`.
 */
export * from './augment.js';
export * from './batch.js';
export * from './descriptors.js';
export * from './download.js';
export * from './idx.js';
export * from './imageSet.js';
export * from './iterate.js';
export * from './load.js';
export * from './locations.js';
export * from './progress.js';
export * from './random.js';
export * from './sampler.js';
// Types only: importing the index must not load TensorFlow.js.
export type { BatchTensors } from './tensors.js';
