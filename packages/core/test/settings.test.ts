/**
 * The generic settings resolver with a small table of its own: names derived from the flag,
 * types inferred from the table, one order of precedence (flag > environment > config file >
 * default), the same parser and the same kind of message for every source, config files (real
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
