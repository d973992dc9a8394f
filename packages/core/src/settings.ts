/**
 * Typed settings for Shardline's command-line programs. A program lists its settings once, in a
 * table built with {@link setting}; everything else follows from that table: the type of the
 * resolved settings (inferred, so programs read `settings.epochs` as a number with no cast),
 * the command-line flags and their help, the environment variables, the config-file keys, one
 * parser and one error message per bad value wherever it came from, and `--print-config`.
 *
 * Each setting comes from, in this order of precedence:
 *
 *     command-line flags  >  environment variables  >  the config file  >  a preset  >  built-in defaults
 *
 * A preset is a named bundle of values (a training recipe, say) that a program ships and a user
 * picks with one setting, such as `--preset five-epochs`; anything given any other way overrides
 * it, value by value, and --print-config names the preset as each value's source.
 *
 * A setting has one value of type `string`, `number` or `boolean`, or is a `list` of strings
 * (`readonly string[]`), such as a repeatable `--plugin <module>`: each `--plugin` on the command
 * line adds an item, the environment variable holds a JSON array of strings (or one item), the
 * config file a JSON array. Precedence takes whole lists: flags replace the environment's list,
 * which replaces the file's. A list's `parse` checks and converts one item.
 *
 * Names follow one rule, so deployment files can be checked against a CLI's `--help`: the
 * environment variable is `SHARDLINE_` + the flag's name in upper snake case (`--data-dir` ->
 * `SHARDLINE_DATA_DIR`, `--no-download` -> `SHARDLINE_NO_DOWNLOAD`), and the config-file key is
 * the flag's name in camelCase (`dataDir`, `noDownload`). The config file itself is named by
 * `--config` or `SHARDLINE_CONFIG`.
 *
 * This module knows no command-line parser: a program declares each setting's flag with its
 * parser of choice (both Shardline CLIs use commander) from {@link optionFlags},
 * {@link optionHelp} and {@link parseFlag}, and hands what was given on the command line to
 * {@link resolveSettings}. It loads without TensorFlow.js.
 *
 * @example
 * ```ts
 * import { defineSettings, nonEmpty, resolveSettings, setting } from '@shardline/core/settings';
 *
 * const model = defineSettings({
 *   subject: 'example',
 *   example: '{"name": "a"}',
 *   settings: [
 *     setting({ flag: '--name', argument: '<name>', description: 'a name', type: 'string',
 *               defaultValue: () => 'anonymous', parse: nonEmpty('a name') }),
 *     setting({ flag: '--tag', argument: '<tag>', description: 'a tag', type: 'list',
 *               parse: nonEmpty('a tag') }),
 *   ],
 * });
 * const { settings } = resolveSettings(model, { flags: {}, env: process.env });
 * settings.name; // string, from SHARDLINE_NAME, "name" in SHARDLINE_CONFIG's file, or 'anonymous'
 * settings.tag; // readonly string[] | undefined, from --tag a --tag b, SHARDLINE_TAG='["a","b"]', "tag": ["a", "b"]
 * ```
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isShardlineError, ShardlineError } from './errors.js';

/**
 * A setting's value: what a flag, a variable or a JSON config file can give. A `list` setting's
 * value is an array of strings, one per repeated flag or JSON array item.
 */
export type SettingValue = string | number | boolean | readonly string[];

/**
 * The JSON type a setting takes in the config file; `list` is an array of strings (one item per
 * repeated flag on the command line).
 */
export type SettingType = 'string' | 'number' | 'boolean' | 'list';

/** The {@link SettingType} of values of type `V`. */
export type SettingTypeOf<V extends SettingValue> = V extends readonly string[]
  ? 'list'
  : V extends boolean
    ? 'boolean'
    : V extends number
      ? 'number'
      : 'string';

/**
 * What a setting's parser returns for values of type `V`: the value itself, or for a list one
 * item (`ItemOf<readonly string[]>` is `string`).
 */
export type ItemOf<V extends SettingValue> = V extends readonly (infer Item)[] ? Item : V;

type CamelCase<S extends string> = S extends `${infer Head}-${infer Tail}`
  ? `${Head}${Capitalize<CamelCase<Tail>>}`
  : S;

/** The config-file key of a flag, as a type: `ConfigKeyOf<'--data-dir'>` is `'dataDir'`. */
export type ConfigKeyOf<Flag extends string> = Flag extends `--${infer Name}`
  ? CamelCase<Name>
  : never;

/** One row of a settings table, as {@link setting} builds it. */
export interface SettingSpec<
  Key extends string = string,
  Value extends SettingValue = SettingValue,
> {
  /** The config-file key: the flag's name in camelCase. */
  readonly key: Key;
  /** The long flag, such as `--data-dir` (a switch that turns something off is `--no-x`). */
  readonly flag: `--${string}`;
  /** The environment variable: `SHARDLINE_` + the flag's name in upper snake case. */
  readonly env: string;
  /** The flag's argument for help, such as `<dir>`; absent for switches. */
  readonly argument?: string;
  readonly description: string;
  /** Its JSON type in the config file; `list` for a repeatable flag with an array of strings. */
  readonly type: SettingTypeOf<Value>;
  /** The allowed values (of each item, for a list), for settings that take one of a list (shown in help). */
  readonly choices?: readonly string[];
  /**
   * A file or folder (each item, for a list): relative values in the config file resolve against
   * the file's folder.
   */
  readonly path?: boolean;
  /** Never printed: --print-config and logs show `<redacted>`. */
  readonly secret?: boolean;
  /** The built-in default, if any. */
  readonly defaultValue?: () => Value;
  /** How help shows the default, when it is computed (such as `<hostname>-<pid>`). */
  readonly defaultDescription?: string;
  /**
   * Checks and converts a text value (a flag's argument, an environment variable, or a config
   * file's string or number); for a list, one item. Throws an {@link Expectation} saying what a
   * valid value (item) looks like.
   */
  readonly parse: (text: string) => ItemOf<Value>;
}

