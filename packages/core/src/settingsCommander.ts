/**
 * A settings table (./settings.ts) as commander options: the one adapter both CLIs use, so a
 * setting is declared, helped, parsed and read back from the command line the same way in each.
 * commander is an optional peer dependency of @shardline/core: only this entry point loads it.
 *
 * @example
 * ```ts
 * const train = new Command('train').configureHelp({ optionDescription: settingOptionDescription });
 * addSettingOptions(train, TRAIN_SETTINGS_MODEL);
 * train.action((_, command) => resolveSettings(TRAIN_SETTINGS_MODEL, flagsGiven(command, TRAIN_SETTINGS_MODEL)));
 * ```
 */
import { type Command, Help, InvalidArgumentError, Option } from 'commander';
import {
  CONFIG_FLAG,
  CONFIG_OPTION_HELP,
  type FlagValues,
  flagValues,
  isExpectation,
  optionAttribute,
  optionFlags,
  optionHelp,
  parseFlag,
  type SettingSpec,
  type SettingsModel,
  type SettingTable,
} from './settings.js';

// Help text for each setting's option: commander's own format, "(choices: ..., default: ...,
// env: NAME)", plus the config-file key, so `--help` documents all three ways to set it.
const specOfOption = new WeakMap<Option, SettingSpec>();

/**
 * commander's `optionDescription` for help, with the environment variable and config-file key of
 * every option that {@link addSettingOptions} declared. Pass it to `configureHelp`.
 */
export function settingOptionDescription(this: Help, option: Option): string {
  const spec = specOfOption.get(option);
  return spec === undefined
    ? Help.prototype.optionDescription.call(this, option)
    : optionHelp(spec);
}

/** How {@link addSettingOptions} declares options. */
export interface SettingOptionsStyle {
  /**
   * Check a setting with choices by commander's own `.choices()`, and its message ("Allowed
   * choices are seed-cnn, mlp, fast-cnn."), rather than by the setting's parser.
   */
  commanderChoices?: boolean;
}

/**
 * Declares each setting of `model` as an option of `command`, plus --config. A `list` setting's
 * flag is repeatable: each occurrence adds one item, checked by the setting's parser (also when
 * it has choices and `commanderChoices` is set).
 */
export function addSettingOptions(
  command: Command,
  model: SettingsModel<SettingTable>,
  style: SettingOptionsStyle = {},
): void {
  for (const spec of model.settings) {
    const option = new Option(optionFlags(spec), spec.description);
    const parse = (value: string) => {
      try {
        return parseFlag(spec, value);
      } catch (error) {
        throw isExpectation(error) ? new InvalidArgumentError(error.message) : error;
      }
    };
    if (spec.type === 'list') {
      // Repeatable: each occurrence adds its item (commander passes the items so far, or
      // undefined the first time, as the option has no default).
      option.argParser((value: string, previous: unknown) => [
        ...(Array.isArray(previous) ? previous : []),
        parse(value),
      ]);
    } else if (spec.choices && style.commanderChoices) {
      option.choices(spec.choices);
    } else if (spec.argument) {
      option.argParser(parse);
    }
    specOfOption.set(option, spec);
    command.addOption(option);
  }
  command.addOption(new Option(`${CONFIG_FLAG} <file>`, CONFIG_OPTION_HELP));
}

/**
 * The settings given on `command`'s command line, not commander's defaults (a switch given as
 * `--tls` is true, one given as `--no-download` makes `noDownload` true), and --config.
 */
export function flagsGiven<Table extends SettingTable>(
  command: Command,
  model: SettingsModel<Table>,
): { flags: FlagValues<Table>; config?: string } {
  const flags = flagValues(model, (spec) => {
    const attribute = optionAttribute(spec);
    return command.getOptionValueSource(attribute) === 'cli'
      ? command.getOptionValue(attribute)
      : undefined;
  });
  const config =
    command.getOptionValueSource('config') === 'cli' ? command.getOptionValue('config') : undefined;
  return { flags, ...(typeof config === 'string' ? { config } : {}) };
}
