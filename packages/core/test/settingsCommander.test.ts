/**
 * The commander adapter with a real commander program: repeatable list flags accumulate in order
 * and replace the environment's list, an invalid item names the flag and the item, help says the
 * flag is repeatable, and single-valued flags still parse as before.
 */
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import {
  defineSettings,
  Expectation,
  nonEmpty,
  oneOf,
  resolveSettings,
  setting,
} from '../src/settings.js';
import {
  addSettingOptions,
  flagsGiven,
  settingOptionDescription,
} from '../src/settingsCommander.js';

function hyperparameter(text: string): string {
  if (!/^\w+=.+$/.test(text)) throw new Expectation('expected name=value');
  return text;
}

const MODEL = defineSettings({
  subject: 'test',
  example: '{"hp": ["dropout=0.3"]}',
  settings: [
    setting({
      flag: '--hp',
      argument: '<name=value>',
      description: 'a hyperparameter',
      type: 'list',
      parse: hyperparameter,
    }),
    setting({
      flag: '--metric',
      argument: '<metric>',
      description: 'a metric',
      type: 'list',
      choices: ['loss', 'accuracy'],
      defaultValue: () => ['loss'],
      parse: oneOf(['loss', 'accuracy'] as const),
    }),
    setting({
      flag: '--name',
      argument: '<name>',
      description: 'a name',
      type: 'string',
      parse: nonEmpty('a name'),
    }),
  ] as const,
});

function program(): Command {
  const command = new Command('test')
    .exitOverride()
    .configureOutput({ writeErr: () => {}, writeOut: () => {} })
    .configureHelp({ optionDescription: settingOptionDescription });
  addSettingOptions(command, MODEL, { commanderChoices: true });
  return command;
}

function parse(args: string[]) {
  const command = program();
  command.parse(args, { from: 'user' });
  return flagsGiven(command, MODEL);
}

describe('list settings on a commander program', () => {
  it('collects a repeated flag’s items in order; a list not given is not a flag', () => {
    const { flags } = parse(['--hp', 'dropout=0.3', '--name', 'x', '--hp', 'filters=32,64']);
    expect(flags).toEqual({ hp: ['dropout=0.3', 'filters=32,64'], name: 'x' });
    expect(parse(['--metric', 'accuracy']).flags).toEqual({ metric: ['accuracy'] });
    expect(parse([]).flags).toEqual({});
  });

  it('replaces the environment’s list with the flags’ list', () => {
    const { flags } = parse(['--hp', 'a=1']);
    const { settings } = resolveSettings(MODEL, { flags, env: { SHARDLINE_HP: '["b=2","c=3"]' } });
    expect(settings.hp).toEqual(['a=1']);
    expect(settings.metric).toEqual(['loss']);
  });

  it('refuses an invalid item, naming the flag and the item', () => {
    expect(() => parse(['--hp', 'a=1', '--hp', 'dropout'])).toThrow(
      "option '--hp <name=value>' argument 'dropout' is invalid. Expected name=value.",
    );
    expect(() => parse(['--metric', 'f1'])).toThrow(
      "option '--metric <metric>' argument 'f1' is invalid. Expected one of loss, accuracy.",
    );
  });

  it('says in help that the flag is repeatable', () => {
    const help = program().helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain('a hyperparameter (repeatable, env: SHARDLINE_HP, config: hp)');
    expect(help).toContain(
      'a metric (repeatable, choices: "loss", "accuracy", default: ["loss"], env: SHARDLINE_METRIC, config: metric)',
    );
  });
});
