/**
 * @shardline/core: compute backends, flat parameter vectors, the gradient step, optimizers,
 * learning-rate schedules, errors and logging shared by every Shardline package and app.
 */

export * from './atomicFile.js';
export * from './backends/gpu.js';
export * from './backends/selectBackend.js';
export * from './backends/wasmTrainingKernels.js';
export * from './errors.js';
export * from './gradients.js';
export * from './heap.js';
export * from './logger.js';
export * from './optimizers.js';
export * from './params.js';
export * from './schedules.js';
