/**
 * @shardline/worker: the worker side of Shardline. The CLI (`shardline-worker`) joins a
 * coordinator over gRPC; the coordinator's `--in-process` mode hosts the same local worker in
 * its own process.
 */

export * from './backoff.js';
export * from './localWorker.js';
export * from './program.js';
export * from './session.js';
export * from './trainingWorker.js';