/**
 * What {@link setting} takes for a string, number or boolean setting: a row without the names the
 * rule derives from the flag. A list takes a {@link ListSettingInit}.
 */
export interface SettingInit<Flag extends `--${string}`, Value extends SettingValue> {
  readonly flag: Flag;
  readonly argument?: string;
  readonly description: string;
  readonly type: SettingTypeOf<Value>;
  readonly choices?: readonly string[];
  readonly path?: boolean;
  readonly secret?: boolean;
  readonly defaultDescription?: string;
  readonly parse: (text: string) => Value;
}

/**
 * What {@link setting} takes for a `list` setting: a repeatable flag whose value is a
 * `readonly string[]` of what `parse` returns, one per item. It needs an `argument`.
 */
export interface ListSettingInit<Flag extends `--${string}`> {
  readonly flag: Flag;
  /** The argument of one occurrence of the flag, such as `<name=value>`. */
  readonly argument: string;
  readonly description: string;
  readonly type: 'list';
  /** The allowed values of each item, shown in help. */
  readonly choices?: readonly string[];
  /** Each item is a file or folder: relative items in the config file resolve against its folder. */
  readonly path?: boolean;
  readonly secret?: boolean;
  readonly defaultDescription?: string;
  /** Checks and converts one item's text. */
  readonly parse: (text: string) => string;
}

/** A setting with a default: always present in the resolved settings. */
export type DefaultedSetting<Key extends string, Value extends SettingValue> = SettingSpec<
  Key,
  Value
> & { readonly defaultValue: () => Value };

/** A setting without a default: optional in the resolved settings. */
export type OptionalSetting<Key extends string, Value extends SettingValue> = SettingSpec<
  Key,
  Value
> & { readonly defaultValue?: undefined };

/**
 * One row of a settings table. The key (`dataDir`) and the environment variable
 * (`SHARDLINE_DATA_DIR`) follow from the flag; the value's type follows from `parse`, and a
 * setting with a `defaultValue` is always present in the resolved settings.
 *
 * A `list` setting (`type: 'list'`) is a repeatable flag; its value is a `readonly string[]` and
 * its `parse` checks one item.
 *
 * @example
 * ```ts
 * setting({ flag: '--epochs', argument: '<n>', description: 'passes over the training set',
 *           type: 'number', defaultValue: () => 30, parse: positiveInt });
 * setting({ flag: '--plugin', argument: '<module>', description: 'a plugin to load',
 *           type: 'list', path: true, defaultValue: () => [], parse: nonEmpty('a module') });
 * ```
 */
export function setting<const Flag extends `--${string}`, Value extends string | number | boolean>(
  init: SettingInit<Flag, Value> & { readonly defaultValue: () => NoInfer<Value> },
): DefaultedSetting<ConfigKeyOf<Flag>, Value>;
export function setting<const Flag extends `--${string}`, Value extends string | number | boolean>(
  init: SettingInit<Flag, Value> & { readonly defaultValue?: undefined },
): OptionalSetting<ConfigKeyOf<Flag>, Value>;
// The list overloads come last: TypeScript types a default such as `() => 'red'` under the first
// overload it tries, and a list's contextual type there would widen it to `string`.
export function setting<const Flag extends `--${string}`>(
  init: ListSettingInit<Flag> & { readonly defaultValue: () => readonly string[] },
): DefaultedSetting<ConfigKeyOf<Flag>, readonly string[]>;
export function setting<const Flag extends `--${string}`>(
  init: ListSettingInit<Flag> & { readonly defaultValue?: undefined },
): OptionalSetting<ConfigKeyOf<Flag>, readonly string[]>;
export function setting(
  init: Omit<SettingInit<`--${string}`, string | number | boolean>, 'type'> & {
    readonly type: SettingType;
    readonly defaultValue?: (() => SettingValue) | undefined;
  },
): SettingSpec {
  const { defaultValue, ...rest } = init;
  return {
    ...rest,
    ...(defaultValue === undefined ? {} : { defaultValue }),
    key: configKeyFor(init.flag),
    env: envVariableFor(init.flag),
  };
}

/** A settings table: the rows of one program, in the order help and --print-config show them. */
export type SettingTable = readonly SettingSpec[];

/** The keys of a table's settings. */
export type SettingKeyOf<Table extends SettingTable> = Table[number]['key'];

type ValueOf<S> = S extends { readonly type: 'list' }
  ? readonly string[]
  : S extends { readonly parse: (text: string) => infer V }
    ? V
    : never;
type HasDefault<S> = S extends { readonly defaultValue: () => SettingValue } ? true : false;
type Flatten<T> = { [K in keyof T]: T[K] } & {};

/**
 * The resolved settings of a table: a property per setting, typed by its parser; optional
 * where the setting has no default.
 */
