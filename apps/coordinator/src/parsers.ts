/**
 * Parsers for the values of `train`'s settings, wherever they come from. Each one throws an
 * {@link Expectation} saying what a valid value looks like; the settings module adds where the
 * value came from. On the command line commander shows "error: option '--epochs <n>' argument
 * 'x' is invalid. Expected a whole number of at least 1."; from the environment or the config
 * file, "The environment variable SHARDLINE_EPOCHS is invalid: expected a whole number of at
 * least 1, found "x". ...".
 */
import { Expectation } from '@shardline/core/settings';

/** A whole number >= 1. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new Expectation('expected a whole number of at least 1');
  }
  return n;
}

/** A whole number >= 0. */
export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) {
    throw new Expectation('expected a whole number of at least 0');
  }
  return n;
}

/** A finite number > 0 (accepts 1e-3). */
export function positiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new Expectation('expected a number greater than 0, such as 0.001 or 1e-3');
  }
  return n;
}

/** A finite number >= 0. */
export function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new Expectation('expected a number of at least 0');
  }
  return n;
}
