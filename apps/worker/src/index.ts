/**
 * @shardline/worker: the worker side of Shardline. The CLI (`shardline-worker`) joins a
 * coordinator over gRPC; the coordinator's `--in-process` mode hosts the same local worker in
 * its own process. `WORKER_SETTINGS` is the table of the CLI's settings (flag, environment
 * variable, config-file key), for tools that check deployment files against it.
 */

export * from './backoff.js';
export * from './config.js';
export * from './coordinatorCheck.js';
export * from './doctor.js';
export * from './gpuEnvironment.js';
export * from './nativeProbe.js';
export * from './program.js';
export * from './session.js';