export type SettingsOf<Table extends SettingTable> = Flatten<
  {
    [S in Table[number] as HasDefault<S> extends true ? S['key'] : never]: ValueOf<S>;
  } & {
    [S in Table[number] as HasDefault<S> extends true ? never : S['key']]?: ValueOf<S>;
  }
>;

/** Values given on the command line, already checked by each setting's parser. */
export type FlagValues<Table extends SettingTable> = {
  [S in Table[number] as S['key']]?: ValueOf<S>;
};

/**
 * A setting that can also be given as a file holding its value, such as a token and a token
 * file. The two are one setting: the one from the higher-precedence source wins (a `--token`
 * flag overrides a `tokenFile` in the config file); both from the same source are ambiguous and
 * refused. The winning file is read while resolving, so a bad one stops the program (and
 * --print-config) before anything else happens.
 */
export interface FileForm<Key extends string> {
  /** The setting the file holds, such as `token`. */
  readonly value: Key;
  /** The setting naming the file, such as `tokenFile`. */
  readonly file: Key;
  /** How messages name the two, such as `['a token', 'a token file']`. */
  readonly nouns: readonly [string, string];
  /** Reads the file; `namedBy` says where its path came from, for messages. */
  readonly read: (path: string, namedBy: string) => string;
  /** Checks a value given directly; `label` names where it came from, for messages. */
  readonly check?: (value: string, label: string) => unknown;
}

/** One named preset: what it is for, and the values it gives the settings it names. */
export interface SettingsPreset<Key extends string = string> {
  /** One line for help and docs, such as what the recipe reaches and in how long. */
  readonly description: string;
  /** Values as resolved settings hold them (a number for a number setting, and so on). */
  readonly values: Readonly<Partial<Record<Key, SettingValue>>>;
}

/** A program's presets: the string setting that picks one, and the presets by name. */
export interface SettingsPresets<Key extends string = string> {
  /** The setting whose value names the preset, such as `preset` (`--preset <name>`). */
  readonly setting: Key;
  readonly presets: Readonly<Record<string, SettingsPreset<Key>>>;
}

/** A program's settings: its table and what messages about its config file say. */
export interface SettingsModel<Table extends SettingTable> {
  readonly settings: Table;
  /** Whose settings these are, for messages: `worker` -> "a JSON file of worker settings". */
  readonly subject: string;
  /** A short config file for messages, such as `{"coordinator": "10.0.0.5:7070"}`. */
  readonly example: string;
  readonly fileForms: readonly FileForm<SettingKeyOf<Table>>[];
  /** Named bundles of values between the config file and the defaults; absent: none. */
  readonly presets?: SettingsPresets<SettingKeyOf<Table>>;
}

/**
 * Checks a table (each flag and key once, `--config` not among them) and its presets (each value
 * of a setting that exists, of its type, and one its parser accepts), and returns the model the
 * other functions take. Throws at startup, so a mistake in a table fails every test of its CLI.
 */
export function defineSettings<const Table extends SettingTable>(model: {
  settings: Table;
  subject: string;
  example: string;
  fileForms?: readonly FileForm<SettingKeyOf<Table>>[];
  presets?: SettingsPresets<SettingKeyOf<Table>>;
}): SettingsModel<Table> {
  const seen = new Set<string>([CONFIG_FLAG]);
  for (const spec of model.settings) {
    if (seen.has(spec.flag)) {
      throw new ShardlineError(
        'INTERNAL',
        `The ${model.subject} settings declare ${spec.flag} twice (or declare ${CONFIG_FLAG}, which names the config file): expected each flag once. Remove the duplicate row.`,
      );
    }
    seen.add(spec.flag);
    if (spec.type === 'list' && !spec.argument) {
      throw new ShardlineError(
        'INTERNAL',
        `The ${model.subject} setting ${spec.flag} is a list without an argument: expected one such as <item>, which each repetition of the flag gives. Add an argument to the row.`,
      );
    }
  }
  if (model.presets) checkPresets(model.subject, model.settings, model.presets);
  return { ...model, fileForms: model.fileForms ?? [] };
}

/** Throws INTERNAL for a preset table that could give a setting a value it would refuse. */
function checkPresets(subject: string, table: SettingTable, presets: SettingsPresets): void {
  const wrong = (problem: string) =>
    new ShardlineError(
      'INTERNAL',
      `The ${subject} presets are wrong: ${problem}. Fix the preset table.`,
    );
  const picker = table.find((s) => s.key === presets.setting);
  if (picker?.type !== 'string') {
    throw wrong(`they are picked by "${presets.setting}", expected a string setting of the table`);
  }
  const names = Object.keys(presets.presets);
  if (JSON.stringify(picker.choices ?? []) !== JSON.stringify(names)) {
    throw wrong(
      `${picker.flag} offers ${JSON.stringify(picker.choices ?? [])}, expected exactly the preset names ${JSON.stringify(names)}`,
    );
  }
  for (const [name, preset] of Object.entries(presets.presets)) {
    for (const [key, value] of Object.entries(preset.values)) {
      const spec = table.find((s) => s.key === key);
      if (!spec || spec === picker || spec.secret) {
        throw wrong(
          `preset ${name} sets "${key}", expected a setting of the table other than the preset itself or a secret`,
        );
      }
      const type = Array.isArray(value) ? 'list' : typeof value;
      if (type !== spec.type) {
        throw wrong(
          `preset ${name} gives ${spec.flag} ${JSON.stringify(value)}, expected a ${spec.type}`,
        );
      }
      const items = Array.isArray(value)
        ? (value as readonly string[])
        : [value as string | number | boolean];
      for (const item of items) {
        try {
          if (JSON.stringify(spec.parse(String(item))) !== JSON.stringify(item)) {
            throw new Expectation(`${JSON.stringify(item)} as it parses`);
          }
        } catch (error) {
          throw wrong(
            `preset ${name} gives ${spec.flag} ${JSON.stringify(item)}, which its parser refuses (${(error as Error).message})`,
          );
        }
      }
    }
  }
}

