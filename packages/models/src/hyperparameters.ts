/**
 * Hyperparameter declarations and their validation. A model spec declares each hyperparameter
 * with a type, a default and bounds; {@link resolveHyperparameters} fills in defaults and turns
 * any bad value into an `INVALID_ARGUMENT` error that says what was expected and what was found.
 */
import { ShardlineError } from '@shardline/core';

/** A scalar hyperparameter: an integer (`filters`) or any finite number (`dropout`). */
export interface NumberHyperparameter {
  readonly type: 'integer' | 'number';
  /** One line, shown by `listModels()` consumers and in error messages. */
  readonly description: string;
  readonly default: number;
  /** Smallest allowed value, inclusive. */
  readonly min?: number;
  /** Largest allowed value, inclusive unless `maxExclusive`. */
  readonly max?: number;
  /** When true, `max` itself is not allowed (a dropout rate lives in [0, 1)). */
  readonly maxExclusive?: boolean;
}

/** A list of integers: a shape (`inputShape`) or one size per layer (`hiddenUnits`). */
export interface IntegerListHyperparameter {
  readonly type: 'integer[]';
  readonly description: string;
  readonly default: readonly number[];
  /** Smallest allowed element, inclusive. */
  readonly min?: number;
  /** Largest allowed element, inclusive. */
  readonly max?: number;
  readonly minLength?: number;
  readonly maxLength?: number;
}

/** Declares one hyperparameter of a model. */
export type HyperparameterSpec = NumberHyperparameter | IntegerListHyperparameter;

/** The value of one hyperparameter. */
export type HyperparameterValue = number | readonly number[];

/** Hyperparameter values by name, as a builder receives them (every one present). */
export type Hyperparameters = { readonly [name: string]: HyperparameterValue };

// Distributes over unions, so the general `Hyperparameters` maps to "either kind of spec".
type SpecFor<V> = V extends number ? NumberHyperparameter : IntegerListHyperparameter;

/** The declarations of every hyperparameter in `P`, each of the kind its value needs. */
export type HyperparameterSpecs<P extends Hyperparameters> = {
  readonly [K in keyof P]-?: SpecFor<P[K]>;
};

/**
 * Describes what a hyperparameter accepts, in words: "an integer >= 1", "a number in [0, 1)",
 * "a list of 3 integers >= 1".
 */
export function describeHyperparameter(spec: HyperparameterSpec): string {
  if (spec.type === 'integer[]') {
    const { minLength, maxLength } = spec;
    const count =
      minLength !== undefined && minLength === maxLength
        ? `${minLength}`
        : minLength !== undefined && maxLength !== undefined
          ? `${minLength} to ${maxLength}`
          : minLength !== undefined && minLength > 0
            ? `${minLength} or more`
            : maxLength !== undefined
              ? `at most ${maxLength}`
              : 'any number of';
    return `a list of ${count} integers${bounds(spec.min, spec.max, false)}`;
  }
  const noun = spec.type === 'integer' ? 'an integer' : 'a number';
  return `${noun}${bounds(spec.min, spec.max, spec.maxExclusive === true)}`;
}

function bounds(min: number | undefined, max: number | undefined, maxExclusive: boolean): string {
  if (min !== undefined && max !== undefined)
    return ` in [${min}, ${max}${maxExclusive ? ')' : ']'}`;
  if (min !== undefined) return ` >= ${min}`;
  if (max !== undefined) return maxExclusive ? ` < ${max}` : ` <= ${max}`;
  return '';
}

function inRange(value: number, min?: number, max?: number, maxExclusive = false): boolean {
  if (min !== undefined && value < min) return false;
  if (max !== undefined && (maxExclusive ? value >= max : value > max)) return false;
  return true;
}

/** Shows a value found in user input, whatever it is, without throwing. */
export function showValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  // JSON would show NaN and Infinity as null.
  if (typeof value === 'number') return String(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Returns the value if it satisfies `spec`, else undefined. Lists are copied and frozen. */
function check(spec: HyperparameterSpec, value: unknown): HyperparameterValue | undefined {
  if (spec.type === 'integer[]') {
    if (!Array.isArray(value)) return undefined;
    if (spec.minLength !== undefined && value.length < spec.minLength) return undefined;
    if (spec.maxLength !== undefined && value.length > spec.maxLength) return undefined;
    for (const element of value) {
      if (!Number.isSafeInteger(element) || !inRange(element, spec.min, spec.max)) return undefined;
    }
    // A copy, so a caller mutating its array later cannot change a built model's record.
    return Object.freeze([...(value as number[])]);
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) return undefined;
  if (spec.type === 'integer' && !Number.isSafeInteger(value)) return undefined;
  return inRange(value, spec.min, spec.max, spec.maxExclusive === true) ? value : undefined;
}

/**
 * Checks `given` against `specs` and fills in defaults. Keys in `reserved` (options that are not
 * hyperparameters, such as `seed`) are skipped. Throws `INVALID_ARGUMENT` for an unknown key or a
 * value outside its declaration, naming the model, the key, what was expected and what was found.
 */
export function resolveHyperparameters(
  modelName: string,
  specs: { readonly [name: string]: HyperparameterSpec },
  given: { readonly [name: string]: unknown },
  reserved: readonly string[] = [],
): Record<string, HyperparameterValue> {
  const names = Object.keys(specs);
  for (const key of Object.keys(given)) {
    if (reserved.includes(key) || Object.hasOwn(specs, key)) continue;
    const valid = [...names, ...reserved].join(', ');
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Unknown option "${key}" for model "${modelName}": expected one of ${valid || '(none)'}, found "${key}". ` +
        `Fix its spelling or remove it; getModelSpec("${modelName}") lists the hyperparameters.`,
      { details: { model: modelName, option: key, expected: [...names, ...reserved] } },
    );
  }
  const resolved: Record<string, HyperparameterValue> = {};
  for (const name of names) {
    const spec = specs[name]!;
    const raw = given[name];
    // `undefined` from plain JavaScript callers means "use the default", as it would in Keras.
    if (raw === undefined) {
      resolved[name] = spec.type === 'integer[]' ? Object.freeze([...spec.default]) : spec.default;
      continue;
    }
    const value = check(spec, raw);
    if (value === undefined) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Hyperparameter "${name}" of model "${modelName}" must be ${describeHyperparameter(spec)}; ` +
          `found ${showValue(raw)}. Pass a valid value or leave it out to use the default ` +
          `(${showValue(spec.default)}).`,
        { details: { model: modelName, hyperparameter: name, found: showValue(raw) } },
      );
    }
    resolved[name] = value;
  }
  return resolved;
}

