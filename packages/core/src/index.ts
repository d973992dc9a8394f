/**
 * @shardline/core: compute backends, flat parameter vectors, the gradient step, optimizers,
 * learning-rate schedules, errors and logging shared by every Shardline package and app.
 */
export * from './errors.js';
export * from './logger.js';