/** The environment variable of a flag: `SHARDLINE_` + its name in upper snake case. */
export function envVariableFor(flag: string): string {
  return `SHARDLINE_${flag.replace(/^--/, '').toUpperCase().replace(/-/g, '_')}`;
}

/** The config-file key of a flag: its name in camelCase (`--data-dir` -> `dataDir`). */
export function configKeyFor(flag: string): string {
  return flag.replace(/^--/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The flag that names the config file; it has an environment variable but no key in the file. */
export const CONFIG_FLAG = '--config';
/** `SHARDLINE_CONFIG`. */
export const CONFIG_ENV = envVariableFor(CONFIG_FLAG);

/**
 * Every environment variable a program reads its settings from, SHARDLINE_CONFIG included. A
 * program that starts another with settings of its own can unset these.
 */
export function settingsEnvVariables(model: SettingsModel<SettingTable>): string[] {
  return [...model.settings.map((s) => s.env), CONFIG_ENV];
}

// ---------------------------------------------------------------------------------------------
// Parsers

const EXPECTATION = Symbol.for('shardline.settings.expectation');

/**
 * Thrown by a setting's parser: its message says what a valid value looks like, starting in
 * lower case ("expected a whole number of at least 1"), so callers can add where the value came
 * from and what was found. Recognise it with {@link isExpectation}.
 */
export class Expectation extends Error {
  override name = 'Expectation';
  readonly [EXPECTATION] = true;
}

/** Whether `value` is an {@link Expectation} (from any copy of this module). */
export function isExpectation(value: unknown): value is Expectation {
  return value instanceof Error && (value as Partial<Expectation>)[EXPECTATION] === true;
}

/** Environment values a switch accepts (case-insensitive); anything else is refused. */
const TRUE_WORDS = ['1', 'true', 'yes', 'on'];
const FALSE_WORDS = ['0', 'false', 'no', 'off'];

/** Parses a switch's environment value: 1/true/yes/on or 0/false/no/off, in any case. */
export function parseSwitch(value: string): boolean {
  const word = value.trim().toLowerCase();
  if (TRUE_WORDS.includes(word)) return true;
  if (FALSE_WORDS.includes(word)) return false;
  throw new Expectation(
    `expected ${TRUE_WORDS.join(', ')} to turn it on, or ${FALSE_WORDS.join(', ')} to turn it off`,
  );
}

/** A parser of any text but the empty one; `what` names it: `nonEmpty('a folder')`. */
export function nonEmpty(what: string): (value: string) => string {
  return (value) => {
    if (value.trim() === '') throw new Expectation(`expected ${what}, not an empty value`);
    return value;
  };
}

/** A parser of one of `choices`, typed as their union. */
export function oneOf<const Choices extends readonly string[]>(
  choices: Choices,
): (value: string) => Choices[number] {
  return (value) => {
    const found = choices.find((choice) => choice === value);
    if (found === undefined) throw new Expectation(`expected one of ${choices.join(', ')}`);
    return found;
  };
}

// ---------------------------------------------------------------------------------------------
// Flags

/** The flag with its argument, as a parser declares it: `--data-dir <dir>`, `--tls`. */
export function optionFlags(spec: SettingSpec): string {
  return spec.argument ? `${spec.flag} ${spec.argument}` : spec.flag;
}

/**
 * The property command-line parsers (commander, yargs) store a flag under: its name in
 * camelCase without a negating `no-` (`--no-download` -> `download`).
 */
export function optionAttribute(spec: SettingSpec): string {
  return configKeyFor(spec.flag.replace(/^--no-/, '--'));
}

/**
 * A setting's help text: its description, then in commander's format its choices, its default,
 * its environment variable and its config-file key, so `--help` documents every way to set it:
 * `compute backend (choices: "auto", "cpu", default: "auto", env: SHARDLINE_BACKEND, config: backend)`.
 * A list's help starts with `repeatable`, and an empty default list is not shown.
 */
export function optionHelp(spec: SettingSpec): string {
  const extra: string[] = [];
  if (spec.type === 'list') extra.push('repeatable');
  if (spec.choices) extra.push(`choices: ${spec.choices.map((c) => JSON.stringify(c)).join(', ')}`);
  const defaultValue = spec.defaultValue?.();
  const emptyList = Array.isArray(defaultValue) && defaultValue.length === 0;
  if (spec.defaultValue && spec.type !== 'boolean' && !emptyList) {
    extra.push(`default: ${spec.defaultDescription ?? formatJson(defaultValue)}`);
  }
  extra.push(`env: ${spec.env}`, `config: ${spec.key}`);
  return `${spec.description} (${extra.join(', ')})`;
}

/** The help text of `--config`. */
export const CONFIG_OPTION_HELP = `read settings from this JSON file; flags and environment variables override it (env: ${CONFIG_ENV})`;

/**
 * Parses a flag's argument with the setting's parser (for a list, one occurrence's item: collect
 * them into an array in order). An invalid one throws an {@link Expectation} whose message is a
 * sentence ("Expected a whole number of at least 1."), for the command-line parser to show after
 * the flag and the value.
 */
export function parseFlag(spec: SettingSpec, text: string): SettingValue {
  try {
    return spec.parse(text);
  } catch (error) {
    if (!isExpectation(error)) throw error;
    throw new Expectation(`${error.message[0]!.toUpperCase()}${error.message.slice(1)}.`);
  }
}

/**
 * The settings given on a command line, from what a parser stored for each flag: `read`
 * returns the parsed value, or `undefined` for a flag not given (not the parser's default).
 * A switch given as `--tls` is true; one given as `--no-download` makes `noDownload` true. A
 * list is the array of its items in command-line order (a lone string is one item).
 */
export function flagValues<Table extends SettingTable>(
  model: SettingsModel<Table>,
  read: (spec: Table[number]) => unknown,
): FlagValues<Table> {
  const flags: Record<string, SettingValue> = {};
  for (const spec of model.settings) {
    const value = read(spec);
    if (value === undefined) continue;
    if (spec.type === 'list') {
      if (typeof value === 'string') {
        flags[spec.key] = [value];
      } else if (Array.isArray(value) && value.every((item) => typeof item === 'string')) {
        flags[spec.key] = [...value];
      } else {
        throw new ShardlineError(
          'INTERNAL',
          `${spec.flag} was parsed into ${describeJson(value)}: expected an array of strings, one per occurrence. Declare the flag with parseFlag as its argument parser, collecting the items.`,
        );
      }
    } else if (!spec.argument) {
      flags[spec.key] = true;
    } else if (typeof value === spec.type) {
      flags[spec.key] = value as SettingValue;
    } else {
      throw new ShardlineError(
        'INTERNAL',
        `${spec.flag} was parsed into ${describeJson(value)}: expected a ${spec.type}. Declare the flag with parseFlag as its argument parser.`,
      );
    }
  }
  return flags as FlagValues<Table>;
}

// ---------------------------------------------------------------------------------------------
// Sources and display

/** Where a setting's value came from. */
export type SettingSource =
  | { kind: 'flag'; flag: string }
  | { kind: 'env'; variable: string }
  | { kind: 'file'; path: string }
  | { kind: 'preset'; name: string }
  | { kind: 'default' }
  | { kind: 'unset' };

/** One setting after merging, for --print-config. */
export interface ResolvedSetting<Key extends string = string> {
  key: Key;
  /** The value (undefined when unset); secrets too: redact with {@link displayValue}. */
  value: SettingValue | undefined;
  source: SettingSource;
  /** Set when a higher-precedence form of the same setting won (a token file beside a token). */
  ignored?: true;
  /** How the value was obtained or why it is ignored, for --print-config. */
  note?: string;
}

/** The merged settings of one program. */
export interface ResolvedSettings<Table extends SettingTable> {
  settings: SettingsOf<Table>;
  /** Every setting in table order, with its source. */
  entries: ResolvedSetting<SettingKeyOf<Table>>[];
  /** The config file read, if any, and what named it. */
  configFile?: { path: string; source: SettingSource };
}

/** Describes a source for messages and --print-config: `flag --name`, `env SHARDLINE_NAME`. */
export function describeSource(source: SettingSource): string {
  switch (source.kind) {
    case 'flag':
      return `flag ${source.flag}`;
    case 'env':
      return `env ${source.variable}`;
    case 'file':
      return `file ${source.path}`;
    case 'preset':
      return `preset ${source.name}`;
    case 'default':
      return 'default';
    case 'unset':
      return 'not set';
  }
}

/**
 * A value as --print-config shows it: secrets as `<redacted>`, unset as `(not set)`, a list as a
 * JSON array (`["dropout=0.3", "filters=32,64"]`, unambiguous when items hold commas).
 */
export function displayValue(spec: SettingSpec, value: unknown): string {
  if (value === undefined) return '(not set)';
  if (spec.secret) return '<redacted>';
  if (Array.isArray(value)) return formatJson(value);
  return String(value);
}

/** JSON with a space after each array comma: `["a", "b"]`. */
function formatJson(value: unknown): string {
  return Array.isArray(value)
    ? `[${value.map((item) => JSON.stringify(item)).join(', ')}]`
    : JSON.stringify(value);
}

/** Where `key`'s value came from. */
export function sourceOf<Table extends SettingTable>(
  resolved: ResolvedSettings<Table>,
  key: SettingKeyOf<Table>,
): SettingSource {
  return resolved.entries.find((e) => e.key === key)?.source ?? { kind: 'unset' };
}

/**
 * The merged settings as a table for `--print-config`: each setting, its value (secrets
 * redacted) and where it came from, after a row for the config file.
 */
export function formatSettings<Table extends SettingTable>(
  model: SettingsModel<Table>,
  resolved: ResolvedSettings<Table>,
): string {
  const rows: string[][] = [['setting', 'value', 'source']];
  rows.push([
    'config',
    resolved.configFile?.path ?? '(none)',
    resolved.configFile ? describeSource(resolved.configFile.source) : 'not set',
  ]);
  for (const entry of resolved.entries) {
    const spec = specOf(model, entry.key);
    const source = describeSource(entry.source) + (entry.note ? ` (${entry.note})` : '');
    rows.push([entry.key, displayValue(spec, entry.value), source]);
  }
  const widths = [0, 1].map((c) => Math.max(...rows.map((r) => r[c]!.length)));
  return `${rows
    .map((r) => `${r[0]!.padEnd(widths[0]!)}  ${r[1]!.padEnd(widths[1]!)}  ${r[2]}`.trimEnd())
    .join('\n')}\n`;
}

/** Each setting as `value (source)`, secrets redacted: fields for a debug log line. */
export function settingsLogFields<Table extends SettingTable>(
  model: SettingsModel<Table>,
  resolved: ResolvedSettings<Table>,
): Record<string, string> {
  return Object.fromEntries(
    resolved.entries.map((e) => [
      e.key,
      `${displayValue(specOf(model, e.key), e.value)} (${describeSource(e.source)})`,
    ]),
  );
}

function specOf(model: SettingsModel<SettingTable>, key: string): SettingSpec {
  const spec = model.settings.find((s) => s.key === key);
  if (spec === undefined) {
    throw new ShardlineError('INTERNAL', `No setting "${key}" in the ${model.subject} settings.`);
  }
  return spec;
}

// ---------------------------------------------------------------------------------------------
// The config file

function describeJson(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  return `the ${typeof value} ${JSON.stringify(value)}`;
}

/** {@link describeJson}, but only the JSON type of a secret's value (`a number`). */
function describeItem(spec: SettingSpec, value: unknown): string {
  return spec.secret && value !== null && typeof value !== 'object'
    ? `a ${typeof value}`
    : describeJson(value);
}

/** Levenshtein distance, ignoring case: a misspelt key ("datadir", "tlsCA") is one or two edits away. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(
        row[j]! + 1,
        row[j - 1]! + 1,
        previous + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1),
      );
      previous = current;
    }
  }
  return row[b.length]!;
}

function suggest(key: string, candidates: readonly string[]): string | undefined {
  // A longer spelling of a key ("dataDirectory", "tlsCaFile") means the longest key it starts with.
  const prefixOf = candidates
    .filter((c) => key.toLowerCase().startsWith(c.toLowerCase()))
    .sort((x, y) => y.length - x.length)[0];
  if (prefixOf !== undefined) return prefixOf;
  let best: { key: string; d: number } | undefined;
  for (const candidate of candidates) {
    const d = distance(key, candidate);
    if (d <= 3 && (best === undefined || d < best.d)) best = { key: candidate, d };
  }
  return best?.key;
}

function readJsonFile(model: SettingsModel<SettingTable>, path: string, namedBy: string): unknown {
  let raw: string;
  try {
    if (statSync(path).isDirectory()) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `The config file ${path} (from ${namedBy}) is a folder: expected a JSON file. Point ${namedBy} at the file itself.`,
      );
    }
    raw = readFileSync(path, 'utf8');
  } catch (error) {
    if (isShardlineError(error)) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new ShardlineError(
        'NOT_FOUND',
        `The config file ${path} (from ${namedBy}) does not exist: expected a JSON file of ${model.subject} settings. Fix the path, or unset ${namedBy} to run without one.`,
        { cause: error },
      );
    }
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The config file ${path} (from ${namedBy}) cannot be read (${code ?? (error as Error).message}): expected a file this user can read. Check its permissions.`,
      { cause: error },
    );
  }
  try {
    return JSON.parse(raw);
  } catch (error) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The config file ${path} is not valid JSON (${(error as Error).message}): expected one JSON object such as ${model.example}. Fix the syntax (JSON allows no comments or trailing commas).`,
      { cause: error },
    );
  }
}

/** How a value of `spec` is written in JSON, for "Write it as ..." in messages. */
function jsonExample(spec: SettingSpec): string {
  if (spec.type === 'list') return `[${JSON.stringify(spec.choices?.[0] ?? '...')}]`;
  if (spec.type === 'boolean') return 'true';
  if (spec.type === 'number') return JSON.stringify(spec.defaultValue?.() ?? 1);
  return JSON.stringify(spec.choices?.[0] ?? '...');
}

function checkFileValue(
  spec: SettingSpec,
  key: string,
  value: unknown,
  path: string,
): SettingValue {
  const where = `The config file ${path}: "${key}"`;
  if (spec.type === 'list') return checkFileList(spec, key, value, path);
  if (typeof value !== spec.type) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${where} must be a JSON ${spec.type}, found ${describeJson(value)}. Write it as "${key}": ${jsonExample(spec)}, or remove the key.`,
    );
  }
  if (typeof value === 'boolean') return value;
  try {
    // Strings and numbers go through the same parser as flags and environment variables, so
    // every source accepts the same values.
    const checked = spec.parse(String(value));
    return spec.path && typeof checked === 'string' ? resolve(dirname(path), checked) : checked;
  } catch (error) {
    if (!isExpectation(error)) throw error;
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${where} is invalid: ${error.message}, found ${describeJson(value)}. Fix it in the file, or remove the key.`,
    );
  }
}

