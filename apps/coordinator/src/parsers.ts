/**
 * Parsers for command-line values. Each one throws commander's InvalidArgumentError, which
 * commander turns into "error: option '--epochs <n>' argument 'x' is invalid. <our reason>".
 */
import { InvalidArgumentError } from 'commander';

/** A whole number >= 1. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError('Expected a whole number of at least 1.');
  }
  return n;
}

/** A whole number >= 0. */
export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError('Expected a whole number of at least 0.');
  }
  return n;
}

/** A finite number > 0 (accepts 1e-3). */
export function positiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new InvalidArgumentError('Expected a number greater than 0, such as 0.001 or 1e-3.');
  }
  return n;
}

/** A finite number >= 0. */
export function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new InvalidArgumentError('Expected a number of at least 0.');
  }
  return n;
}
