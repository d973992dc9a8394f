/**
 * Parsers for the values of `train`'s settings, wherever they come from. Each one throws an
 * {@link Expectation} saying what a valid value looks like; the settings module adds where the
 * value came from. On the command line commander shows "error: option '--epochs <n>' argument
 * 'x' is invalid. Expected a whole number of at least 1."; from the environment or the config
 * file, "The environment variable SHARDLINE_EPOCHS is invalid: expected a whole number of at
 * least 1, found "x". ...".
 */
import { ShardlineError } from '@shardline/core/errors';
import { Expectation } from '@shardline/core/settings';
import { isModelFilePath } from '@shardline/models';

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

/** `--image-size`: `HxW` (such as `64x48`) or one number for a square; returned as `HxW`. */
export function imageSizeText(value: string): string {
  const match = /^\s*(\d+)\s*(?:[x×,]\s*(\d+))?\s*$/i.exec(value);
  const height = Number(match?.[1]);
  const width = Number(match?.[2] ?? match?.[1]);
  if (!match || !(height >= 1 && height <= 4096 && width >= 1 && width <= 4096)) {
    throw new Expectation(
      'expected an image size as HEIGHTxWIDTH (such as 64x64) or one number for a square, each from 1 to 4096',
    );
  }
  return `${height}x${width}`;
}

/** Parses what {@link imageSizeText} returned. */
export function parseImageSize(text: string): { height: number; width: number } {
  const [height, width] = imageSizeText(text).split('x').map(Number) as [number, number];
  return { height, width };
}

/** A fraction strictly between 0 and 1, such as a validation split. */
export function openFraction(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n >= 1) {
    throw new Expectation('expected a fraction between 0 and 1 (exclusive), such as 0.2');
  }
  return n;
}

/** `--class-names`: at least two distinct, comma-separated names, returned comma-joined. */
export function classNamesText(value: string): string {
  const names = value.split(',').map((name) => name.trim());
  if (names.length < 2 || names.some((name) => name === '')) {
    throw new Expectation(
      'expected at least two class folder names separated by commas, such as cats,dogs',
    );
  }
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name)) throw new Expectation(`expected distinct class names; "${name}" is twice`);
    seen.add(name);
  }
  return names.join(',');
}

/** One `--hp` item: `name=value`, such as `dropout=0.3` or `filters=32,64`. */
export function hyperparameterItem(value: string): string {
  const at = value.indexOf('=');
  const name = at < 0 ? '' : value.slice(0, at).trim();
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || value.slice(at + 1).trim() === '') {
    throw new Expectation(
      'expected name=value, such as dropout=0.3 or hiddenUnits=128,64 (the name as the model declares it)',
    );
  }
  return `${name}=${value.slice(at + 1).trim()}`;
}

/**
 * The `--hp` items as an object. A name given twice is an error rather than last-one-wins: two
 * values for one hyperparameter is a mistake in a script, not an override.
 */
export function hyperparameterRecord(items: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const at = item.indexOf('=');
    const name = item.slice(0, at);
    if (Object.hasOwn(out, name)) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `--hp ${name} is given twice (${name}=${out[name]} and ${item}); give each hyperparameter once.`,
      );
    }
    out[name] = item.slice(at + 1);
  }
  return out;
}

/**
 * `--model`: one of `names` (the registered models), or a file path (a model.json, its folder,
 * or an ES module), which `isModelFilePath` recognises by its form. Whether the file exists is
 * checked when the job starts, with a message naming the path.
 */
export function modelValue(names: readonly string[]): (value: string) => string {
  return (value) => {
    const text = value.trim();
    if (names.includes(text) || isModelFilePath(text)) return text;
    throw new Expectation(
      `expected one of ${names.join(', ')}, or the path of a model file (a model.json or its folder, or an ES module .mjs/.js exporting a model spec)`,
    );
  };
}