/** A list in the config file: a JSON array of strings, or a lone string as one item. */
function checkFileList(
  spec: SettingSpec,
  key: string,
  value: unknown,
  path: string,
): readonly string[] {
  const where = `The config file ${path}: "${key}"`;
  const items = typeof value === 'string' ? [value] : value;
  const bad = Array.isArray(items) ? items.findIndex((item) => typeof item !== 'string') : -1;
  if (!Array.isArray(items) || bad >= 0) {
    const found = Array.isArray(items)
      ? `${describeItem(spec, items[bad])} as item ${bad + 1}`
      : describeItem(spec, value);
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `${where} must be a JSON array of strings, found ${found}. Write it as "${key}": ${jsonExample(spec)}, or remove the key.`,
    );
  }
  return (items as string[]).map((item, index) => {
    try {
      const checked = String(spec.parse(item));
      return spec.path ? resolve(dirname(path), checked) : checked;
    } catch (error) {
      if (!isExpectation(error)) throw error;
      const shown = spec.secret ? `an item of ${item.length} characters` : describeJson(item);
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${where} is invalid: ${error.message}, found ${shown} as item ${index + 1}. Fix it in the file, or remove the item.`,
      );
    }
  });
}

/**
 * Reads and checks a config file: a JSON object whose keys are settings in camelCase. Unknown
 * keys, wrong JSON types and invalid values are refused with the file, the key, what was
 * expected, what was found and what to do. Relative paths resolve against the file's folder. A
 * list is a JSON array of strings (a lone string is one item), each item checked and resolved.
 *
 * @param path absolute path of the file
 * @param namedBy how the file was named, for messages (`--config`, `SHARDLINE_CONFIG`)
 */
export function readConfigFile<Table extends SettingTable>(
  model: SettingsModel<Table>,
  path: string,
  namedBy: string,
): FlagValues<Table> {
  const parsed = readJsonFile(model, path, namedBy);
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The config file ${path} holds ${describeJson(parsed)}: expected one JSON object of settings, such as ${model.example}.`,
    );
  }
  const keys = model.settings.map((s) => s.key);
  const values: Record<string, SettingValue> = {};
  for (const [key, value] of Object.entries(parsed)) {
    const spec = model.settings.find((s) => s.key === key);
    if (spec === undefined) {
      const close = suggest(key, keys);
      const what =
        key === configKeyFor(CONFIG_FLAG)
          ? 'A config file cannot name another one: remove it.'
          : close
            ? `Did you mean "${close}"? Rename or remove it.`
            : 'Rename or remove it.';
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `The config file ${path} has an unknown key "${key}": expected one of ${keys.join(', ')}. ${what}`,
      );
    }
    values[key] = checkFileValue(spec, key, value, path);
  }
  return values as FlagValues<Table>;
}

