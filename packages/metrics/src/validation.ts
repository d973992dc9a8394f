/**
 * Input checks shared by the metric modules. Internal: not exported from the package.
 *
 * Every check throws a `ShardlineError` whose message says what was expected, what was found
 * and what to do, so a caller deep inside a training loop can act on it without the source.
 */
import { formatCount, ShardlineError } from '@shardline/core/errors';

/** Throws `INVALID_ARGUMENT` with the given message. */
export function invalidArgument(message: string, details?: Record<string, unknown>): never {
  throw new ShardlineError('INVALID_ARGUMENT', message, details === undefined ? {} : { details });
}

/** A short, readable rendering of any value for error messages. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') {
    return String(value);
  }
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return `an array of length ${formatCount(value.length)}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  return `a ${typeof value}`;
}

/** Requires an integer in `[min, max]`. */
export function requireInteger(
  name: string,
  value: unknown,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    invalidArgument(`${name} must be an integer ${range}, found ${describeValue(value)}.`);
  }
  return value;
}

/** Requires a finite number, optionally non-negative. */
export function requireFinite(
  name: string,
  value: unknown,
  options: { nonNegative?: boolean } = {},
): number {
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    (options.nonNegative === true && value < 0)
  ) {
    const wanted = options.nonNegative === true ? 'a finite number >= 0' : 'a finite number';
    invalidArgument(`${name} must be ${wanted}, found ${describeValue(value)}.`);
  }
  return value;
}

/** Requires an array or typed array of numbers (anything with a numeric `length` and indices). */
export function requireNumberArray(name: string, value: unknown): ArrayLike<number> {
  const ok =
    (ArrayBuffer.isView(value) &&
      !(value instanceof DataView) &&
      !(value instanceof BigInt64Array) &&
      !(value instanceof BigUint64Array)) ||
    (Array.isArray(value) && value.every((v) => typeof v === 'number'));
  if (!ok) {
    invalidArgument(
      `${name} must be a typed array (Float32Array, Int32Array, Uint8Array, ...) or an array of numbers, ` +
        `found ${describeValue(value)}.`,
    );
  }
  return value as ArrayLike<number>;
}

/** Requires `classNames`, when given, to hold exactly `numClasses` strings; returns a copy. */
export function resolveClassNames(
  classNames: readonly string[] | undefined,
  numClasses: number,
): string[] {
  if (classNames === undefined) return Array.from({ length: numClasses }, (_, i) => String(i));
  if (!Array.isArray(classNames) || classNames.some((n) => typeof n !== 'string')) {
    invalidArgument(`classNames must be an array of strings, found ${describeValue(classNames)}.`);
  }
  if (classNames.length !== numClasses) {
    invalidArgument(
      `classNames has ${formatCount(classNames.length)} entries, expected numClasses = ${formatCount(numClasses)}. ` +
        'Pass one name per class, in class-index order, or leave classNames out.',
    );
  }
  return [...classNames];
}

/**
 * Checks class-index labels: integers in `[0, numClasses)`. The message hints at one-hot
 * labels, the usual reason for a length mismatch.
 */
export function requireLabels(
  name: string,
  value: unknown,
  numClasses: number,
  expectedLength?: number,
): ArrayLike<number> {
  const labels = requireNumberArray(name, value);
  if (expectedLength !== undefined && labels.length !== expectedLength) {
    invalidArgument(
      `${name} has ${formatCount(labels.length)} entries, expected ${formatCount(expectedLength)} (one per sample).`,
    );
  }
  const range = Number.isFinite(numClasses)
    ? `an integer in [0, ${numClasses - 1}]`
    : 'an integer >= 0';
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (!Number.isInteger(label) || label < 0 || label >= numClasses) {
      invalidArgument(
        `${name}[${i}] is ${describeValue(label)}: expected a class index, ${range}. ` +
          'Pass class indices (not one-hot rows), and check numClasses matches the dataset.',
        { index: i, value: label, numClasses },
      );
    }
  }
  return labels;
}