/** Checks that a hyperparameter declaration is itself sound (used by `registerModel`). */
export function checkHyperparameterSpec(
  modelName: string,
  name: string,
  spec: HyperparameterSpec,
): void {
  const fail = (why: string): never => {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `Hyperparameter "${name}" of model "${modelName}" is declared wrongly: ${why}. Fix the spec passed to registerModel.`,
      { details: { model: modelName, hyperparameter: name } },
    );
  };
  if (spec.type !== 'integer' && spec.type !== 'number' && spec.type !== 'integer[]') {
    fail(
      `expected type "integer", "number" or "integer[]", found ${showValue((spec as { type: unknown }).type)}`,
    );
  }
  if (typeof spec.description !== 'string' || spec.description.length === 0) {
    fail('expected a non-empty description');
  }
  if (check(spec, spec.default) === undefined) {
    fail(`its default ${showValue(spec.default)} is not ${describeHyperparameter(spec)}`);
  }
}

/**
 * A model-building `seed` option, checked: a non-negative safe integer, or undefined for a random
 * seed. Throws INVALID_ARGUMENT saying what to pass otherwise.
 */
export function checkSeed(seed: unknown): number | undefined {
  if (seed === undefined) return undefined;
  if (typeof seed === 'number' && Number.isSafeInteger(seed) && seed >= 0) return seed;
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `Option "seed" must be a non-negative integer (up to 2^53 - 1); found ${showValue(seed)}. ` +
      'Pass an integer such as 42, or leave it out for a random seed.',
    { details: { option: 'seed' } },
  );
}

/** A hyperparameter as a command line gives it (`--hp units=64` gives the string "64"). */
export type HyperparameterInput = string | number | boolean | readonly number[];

/**
 * Parses `--hp` strings by each hyperparameter's declared type (`"64"`, `"0.5"`, lists as
 * `"32,32,3"`, `"[32, 32, 3]"` or `"32x32x3"`); anything else, and anything it cannot parse, is
 * passed through for {@link resolveHyperparameters} to refuse with its usual message.
 *
 * @example
 * ```ts
 * parseHyperparameterInputs(getModelSpec('mlp').hyperparameters, { hiddenUnits: '128,64' });
 * // { hiddenUnits: [128, 64] }
 * ```
 */
export function parseHyperparameterInputs(
  specs: { readonly [name: string]: HyperparameterSpec },
  given: Readonly<Record<string, HyperparameterInput>>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(given)) {
    const spec = specs[name];
    if (spec === undefined || typeof raw !== 'string') {
      out[name] = raw;
      continue;
    }
    const text = raw.trim();
    if (spec.type === 'integer[]') {
      const inner = text.replace(/^\[(.*)\]$/s, '$1').trim();
      const parts = inner === '' ? [] : inner.split(/\s*[,x\s]\s*/);
      const values = parts.map((p) => (/^[-+]?\d+(\.\d+)?$/.test(p) ? Number(p) : Number.NaN));
      out[name] = values.every((v) => Number.isFinite(v)) ? values : raw;
    } else {
      const value = text === '' ? Number.NaN : Number(text);
      out[name] = Number.isFinite(value) ? value : raw;
    }
  }
  return out;
}

/**
 * Fills the `inputShape` and `numClasses` hyperparameters from the data, when the model declares
 * them and `given` leaves them out: a model then fits whatever images it is trained on (the seed
 * CNN on 32x32 RGB with 5 classes) unless the user fixes them.
 */
export function withDataShape(
  specs: { readonly [name: string]: HyperparameterSpec },
  given: Readonly<Record<string, unknown>>,
  data:
    | {
        readonly height: number;
        readonly width: number;
        readonly channels: number;
        readonly numClasses: number;
      }
    | undefined,
): Record<string, unknown> {
  if (data === undefined) return { ...given };
  return {
    ...(Object.hasOwn(specs, 'inputShape')
      ? { inputShape: [data.height, data.width, data.channels] }
      : {}),
    ...(Object.hasOwn(specs, 'numClasses') ? { numClasses: data.numClasses } : {}),
    ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)),
  };
}