// ---------------------------------------------------------------------------------------------
// Resolving

/** What {@link resolveSettings} merges. */
export interface SettingsInput<Table extends SettingTable> {
  /** Values given on the command line, already checked (see {@link flagValues}). */
  flags: FlagValues<Table>;
  /** The --config flag's value, if given. */
  configFlag?: string;
  /** The environment (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** The folder relative --config / SHARDLINE_CONFIG paths resolve against (default: cwd). */
  cwd?: string;
}

/** The value of a set, non-empty environment variable (empty means unset, as in many tools). */
function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

function envSetting(spec: SettingSpec, env: NodeJS.ProcessEnv): SettingValue | undefined {
  const raw = envValue(env, spec.env);
  if (raw === undefined) return undefined;
  if (spec.type === 'list') return envList(spec, raw);
  try {
    return spec.parse(raw);
  } catch (error) {
    if (!isExpectation(error)) throw error;
    const shown = spec.secret ? `a value of ${raw.length} characters` : JSON.stringify(raw);
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The environment variable ${spec.env} is invalid: ${error.message}, found ${shown}. Fix or unset it (or override it with ${spec.flag}).`,
    );
  }
}

/**
 * A list from its environment variable: a JSON array of strings when the value starts with `[`,
 * else one item.
 */
function envList(spec: SettingSpec, raw: string): readonly string[] {
  const refuse = (expected: string, found: string): never => {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The environment variable ${spec.env} is invalid: ${expected}, found ${found}. Fix or unset it (or override it with ${spec.flag}).`,
    );
  };
  const shown = (text: string) =>
    spec.secret ? `a value of ${text.length} characters` : JSON.stringify(text);
  const arrayExpected = `expected a JSON array of strings such as ${jsonExample(spec)}, or a single item not starting with "["`;
  const json = raw.trimStart().startsWith('[');
  let items: unknown[] = [raw];
  if (json) {
    try {
      // Text starting with "[" that parses is an array.
      items = JSON.parse(raw) as unknown[];
    } catch (error) {
      return refuse(
        arrayExpected,
        `${shown(raw)}, which is not valid JSON (${(error as Error).message})`,
      );
    }
    const bad = items.findIndex((item) => typeof item !== 'string');
    if (bad >= 0) {
      return refuse(arrayExpected, `${describeItem(spec, items[bad])} as item ${bad + 1}`);
    }
  }
  return (items as string[]).map((item, index) => {
    try {
      return String(spec.parse(item));
    } catch (error) {
      if (!isExpectation(error)) throw error;
      return refuse(error.message, `${shown(item)}${json ? ` as item ${index + 1}` : ''}`);
    }
  });
}

