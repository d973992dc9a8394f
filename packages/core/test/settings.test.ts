/**
 * The generic settings resolver with a small table of its own: names derived from the flag,
 * types inferred from the table, one order of precedence (flag > environment > config file >
 * preset > default), the same parser and the same kind of message for every source, config files (real
 * files in a temporary folder), a setting given as a file, and what --print-config shows.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, expectTypeOf, it } from 'vitest';
import { hasErrorCode, ShardlineError } from '../src/errors.js';
import {
  CONFIG_ENV,
  configKeyFor,
  defineSettings,
  displayValue,
  Expectation,
  envVariableFor,
  flagValues,
  formatSettings,
  isExpectation,
  nonEmpty,
  oneOf,
  optionAttribute,
  optionFlags,
  optionHelp,
  parseFlag,
  parseSwitch,
  readConfigFile,
  resolveSettings,
  type SettingsInput,
  type SettingsOf,
  setting,
  settingsEnvVariables,
  settingsLogFields,
  sourceOf,
} from '../src/settings.js';

const dir = mkdtempSync(join(tmpdir(), 'shardline-settings-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function file(content: string, name = `f${++files}.json`): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

function count(text: string): number {
  if (!/^\d+$/.test(text)) throw new Expectation('expected a whole number');
  return Number(text);
}

const TABLE = [
  setting({
    flag: '--host-name',
    argument: '<name>',
    description: 'where to go',
    type: 'string',
    parse: nonEmpty('a host name'),
  }),
  setting({
    flag: '--count',
    argument: '<n>',
    description: 'how many',
    type: 'number',
    defaultValue: () => 3,
    parse: count,
  }),
  setting({
    flag: '--colour',
    argument: '<colour>',
    description: 'which colour',
    type: 'string',
    choices: ['red', 'green'],
    defaultValue: () => 'red',
    parse: oneOf(['red', 'green'] as const),
  }),
  setting({
    flag: '--no-cache',
    description: 'never cache',
    type: 'boolean',
    defaultValue: () => false,
    parse: parseSwitch,
  }),
  setting({
    flag: '--work-dir',
    argument: '<dir>',
    description: 'a folder',
    type: 'string',
    path: true,
    parse: nonEmpty('a folder'),
  }),
  setting({
    flag: '--secret',
    argument: '<secret>',
    description: 'a secret',
    type: 'string',
    secret: true,
    parse: (value) => value,
  }),
  setting({
    flag: '--secret-file',
    argument: '<file>',
    description: 'a file holding the secret',
    type: 'string',
    path: true,
    parse: nonEmpty('a file'),
  }),
] as const;

const checked: string[] = [];
const MODEL = defineSettings({
  settings: TABLE,
  subject: 'test',
  example: '{"count": 3}',
  fileForms: [
    {
      value: 'secret',
      file: 'secretFile',
      nouns: ['a secret', 'a secret file'],
      read: (path, namedBy) => `read(${path}, ${namedBy})`,
      check: (value, label) => {
        checked.push(label);
        if (value.includes(' '))
          throw new ShardlineError('INVALID_ARGUMENT', `${label} has a space`);
      },
    },
  ],
});

function resolve(input: Partial<SettingsInput<typeof TABLE>> = {}) {
  return resolveSettings(MODEL, { flags: {}, env: {}, cwd: dir, ...input });
}

function caught(run: () => unknown): ShardlineError {
  try {
    run();
  } catch (error) {
    expect(hasErrorCode(error, 'INVALID_ARGUMENT') || hasErrorCode(error, 'NOT_FOUND')).toBe(true);
    return error as ShardlineError;
  }
  throw new Error('expected an error');
}

describe('the table', () => {
  it('derives each setting’s environment variable and config key from its flag', () => {
    expect(TABLE.map((s) => [s.flag, s.env, s.key])).toEqual([
      ['--host-name', 'SHARDLINE_HOST_NAME', 'hostName'],
      ['--count', 'SHARDLINE_COUNT', 'count'],
      ['--colour', 'SHARDLINE_COLOUR', 'colour'],
      ['--no-cache', 'SHARDLINE_NO_CACHE', 'noCache'],
      ['--work-dir', 'SHARDLINE_WORK_DIR', 'workDir'],
      ['--secret', 'SHARDLINE_SECRET', 'secret'],
      ['--secret-file', 'SHARDLINE_SECRET_FILE', 'secretFile'],
    ]);
    expect(envVariableFor('--tls-server-name')).toBe('SHARDLINE_TLS_SERVER_NAME');
    expect(configKeyFor('--tls-server-name')).toBe('tlsServerName');
    expect(settingsEnvVariables(MODEL)).toEqual([...TABLE.map((s) => s.env), CONFIG_ENV]);
  });

  it('infers the resolved settings’ type: parsers give the types, defaults make them required', () => {
    expectTypeOf<SettingsOf<typeof TABLE>>().toEqualTypeOf<{
      count: number;
      colour: 'red' | 'green';
      noCache: boolean;
      hostName?: string;
      workDir?: string;
      secret?: string;
      secretFile?: string;
    }>();
    const { settings } = resolve();
    expectTypeOf(settings.colour).toEqualTypeOf<'red' | 'green'>();
    expect(settings).toEqual({ count: 3, colour: 'red', noCache: false });
  });

  it('refuses a table that declares a flag twice, or --config', () => {
    const twice = () =>
      defineSettings({ settings: [TABLE[1], TABLE[1]], subject: 'test', example: '{}' });
    expect(twice).toThrow(/declare --count twice/);
    const config = setting({
      flag: '--config',
      argument: '<file>',
      description: 'x',
      type: 'string',
      parse: (v) => v,
    });
    expect(() => defineSettings({ settings: [config], subject: 'test', example: '{}' })).toThrow(
      /declare --config twice \(or declare --config/,
    );
  });
});

describe('precedence: flag > environment > config file > default', () => {
  const config = file(JSON.stringify({ count: 30, colour: 'green', hostName: 'file.example' }));

  it('takes each setting from the highest source that sets it', () => {
    const all = resolve({
      flags: { count: 1 },
      env: { SHARDLINE_COUNT: '2', SHARDLINE_HOST_NAME: 'env.example' },
      configFlag: config,
    });
    expect(all.settings).toMatchObject({ count: 1, hostName: 'env.example', colour: 'green' });
    expect(sourceOf(all, 'count')).toEqual({ kind: 'flag', flag: '--count' });
    expect(sourceOf(all, 'hostName')).toEqual({ kind: 'env', variable: 'SHARDLINE_HOST_NAME' });
    expect(sourceOf(all, 'colour')).toEqual({ kind: 'file', path: config });
    expect(sourceOf(all, 'noCache')).toEqual({ kind: 'default' });
    expect(sourceOf(all, 'workDir')).toEqual({ kind: 'unset' });
  });

  it('finds the config file by --config, else SHARDLINE_CONFIG, relative to the working folder', () => {
    const other = file('{"count": 7}', 'other.json');
    const byEnv = resolve({ env: { SHARDLINE_CONFIG: 'other.json' } });
    expect(byEnv.settings.count).toBe(7);
    expect(byEnv.configFile).toEqual({
      path: other,
      source: { kind: 'env', variable: 'SHARDLINE_CONFIG' },
    });
    const byFlag = resolve({ env: { SHARDLINE_CONFIG: 'other.json' }, configFlag: config });
    expect(byFlag.settings.count).toBe(30);
    expect(byFlag.configFile?.source).toEqual({ kind: 'flag', flag: '--config' });
  });

  it('treats an empty environment variable as unset', () => {
    expect(resolve({ env: { SHARDLINE_COUNT: '', SHARDLINE_CONFIG: '' } }).settings.count).toBe(3);
  });

  it('reads switches from the environment as 1/true/yes/on or 0/false/no/off', () => {
    expect(resolve({ env: { SHARDLINE_NO_CACHE: 'YES' } }).settings.noCache).toBe(true);
    expect(resolve({ env: { SHARDLINE_NO_CACHE: 'off' } }).settings.noCache).toBe(false);
  });
});

describe('presets: flag > environment > config file > preset > default', () => {
  const PRESET_TABLE = [
    ...TABLE.slice(0, 4),
    setting({
      flag: '--preset',
      argument: '<name>',
      description: 'a bundle of values',
      type: 'string',
      choices: ['big', 'green'],
      parse: oneOf(['big', 'green'] as const),
    }),
  ] as const;
  const presets = {
    setting: 'preset',
    presets: {
      big: { description: 'many, in green', values: { count: 100, colour: 'green' } },
      green: { description: 'green only', values: { colour: 'green' } },
    },
  } as const;
  const model = defineSettings({
    settings: PRESET_TABLE,
    subject: 'test',
    example: '{}',
    presets,
  });
  const resolveWith = (input: Partial<SettingsInput<typeof PRESET_TABLE>>) =>
    resolveSettings(model, { flags: {}, env: {}, cwd: dir, ...input });

  it('fills what nothing else set, and names the preset as the source', () => {
    const picked = resolveWith({ flags: { preset: 'big' } });
    expect(picked.settings).toMatchObject({ count: 100, colour: 'green', noCache: false });
    expect(sourceOf(picked, 'count')).toEqual({ kind: 'preset', name: 'big' });
    expect(sourceOf(picked, 'noCache')).toEqual({ kind: 'default' });
    expect(formatSettings(model, picked)).toMatch(/^count\s+100\s+preset big$/m);
    // Without one, the defaults.
    expect(resolveWith({}).settings).toMatchObject({ count: 3, colour: 'red' });
  });

  it('gives way, value by value, to a flag, the environment and the config file', () => {
    const config = file(JSON.stringify({ preset: 'big', colour: 'red' }));
    const resolved = resolveWith({ configFlag: config, env: { SHARDLINE_COUNT: '5' } });
    expect(resolved.settings).toMatchObject({ preset: 'big', count: 5, colour: 'red' });
    expect(resolveWith({ flags: { preset: 'big', count: 1 } }).settings.count).toBe(1);
    // The preset itself may come from any source; the flag picks over the environment.
    const picked = resolveWith({ flags: { preset: 'green' }, env: { SHARDLINE_PRESET: 'big' } });
    expect(picked.settings).toMatchObject({ preset: 'green', count: 3, colour: 'green' });
  });

  it('refuses an unknown preset name, listing the ones there are', () => {
    const error = caught(() => resolveWith({ env: { SHARDLINE_PRESET: 'huge' } }));
    expect(error.message).toContain('SHARDLINE_PRESET');
    expect(error.message).toMatch(/big.*green/);
  });

  it('refuses, at definition, a preset that sets an unknown setting, the wrong type or a value its parser refuses', () => {
    const define = (values: Record<string, unknown>) => () =>
      defineSettings({
        settings: PRESET_TABLE,
        subject: 'test',
        example: '{}',
        presets: {
          setting: 'preset',
          presets: {
            big: { description: '', values: values as never },
            green: presets.presets.green,
          },
        },
      });
    expect(define({ size: 3 })).toThrow(/preset big sets "size", expected a setting of the table/);
    expect(define({ count: '3' })).toThrow(/preset big gives --count "3", expected a number/);
    expect(define({ colour: 'blue' })).toThrow(
      /preset big gives --colour "blue", which its parser refuses/,
    );
    expect(define({ preset: 'green' })).toThrow(/preset big sets "preset"/);
    const unlisted = () =>
      defineSettings({
        settings: PRESET_TABLE,
        subject: 'test',
        example: '{}',
        presets: { setting: 'preset', presets: { big: presets.presets.big } },
      });
    expect(unlisted).toThrow(
      /--preset offers \["big","green"\], expected exactly the preset names \["big"\]/,
    );
  });
});

describe('bad values name their source, what was expected and what was found', () => {
  it('from the environment', () => {
    expect(caught(() => resolve({ env: { SHARDLINE_COUNT: 'many' } })).message).toBe(
      'The environment variable SHARDLINE_COUNT is invalid: expected a whole number, found "many". Fix or unset it (or override it with --count).',
    );
    expect(caught(() => resolve({ env: { SHARDLINE_COLOUR: 'blue' } })).message).toMatch(
      /SHARDLINE_COLOUR is invalid: expected one of red, green, found "blue"/,
    );
    expect(caught(() => resolve({ env: { SHARDLINE_NO_CACHE: 'maybe' } })).message).toMatch(
      /SHARDLINE_NO_CACHE is invalid: expected 1, true, yes, on to turn it on, or 0, false, no, off to turn it off, found "maybe"/,
    );
  });

  it('from the environment, without quoting a secret', () => {
    const bad = setting({
      flag: '--pin',
      argument: '<pin>',
      description: 'a pin',
      type: 'string',
      secret: true,
      parse: (value) => {
        if (!/^\d+$/.test(value)) throw new Expectation('expected digits');
        return value;
      },
    });
    const model = defineSettings({ settings: [bad], subject: 'test', example: '{}' });
    const error = caught(() =>
      resolveSettings(model, { flags: {}, env: { SHARDLINE_PIN: 'hunter2x' } }),
    );
    expect(error.message).toContain('found a value of 8 characters');
    expect(error.message).not.toContain('hunter2x');
  });

  it('from the config file: wrong JSON types, invalid values', () => {
    const refuse = (content: string) =>
      caught(() => resolve({ configFlag: file(content) })).message;
    expect(refuse('{"count": "3"}')).toMatch(
      /: "count" must be a JSON number, found the string "3"\. Write it as "count": 3, or remove the key\./,
    );
    expect(refuse('{"noCache": "yes"}')).toMatch(
      /"noCache" must be a JSON boolean, found the string "yes"\. Write it as "noCache": true/,
    );
    expect(refuse('{"colour": null}')).toMatch(
      /"colour" must be a JSON string, found null\. Write it as "colour": "red"/,
    );
    expect(refuse('{"count": 1.5}')).toMatch(
      /"count" is invalid: expected a whole number, found the number 1\.5\. Fix it in the file, or remove the key\./,
    );
    expect(refuse('{"colour": "blue"}')).toMatch(
      /"colour" is invalid: expected one of red, green, found the string "blue"/,
    );
  });

  it('on the command line, as a sentence for the parser to show after the flag', () => {
    expect(parseFlag(TABLE[1], '12')).toBe(12);
    expect(() => parseFlag(TABLE[1], 'x')).toThrow('Expected a whole number.');
    try {
      parseFlag(TABLE[1], 'x');
    } catch (error) {
      expect(isExpectation(error)).toBe(true);
    }
  });

  it('recognises expectations from any copy of the module, by brand', () => {
    const foreign = Object.assign(new Error('x'), {
      [Symbol.for('shardline.settings.expectation')]: true,
    });
    expect(isExpectation(foreign)).toBe(true);
    expect(isExpectation(new Error('x'))).toBe(false);
  });
});

describe('the config file', () => {
  it('refuses an unknown key, suggesting the one meant', () => {
    const message = (content: string) =>
      caught(() => readConfigFile(MODEL, file(content), '--config')).message;
    expect(message('{"cuont": 1}')).toMatch(
      /unknown key "cuont": expected one of hostName, count, colour, noCache, workDir, secret, secretFile\. Did you mean "count"\? Rename or remove it\./,
    );
    expect(message('{"workDirectory": "x"}')).toMatch(/Did you mean "workDir"\?/);
    expect(message('{"zzzzzzzz": 1}')).toMatch(/unknown key "zzzzzzzz": .* Rename or remove it\.$/);
    expect(message('{"config": "x.json"}')).toMatch(/A config file cannot name another one/);
  });

  it('refuses a file that is missing, a folder, not JSON, or not one object', () => {
    const missing = join(dir, 'missing.json');
    const byEnv = caught(() => resolve({ env: { SHARDLINE_CONFIG: missing } }));
    expect(byEnv.code).toBe('NOT_FOUND');
    expect(byEnv.message).toBe(
      `The config file ${missing} (from SHARDLINE_CONFIG) does not exist: expected a JSON file of test settings. Fix the path, or unset SHARDLINE_CONFIG to run without one.`,
    );
    const folder = join(dir, 'folder');
    mkdirSync(folder, { recursive: true });
    expect(caught(() => resolve({ configFlag: folder })).message).toMatch(
      /\(from --config\) is a folder: expected a JSON file/,
    );
    expect(caught(() => resolve({ configFlag: file('{"count": 1,}') })).message).toMatch(
      /is not valid JSON \(.*\): expected one JSON object such as \{"count": 3\}\. Fix the syntax/,
    );
    expect(caught(() => resolve({ configFlag: file('[1]') })).message).toMatch(
      /holds an array: expected one JSON object of settings, such as \{"count": 3\}/,
    );
  });

  it('resolves relative paths against its own folder; flags and variables stay as given', () => {
    const sub = join(dir, 'etc');
    mkdirSync(sub, { recursive: true });
    const config = join(sub, 'settings.json');
    writeFileSync(config, JSON.stringify({ workDir: 'work', hostName: 'relative-looking' }));
    const fromFile = resolve({ configFlag: 'etc/settings.json' });
    expect(fromFile.settings.workDir).toBe(join(sub, 'work'));
    expect(fromFile.settings.hostName).toBe('relative-looking');
    expect(resolve({ configFlag: config, env: { SHARDLINE_WORK_DIR: 'w' } }).settings.workDir).toBe(
      'w',
    );
  });
});

describe('a setting given as a file', () => {
  it('reads the file that wins, naming where its path came from', () => {
    const byFlag = resolve({ flags: { secretFile: '/s' } });
    expect(byFlag.settings.secret).toBe('read(/s, --secret-file)');
    const entry = byFlag.entries.find((e) => e.key === 'secret');
    expect(entry).toMatchObject({ source: { kind: 'flag' }, note: 'read from /s' });
    expect(resolve({ env: { SHARDLINE_SECRET_FILE: '/e' } }).settings.secret).toBe(
      'read(/e, SHARDLINE_SECRET_FILE)',
    );
    const config = file('{"secretFile": "/f"}');
    expect(resolve({ configFlag: config }).settings.secret).toBe(
      `read(/f, "secretFile" in ${config})`,
    );
  });

  it('lets the higher source win, and refuses both from the same source', () => {
    const flagWins = resolve({ flags: { secret: 'a' }, env: { SHARDLINE_SECRET_FILE: '/e' } });
    expect(flagWins.settings.secret).toBe('a');
    expect(flagWins.settings.secretFile).toBeUndefined();
    expect(flagWins.entries.find((e) => e.key === 'secretFile')).toMatchObject({
      ignored: true,
      note: 'ignored: flag --secret takes precedence',
    });
    expect(caught(() => resolve({ flags: { secret: 'a', secretFile: '/s' } })).message).toBe(
      'Both a secret and a secret file are set (flag --secret and flag --secret-file): expected one of them. Keep --secret / SHARDLINE_SECRET or --secret-file / SHARDLINE_SECRET_FILE, not both.',
    );
  });

  it('checks a value given directly, naming its source', () => {
    checked.length = 0;
    resolve({ env: { SHARDLINE_SECRET: 'ok' } });
    const config = file('{"secret": "with space"}');
    expect(caught(() => resolve({ configFlag: config })).message).toBe(
      `"secret" in the config file ${config} has a space`,
    );
    expect(checked).toEqual([
      '--secret / SHARDLINE_SECRET',
      `"secret" in the config file ${config}`,
    ]);
  });
});

describe('flags', () => {
  it('declares each flag with its argument, and the attribute parsers store it under', () => {
    expect(optionFlags(TABLE[0])).toBe('--host-name <name>');
    expect(optionFlags(TABLE[3])).toBe('--no-cache');
    expect(optionAttribute(TABLE[3])).toBe('cache');
    expect(optionAttribute(TABLE[4])).toBe('workDir');
  });

  it('documents every way to set a setting in its help, in commander’s format', () => {
    expect(optionHelp(TABLE[2])).toBe(
      'which colour (choices: "red", "green", default: "red", env: SHARDLINE_COLOUR, config: colour)',
    );
    expect(optionHelp(TABLE[3])).toBe('never cache (env: SHARDLINE_NO_CACHE, config: noCache)');
  });

  it('turns what a parser stored into typed settings; a given switch is on', () => {
    const stored: Record<string, unknown> = { count: 4, cache: false, workDir: undefined };
    const flags = flagValues(MODEL, (spec) => stored[optionAttribute(spec)]);
    expect(flags).toEqual({ count: 4, noCache: true });
    expect(() => flagValues(MODEL, (spec) => (spec.key === 'count' ? '4' : undefined))).toThrow(
      /--count was parsed into the string "4": expected a number/,
    );
  });
});

describe('--print-config', () => {
  it('shows each setting, its value and its source, and never a secret', () => {
    const config = file('{"colour": "green"}');
    const resolved = resolve({
      flags: { count: 9 },
      env: { SHARDLINE_SECRET: 'do-not-print' },
      configFlag: config,
    });
    const text = formatSettings(MODEL, resolved);
    expect(text).not.toContain('do-not-print');
    const rows = text
      .trim()
      .split('\n')
      .map((line) => line.split(/ {2,}/));
    expect(rows).toEqual([
      ['setting', 'value', 'source'],
      ['config', config, 'flag --config'],
      ['hostName', '(not set)', 'not set'],
      ['count', '9', 'flag --count'],
      ['colour', 'green', `file ${config}`],
      ['noCache', 'false', 'default'],
      ['workDir', '(not set)', 'not set'],
      ['secret', '<redacted>', 'env SHARDLINE_SECRET'],
      ['secretFile', '(not set)', 'not set'],
    ]);
    expect(settingsLogFields(MODEL, resolved)).toMatchObject({
      count: '9 (flag --count)',
      secret: '<redacted> (env SHARDLINE_SECRET)',
    });
  });
});

describe('list settings', () => {
  function hyperparameter(text: string): string {
    if (!/^\w+=.+$/.test(text)) throw new Expectation('expected name=value');
    return text;
  }

  const LISTS = [
    setting({
      flag: '--hp',
      argument: '<name=value>',
      description: 'a hyperparameter',
      type: 'list',
      parse: hyperparameter,
    }),
    setting({
      flag: '--plugin',
      argument: '<module>',
      description: 'a plugin to load',
      type: 'list',
      path: true,
      defaultValue: () => [],
      parse: nonEmpty('a module'),
    }),
    setting({
      flag: '--metric',
      argument: '<metric>',
      description: 'a metric to report',
      type: 'list',
      choices: ['loss', 'accuracy'],
      defaultValue: () => ['loss'],
      parse: oneOf(['loss', 'accuracy'] as const),
    }),
    setting({
      flag: '--key',
      argument: '<key>',
      description: 'a secret key',
      type: 'list',
      secret: true,
      parse: hyperparameter,
    }),
    setting({
      flag: '--colour',
      argument: '<colour>',
      description: 'one colour',
      type: 'string',
      defaultValue: () => 'red',
      parse: oneOf(['red', 'green'] as const),
    }),
  ] as const;
  const LIST_MODEL = defineSettings({ settings: LISTS, subject: 'test', example: '{"hp": []}' });

  function resolveLists(input: Partial<SettingsInput<typeof LISTS>> = {}) {
    return resolveSettings(LIST_MODEL, { flags: {}, env: {}, cwd: dir, ...input });
  }

  it('infers readonly string[]; a list without a default is absent, `() => []` is empty', () => {
    expectTypeOf<SettingsOf<typeof LISTS>>().toEqualTypeOf<{
      plugin: readonly string[];
      metric: readonly string[];
      colour: 'red' | 'green';
      hp?: readonly string[];
      key?: readonly string[];
    }>();
    const { settings } = resolveLists();
    expect(settings).toEqual({ plugin: [], metric: ['loss'], colour: 'red' });
    expect('hp' in settings).toBe(false);
    const hp: readonly string[] | undefined = settings.hp;
    expect(hp).toBeUndefined();
    // Refused at compile time: a list's parse returning the array, a list without an argument,
    // a list's default that is not an array, a string's default that is one.
    const row = { argument: '<x>', description: 'x', parse: nonEmpty('x') } as const;
    const arrayParse = { ...row, flag: '--a', type: 'list', parse: (t: string) => [t] } as const;
    const noArgument = {
      flag: '--b',
      description: 'b',
      type: 'list',
      parse: nonEmpty('b'),
    } as const;
    const stringDefault = { ...row, flag: '--c', type: 'list', defaultValue: () => 'c' } as const;
    const listDefault = { ...row, flag: '--d', type: 'string', defaultValue: () => ['d'] } as const;
    const invalid = () => [
      // @ts-expect-error parse of a list returns one item
      setting(arrayParse),
      // @ts-expect-error a list needs an argument
      setting(noArgument),
      // @ts-expect-error a list's default is an array
      setting(stringDefault),
      // @ts-expect-error a string's default is not an array
      setting(listDefault),
    ];
    expect(invalid).toBeTypeOf('function');
  });

  it('refuses a list without an argument in the table', () => {
    const { argument, ...row } = LISTS[0];
    expect(argument).toBe('<name=value>');
    expect(() => defineSettings({ settings: [row], subject: 'test', example: '{}' })).toThrow(
      'The test setting --hp is a list without an argument: expected one such as <item>, which each repetition of the flag gives. Add an argument to the row.',
    );
  });

  it('takes repeated flags in order, each item through the parser', () => {
    expect(parseFlag(LISTS[0], 'dropout=0.3')).toBe('dropout=0.3');
    expect(() => parseFlag(LISTS[0], 'dropout')).toThrow('Expected name=value.');
    const stored: Record<string, unknown> = {
      hp: ['dropout=0.3', 'filters=32,64'],
      plugin: 'a.js',
    };
    const flags = flagValues(LIST_MODEL, (spec) => stored[optionAttribute(spec)]);
    expect(flags).toEqual({ hp: ['dropout=0.3', 'filters=32,64'], plugin: ['a.js'] });
    const { settings } = resolveLists({ flags });
    expect(settings.hp).toEqual(['dropout=0.3', 'filters=32,64']);
    expect(settings.plugin).toEqual(['a.js']);
    expect(() => flagValues(LIST_MODEL, (spec) => (spec.key === 'hp' ? [1] : undefined))).toThrow(
      /--hp was parsed into an array: expected an array of strings, one per occurrence/,
    );
  });

  it('reads the environment as a JSON array of strings, or as one item', () => {
    const fromJson = resolveLists({ env: { SHARDLINE_HP: '["a=1","b=2"]' } });
    expect(fromJson.settings.hp).toEqual(['a=1', 'b=2']);
    expect(sourceOf(fromJson, 'hp')).toEqual({ kind: 'env', variable: 'SHARDLINE_HP' });
    expect(resolveLists({ env: { SHARDLINE_HP: ' ["a=1"]' } }).settings.hp).toEqual(['a=1']);
    expect(resolveLists({ env: { SHARDLINE_HP: 'filters=32,64' } }).settings.hp).toEqual([
      'filters=32,64',
    ]);
    expect(resolveLists({ env: { SHARDLINE_PLUGIN: '[]' } }).settings.plugin).toEqual([]);
    // Environment paths stay as given, like single path settings.
    expect(resolveLists({ env: { SHARDLINE_PLUGIN: 'p.js' } }).settings.plugin).toEqual(['p.js']);
  });

  it('refuses bad JSON, non-string items and invalid items from the environment', () => {
    const refuse = (value: string) =>
      caught(() => resolveLists({ env: { SHARDLINE_HP: value } })).message;
    expect(refuse('["a=1",')).toMatch(
      /^The environment variable SHARDLINE_HP is invalid: expected a JSON array of strings such as \["\.\.\."\], or a single item not starting with "\[", found "\[\\"a=1\\",", which is not valid JSON \(.+\)\. Fix or unset it \(or override it with --hp\)\.$/,
    );
    expect(refuse('["a=1", 2]')).toBe(
      'The environment variable SHARDLINE_HP is invalid: expected a JSON array of strings such as ["..."], or a single item not starting with "[", found the number 2 as item 2. Fix or unset it (or override it with --hp).',
    );
    expect(refuse('["a=1", "b"]')).toBe(
      'The environment variable SHARDLINE_HP is invalid: expected name=value, found "b" as item 2. Fix or unset it (or override it with --hp).',
    );
    expect(refuse('dropout')).toBe(
      'The environment variable SHARDLINE_HP is invalid: expected name=value, found "dropout". Fix or unset it (or override it with --hp).',
    );
    expect(
      caught(() => resolveLists({ env: { SHARDLINE_METRIC: '["loss","f1"]' } })).message,
    ).toMatch(/SHARDLINE_METRIC is invalid: expected one of loss, accuracy, found "f1" as item 2/);
    const secret = caught(() => resolveLists({ env: { SHARDLINE_KEY: '["a=1","hunter2"]' } }));
    expect(secret.message).toContain('found a value of 7 characters as item 2');
    expect(secret.message).not.toContain('hunter2');
  });

  it('reads the config file’s JSON array (or lone string); relative path items resolve against its folder', () => {
    const sub = join(dir, 'lists');
    mkdirSync(sub, { recursive: true });
    const config = join(sub, 'settings.json');
    writeFileSync(
      config,
      JSON.stringify({ hp: ['a=1', 'b=2'], plugin: ['rel/p.js', '/abs/q.js'], metric: 'accuracy' }),
    );
    const { settings } = resolveLists({ configFlag: config });
    expect(settings).toEqual({
      hp: ['a=1', 'b=2'],
      plugin: [join(sub, 'rel/p.js'), '/abs/q.js'],
      metric: ['accuracy'],
      colour: 'red',
    });
  });

  it('refuses wrong JSON types and invalid items in the config file, naming the key and the item', () => {
    const refuse = (content: string) =>
      caught(() => resolveLists({ configFlag: file(content) })).message;
    expect(refuse('{"hp": 3}')).toMatch(
      /: "hp" must be a JSON array of strings, found the number 3\. Write it as "hp": \["\.\.\."\], or remove the key\.$/,
    );
    expect(refuse('{"metric": ["loss", null]}')).toMatch(
      /: "metric" must be a JSON array of strings, found null as item 2\. Write it as "metric": \["loss"\], or remove the key\.$/,
    );
    expect(refuse('{"hp": ["a=1", "oops"]}')).toMatch(
      /: "hp" is invalid: expected name=value, found the string "oops" as item 2\. Fix it in the file, or remove the item\.$/,
    );
    expect(refuse('{"key": ["a=1", "hunter2"]}')).toMatch(
      /"key" is invalid: expected name=value, found an item of 7 characters as item 2/,
    );
    expect(refuse('{"key": [42]}')).toMatch(
      /"key" must be a JSON array of strings, found a number as item 1/,
    );
  });

  it('takes the whole list from the highest source that gives it', () => {
    const config = file(JSON.stringify({ hp: ['file=1', 'file=2'], metric: ['accuracy'] }));
    const env = { SHARDLINE_HP: '["env=1"]', SHARDLINE_METRIC: '[]' };
    const all = resolveLists({ flags: { hp: ['flag=1'] }, env, configFlag: config });
    expect(all.settings.hp).toEqual(['flag=1']);
    expect(sourceOf(all, 'hp')).toEqual({ kind: 'flag', flag: '--hp' });
    // An empty list from a higher source replaces the lower one's.
    expect(all.settings.metric).toEqual([]);
    expect(sourceOf(all, 'metric')).toEqual({ kind: 'env', variable: 'SHARDLINE_METRIC' });
    const noFlags = resolveLists({ env, configFlag: config });
    expect(noFlags.settings.hp).toEqual(['env=1']);
    const fileOnly = resolveLists({ configFlag: config });
    expect(fileOnly.settings.hp).toEqual(['file=1', 'file=2']);
    expect(fileOnly.settings.metric).toEqual(['accuracy']);
  });

  it('says in help that the flag is repeatable; --print-config and logs show lists as JSON, secrets redacted', () => {
    expect(optionHelp(LISTS[0])).toBe(
      'a hyperparameter (repeatable, env: SHARDLINE_HP, config: hp)',
    );
    expect(optionHelp(LISTS[1])).toBe(
      'a plugin to load (repeatable, env: SHARDLINE_PLUGIN, config: plugin)',
    );
    expect(optionHelp(LISTS[2])).toBe(
      'a metric to report (repeatable, choices: "loss", "accuracy", default: ["loss"], env: SHARDLINE_METRIC, config: metric)',
    );
    const resolved = resolveLists({
      flags: { hp: ['dropout=0.3', 'filters=32,64'] },
      env: { SHARDLINE_KEY: '["secret=do-not-print"]' },
    });
    const text = formatSettings(LIST_MODEL, resolved);
    expect(text).not.toContain('do-not-print');
    const rows = text
      .trim()
      .split('\n')
      .map((line) => line.split(/ {2,}/));
    expect(rows).toEqual([
      ['setting', 'value', 'source'],
      ['config', '(none)', 'not set'],
      ['hp', '["dropout=0.3", "filters=32,64"]', 'flag --hp'],
      ['plugin', '[]', 'default'],
      ['metric', '["loss"]', 'default'],
      ['key', '<redacted>', 'env SHARDLINE_KEY'],
      ['colour', 'red', 'default'],
    ]);
    expect(settingsLogFields(LIST_MODEL, resolved)).toMatchObject({
      hp: '["dropout=0.3", "filters=32,64"] (flag --hp)',
      key: '<redacted> (env SHARDLINE_KEY)',
    });
    expect(displayValue(LISTS[0], ['a=1', 'b=2'])).toBe('["a=1", "b=2"]');
  });
});