function locateConfigFile(
  input: SettingsInput<SettingTable>,
  env: NodeJS.ProcessEnv,
): ResolvedSettings<SettingTable>['configFile'] {
  const cwd = input.cwd ?? process.cwd();
  if (input.configFlag !== undefined) {
    return { path: resolve(cwd, input.configFlag), source: { kind: 'flag', flag: CONFIG_FLAG } };
  }
  const fromEnv = envValue(env, CONFIG_ENV);
  if (fromEnv === undefined) return undefined;
  return { path: resolve(cwd, fromEnv), source: { kind: 'env', variable: CONFIG_ENV } };
}

/**
 * Merges flags, environment variables, the config file and defaults (in that order of
 * precedence) into a program's settings, and reads the files of its {@link FileForm}s. Throws
 * INVALID_ARGUMENT / NOT_FOUND naming the variable or file, what was expected and what was
 * found. Checks each value, not whether a program can run with them (a required setting).
 *
 * @example
 * ```ts
 * const { settings, entries } = resolveSettings(model, { flags: { name: 'a' }, env: process.env });
 * ```
 */
export function resolveSettings<Table extends SettingTable>(
  model: SettingsModel<Table>,
  input: SettingsInput<Table>,
): ResolvedSettings<Table> {
  const env = input.env ?? process.env;
  const configFile = locateConfigFile(input, env);
  const fromFile: Partial<Record<string, SettingValue>> = configFile
    ? readConfigFile(
        model,
        configFile.path,
        configFile.source.kind === 'flag' ? CONFIG_FLAG : CONFIG_ENV,
      )
    : {};
  const flags: Partial<Record<string, SettingValue>> = input.flags;

  // Above the defaults only: the preset is picked like any setting, then fills what nothing
  // else gave.
  const given = (spec: SettingSpec): ResolvedSetting<SettingKeyOf<Table>> | undefined => {
    const key: SettingKeyOf<Table> = spec.key;
    const fromFlag = flags[key];
    if (fromFlag !== undefined) {
      return { key, value: fromFlag, source: { kind: 'flag', flag: spec.flag } };
    }
    const fromEnv = envSetting(spec, env);
    if (fromEnv !== undefined) {
      return { key, value: fromEnv, source: { kind: 'env', variable: spec.env } };
    }
    const fileValue = fromFile[key];
    if (fileValue !== undefined && configFile) {
      return { key, value: fileValue, source: { kind: 'file', path: configFile.path } };
    }
    return undefined;
  };
  const pickerSpec = model.presets && specOf(model, model.presets.setting);
  const picked = pickerSpec && given(pickerSpec);
  const presetName = typeof picked?.value === 'string' ? picked.value : undefined;
  const preset = presetName === undefined ? undefined : model.presets?.presets[presetName];

  const entries = new Map<string, ResolvedSetting<SettingKeyOf<Table>>>();
  for (const spec of model.settings) {
    const key: SettingKeyOf<Table> = spec.key;
    const presetValue = preset?.values[key];
    const entry: ResolvedSetting<SettingKeyOf<Table>> =
      given(spec) ??
      (presetValue !== undefined && presetName !== undefined
        ? { key, value: presetValue, source: { kind: 'preset', name: presetName } }
        : spec.defaultValue
          ? { key, value: spec.defaultValue(), source: { kind: 'default' } }
          : { key, value: undefined, source: { kind: 'unset' } });
    entries.set(key, entry);
  }

  for (const form of model.fileForms) resolveFileForm(model, form, entries);

  const settings = Object.fromEntries(
    [...entries.values()]
      .filter((e) => e.value !== undefined && !e.ignored)
      .map((e) => [e.key, e.value]),
  ) as SettingsOf<Table>;
  return {
    settings,
    entries: [...entries.values()],
    ...(configFile ? { configFile } : {}),
  };
}

const RANK: Record<SettingSource['kind'], number> = {
  flag: 5,
  env: 4,
  file: 3,
  preset: 2,
  default: 1,
  unset: 0,
};

/** Where a setting's value came from, as messages about it name it. */
function namedBy(spec: SettingSpec, source: SettingSource): string {
  switch (source.kind) {
    case 'file':
      return `"${spec.key}" in ${source.path}`;
    case 'env':
      return source.variable;
    default:
      return spec.flag;
  }
}

function resolveFileForm(
  model: SettingsModel<SettingTable>,
  form: FileForm<string>,
  entries: Map<string, ResolvedSetting>,
): void {
  const valueSpec = specOf(model, form.value);
  const fileSpec = specOf(model, form.file);
  const value = entries.get(form.value)!;
  const file = entries.get(form.file)!;
  if (value.value !== undefined && file.value !== undefined) {
    if (RANK[value.source.kind] === RANK[file.source.kind]) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Both ${form.nouns[0]} and ${form.nouns[1]} are set (${describeSource(value.source)} and ${describeSource(file.source)}): expected one of them. Keep ${valueSpec.flag} / ${valueSpec.env} or ${fileSpec.flag} / ${fileSpec.env}, not both.`,
      );
    }
    const loser = RANK[value.source.kind] > RANK[file.source.kind] ? file : value;
    const winner = loser === file ? value : file;
    loser.ignored = true;
    loser.note = `ignored: ${describeSource(winner.source)} takes precedence`;
  }
  if (file.value !== undefined && !file.ignored) {
    value.value = form.read(String(file.value), namedBy(fileSpec, file.source));
    value.source = file.source;
    delete value.ignored;
    value.note = `read from ${file.value}`;
  } else if (typeof value.value === 'string' && form.check) {
    const label =
      value.source.kind === 'file'
        ? `"${valueSpec.key}" in the config file ${value.source.path}`
        : `${valueSpec.flag} / ${valueSpec.env}`;
    form.check(value.value, label);
  }
}
