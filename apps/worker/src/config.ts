/**
 * The worker's settings and where each comes from. One table lists every setting with its
 * flag, environment variable, config-file key and default; one function merges the four
 * sources in one order of precedence:
 *
 *     command-line flags  >  environment variables  >  the config file  >  built-in defaults
 *
 * Names follow one rule, so deployment files can be checked against the CLI: the environment
 * variable is `SHARDLINE_` + the flag's name in upper snake case (`--data-dir` ->
 * `SHARDLINE_DATA_DIR`, `--no-download` -> `SHARDLINE_NO_DOWNLOAD`), and the config-file key is
 * the flag's name in camelCase (`dataDir`, `noDownload`).
 */
import { readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import {
  BackendNames,
  type BackendPreference,
  type LogLevel,
  LogLevels,
  ShardlineError,
} from '@shardline/core';
import { checkToken, readTokenFile } from '@shardline/protocol';

/** Every setting a worker reads, after merging; `undefined` where nothing set it. */
export interface WorkerSettings {
  /** host:port of the coordinator (required to run; optional for `doctor` and --print-config). */
  coordinator?: string;
  name: string;
  backend: BackendPreference;
  dataDir?: string;
  /** Never download the dataset. */
  noDownload: boolean;
  /** Seconds to keep trying to reach the coordinator. */
  connectTimeout: number;
  logFormat: 'text' | 'json';
  logLevel: LogLevel;
  /** The shared secret, given directly or read from {@link WorkerSettings.tokenFile}. */
  token?: string;
  tokenFile?: string;
  tls: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
}

/** A key of {@link WorkerSettings}: also the setting's config-file key. */
export type SettingKey = keyof WorkerSettings;

/** The JSON type a setting takes in the config file. */
export type SettingType = 'string' | 'number' | 'boolean';

/** One row of the settings table. */
export interface SettingSpec {
  /** The config-file key: the flag's name in camelCase. */
  readonly key: SettingKey;
  /** The long flag, such as `--data-dir` (a switch that turns something off is `--no-x`). */
  readonly flag: `--${string}`;
  /** The flag's argument for help, such as `<dir>`; absent for switches. */
  readonly argument?: string;
  readonly description: string;
  /** Its JSON type in the config file. */
  readonly type: SettingType;
  /** The allowed values, for settings that take one of a list. */
  readonly choices?: readonly string[];
  /** A file or folder: relative values in the config file resolve against the file's folder. */
  readonly path?: boolean;
  /** Never printed: --print-config and doctor show `<redacted>`. */
  readonly secret?: boolean;
  /** The built-in default, if any. */
  readonly defaultValue?: () => string | number | boolean;
  /** How help shows the default, when it is computed (such as `<hostname>-<pid>`). */
  readonly defaultDescription?: string;
  /**
   * Checks and converts a text value (a flag's argument or an environment variable). Throws an
   * {@link Expectation} saying what a valid value looks like.
   */
  readonly parse: (text: string) => string | number | boolean;
}

/** Thrown by a setting's parser: its message says what a valid value looks like. */
export class Expectation extends Error {
  override name = 'Expectation';
}

/** The environment variable of a flag: `SHARDLINE_` + its name in upper snake case. */
export function envVariableFor(flag: string): string {
  return `SHARDLINE_${flag.replace(/^--/, '').toUpperCase().replace(/-/g, '_')}`;
}

/** The config-file key of a flag: its name in camelCase (`--data-dir` -> `dataDir`). */
export function configKeyFor(flag: string): string {
  return flag.replace(/^--/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Environment values a switch accepts (case-insensitive); anything else is refused. */
const TRUE_WORDS = ['1', 'true', 'yes', 'on'];
const FALSE_WORDS = ['0', 'false', 'no', 'off'];

function text(what: string): (value: string) => string {
  return (value) => {
    if (value.trim() === '') throw new Expectation(`expected ${what}, not an empty value`);
    return value;
  };
}

function oneOf(choices: readonly string[]): (value: string) => string {
  return (value) => {
    if (!choices.includes(value)) throw new Expectation(`expected one of ${choices.join(', ')}`);
    return value;
  };
}

function address(value: string): string {
  if (!/^[^\s:]+:\d{1,5}$/.test(value) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(value)) {
    throw new Expectation('expected host:port, such as 127.0.0.1:7070 or coordinator.example:7070');
  }
  return value;
}

function seconds(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0)
    throw new Expectation('expected a number of seconds greater than 0');
  return n;
}

/** Parses a switch's environment value: 1/true/yes/on or 0/false/no/off. */
export function parseSwitch(value: string): boolean {
  const word = value.trim().toLowerCase();
  if (TRUE_WORDS.includes(word)) return true;
  if (FALSE_WORDS.includes(word)) return false;
  throw new Expectation(
    `expected ${TRUE_WORDS.join(', ')} to turn it on, or ${FALSE_WORDS.join(', ')} to turn it off`,
  );
}

/** The worker's settings, in the order help and --print-config show them. */
export const WORKER_SETTINGS: readonly SettingSpec[] = [
  {
    key: 'coordinator',
    flag: '--coordinator',
    argument: '<host:port>',
    description: 'the coordinator to join (required to run)',
    type: 'string',
    parse: address,
  },
  {
    key: 'name',
    flag: '--name',
    argument: '<name>',
    description: "how this worker appears in logs and in the coordinator's events",
    type: 'string',
    defaultValue: () => `${hostname()}-${process.pid}`,
    defaultDescription: '<hostname>-<pid>',
    parse: text('a name'),
  },
  {
    key: 'backend',
    flag: '--backend',
    argument: '<name>',
    description: 'compute backend; auto takes the first that works here',
    type: 'string',
    choices: ['auto', ...BackendNames],
    defaultValue: () => 'auto',
    parse: oneOf(['auto', ...BackendNames]),
  },
  {
    key: 'dataDir',
    flag: '--data-dir',
    argument: '<dir>',
    description: 'folder holding the dataset files',
    type: 'string',
    path: true,
    parse: text('a folder'),
  },
  {
    key: 'noDownload',
    flag: '--no-download',
    description: 'never download the dataset; fail when no local copy exists',
    type: 'boolean',
    defaultValue: () => false,
    parse: parseSwitch,
  },
  {
    key: 'connectTimeout',
    flag: '--connect-timeout',
    argument: '<seconds>',
    description: 'how long to keep trying to reach the coordinator',
    type: 'number',
    defaultValue: () => 60,
    parse: seconds,
  },
  {
    key: 'logFormat',
    flag: '--log-format',
    argument: '<format>',
    description: 'log format on stderr',
    type: 'string',
    choices: ['text', 'json'],
    defaultValue: () => 'text',
    parse: oneOf(['text', 'json']),
  },
  {
    key: 'logLevel',
    flag: '--log-level',
    argument: '<level>',
    description: 'log level',
    type: 'string',
    choices: LogLevels,
    defaultValue: () => 'info',
    parse: oneOf(LogLevels),
  },
  {
    key: 'token',
    flag: '--token',
    argument: '<token>',
    description:
      "the coordinator's shared secret, sent on every call (prefer the env variable or --token-file: flags show in `ps`)",
    type: 'string',
    secret: true,
    parse: (value) => value,
  },
  {
    key: 'tokenFile',
    flag: '--token-file',
    argument: '<file>',
    description: 'read the token from this file, such as a mounted Kubernetes Secret',
    type: 'string',
    path: true,
    parse: text('a file'),
  },
  {
    key: 'tls',
    flag: '--tls',
    description: 'connect with TLS, verifying the coordinator against the system roots',
    type: 'boolean',
    defaultValue: () => false,
    parse: parseSwitch,
  },
  {
    key: 'tlsCa',
    flag: '--tls-ca',
    argument: '<pem>',
    description: "verify the coordinator's certificate against this CA file (implies --tls)",
    type: 'string',
    path: true,
    parse: text('a PEM file'),
  },
  {
    key: 'tlsCert',
    flag: '--tls-cert',
    argument: '<pem>',
    description: 'client certificate for mutual TLS (implies --tls)',
    type: 'string',
    path: true,
    parse: text('a PEM file'),
  },
  {
    key: 'tlsKey',
    flag: '--tls-key',
    argument: '<pem>',
    description: "the client certificate's private key (unencrypted PEM)",
    type: 'string',
    path: true,
    parse: text('a PEM file'),
  },
  {
    key: 'tlsServerName',
    flag: '--tls-server-name',
    argument: '<name>',
    description:
      "name to check the coordinator's certificate against, when dialling an address it does not list",
    type: 'string',
    parse: text('a DNS name'),
  },
];

/** The flag that names the config file; it has an environment variable but no key in the file. */
export const CONFIG_FLAG = '--config';
/** `SHARDLINE_CONFIG`. */
export const CONFIG_ENV = envVariableFor(CONFIG_FLAG);

/**
 * Every environment variable the worker reads its settings from, SHARDLINE_CONFIG included. A
 * program that starts workers with settings of its own (the coordinator's local workers) can
 * unset the rest, so that variables meant for another worker on the machine cannot interfere.
 */
export const WORKER_ENV_VARIABLES: readonly string[] = [
  ...WORKER_SETTINGS.map((s) => envVariableFor(s.flag)),
  CONFIG_ENV,
];

/** Where a setting's value came from. */
export type SettingSource =
  | { kind: 'flag'; flag: string }
  | { kind: 'env'; variable: string }
  | { kind: 'file'; path: string }
  | { kind: 'default' }
  | { kind: 'unset' };

/** One setting after merging, for --print-config. */
export interface ResolvedSetting {
  key: SettingKey;
  /** The value (undefined when unset); secrets too: redact with {@link displayValue}. */
  value: string | number | boolean | undefined;
  source: SettingSource;
  /** Set when a higher-precedence form of the same setting won (a token file beside a token). */
  ignored?: true;
  /** How the value was obtained or why it is ignored, for --print-config. */
  note?: string;
}

/** The merged configuration. */
export interface ResolvedWorkerConfig {
  settings: WorkerSettings;
  /** Every setting in table order, with its source. */
  entries: ResolvedSetting[];
  /** The config file read, if any, and what named it. */
  configFile?: { path: string; source: SettingSource };
}

/** What {@link resolveWorkerConfig} merges. */
export interface WorkerConfigInput {
  /** Values given on the command line, already checked (commander parsed them). */
  flags: Partial<Record<SettingKey, string | number | boolean>>;
  /** The --config flag's value, if given. */
  configFlag?: string;
  /** The environment (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** The folder relative --config / SHARDLINE_CONFIG paths resolve against (default: cwd). */
  cwd?: string;
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
    case 'default':
      return 'default';
    case 'unset':
      return 'not set';
  }
}

/** A value as --print-config shows it: secrets as `<redacted>`, unset as `(not set)`. */
export function displayValue(spec: SettingSpec, value: unknown): string {
  if (value === undefined) return '(not set)';
  if (spec.secret) return '<redacted>';
  return String(value);
}

function describeJson(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  return `the ${typeof value} ${JSON.stringify(value)}`;
}

function suggest(key: string, candidates: readonly string[]): string | undefined {
  // Levenshtein distance: a misspelt key ("datadir", "tlsCA") is usually one or two edits away.
  const distance = (a: string, b: string): number => {
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
  };
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

/** The keys a config file may hold: every setting. */
export const CONFIG_FILE_KEYS: readonly string[] = WORKER_SETTINGS.map((s) => s.key);

/**
 * Reads and checks a config file: a JSON object whose keys are settings in camelCase. Unknown
 * keys, wrong JSON types and invalid values are refused with the file, the key, what was
 * expected, what was found and what to do. Relative paths resolve against the file's folder.
 *
 * @param path absolute path of the file
 * @param namedBy how the file was named, for messages (`--config`, `SHARDLINE_CONFIG`)
 */
export function readConfigFile(
  path: string,
  namedBy: string,
): Partial<Record<SettingKey, string | number | boolean>> {
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
    if (error instanceof ShardlineError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new ShardlineError(
        'NOT_FOUND',
        `The config file ${path} (from ${namedBy}) does not exist: expected a JSON file of worker settings. Fix the path, or unset ${namedBy} to run without one.`,
        { cause: error },
      );
    }
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The config file ${path} (from ${namedBy}) cannot be read (${code ?? (error as Error).message}): expected a file this user can read. Check its permissions.`,
      { cause: error },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (error) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The config file ${path} is not valid JSON (${(error as Error).message}): expected one JSON object such as {"coordinator": "10.0.0.5:7070"}. Fix the syntax (JSON allows no comments or trailing commas).`,
      { cause: error },
    );
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The config file ${path} holds ${describeJson(parsed)}: expected one JSON object of settings, such as {"coordinator": "10.0.0.5:7070"}.`,
    );
  }
  const values: Partial<Record<SettingKey, string | number | boolean>> = {};
  const folder = dirname(path);
  for (const [key, value] of Object.entries(parsed)) {
    const spec = WORKER_SETTINGS.find((s) => s.key === key);
    if (spec === undefined) {
      const close = suggest(key, CONFIG_FILE_KEYS);
      const what =
        key === 'config'
          ? 'A config file cannot name another one: remove it.'
          : close
            ? `Did you mean "${close}"? Rename or remove it.`
            : 'Rename or remove it.';
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `The config file ${path} has an unknown key "${key}": expected one of ${CONFIG_FILE_KEYS.join(', ')}. ${what}`,
      );
    }
    const where = `The config file ${path}: "${key}"`;
    if (typeof value !== spec.type) {
      const example =
        spec.type === 'number'
          ? '60'
          : spec.type === 'boolean'
            ? 'true'
            : JSON.stringify(spec.choices?.[0] ?? '...');
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${where} must be a JSON ${spec.type}, found ${describeJson(value)}. Write it as "${key}": ${example}, or remove the key.`,
      );
    }
    let checked: string | number | boolean;
    try {
      // Booleans need no check beyond their type; strings and numbers go through the same
      // parser as flags and environment variables, so every source accepts the same values.
      checked = spec.type === 'boolean' ? (value as boolean) : spec.parse(String(value));
    } catch (error) {
      if (!(error instanceof Expectation)) throw error;
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `${where} is invalid: ${error.message}, found ${describeJson(value)}. Fix it in the file, or remove the key.`,
      );
    }
    values[spec.key] = spec.path ? resolve(folder, checked as string) : checked;
  }
  return values;
}

/** The value of a set, non-empty environment variable (empty means unset, as in many tools). */
function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

function envSetting(
  spec: SettingSpec,
  env: NodeJS.ProcessEnv,
): string | number | boolean | undefined {
  const variable = envVariableFor(spec.flag);
  const raw = envValue(env, variable);
  if (raw === undefined) return undefined;
  try {
    return spec.parse(raw);
  } catch (error) {
    if (!(error instanceof Expectation)) throw error;
    const shown = spec.secret ? `a value of ${raw.length} characters` : JSON.stringify(raw);
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `The environment variable ${variable} is invalid: ${error.message}, found ${shown}. Fix or unset it (or override it with ${spec.flag}).`,
    );
  }
}

const RANK: Record<SettingSource['kind'], number> = {
  flag: 4,
  env: 3,
  file: 2,
  default: 1,
  unset: 0,
};

/**
 * Merges flags, environment variables, the config file and defaults (in that order of
 * precedence) into the worker's settings, and reads the token file. Throws INVALID_ARGUMENT /
 * NOT_FOUND naming the variable or file, what was expected and what was found. Does not require
 * --coordinator (see {@link requireCoordinator}): --print-config and doctor run without one.
 *
 * @example
 * ```ts
 * const { settings, entries } = resolveWorkerConfig({ flags: { name: 'a' }, env: process.env });
 * ```
 */
export function resolveWorkerConfig(input: WorkerConfigInput): ResolvedWorkerConfig {
  const env = input.env ?? process.env;
  const cwd = input.cwd ?? process.cwd();
  let configFile: ResolvedWorkerConfig['configFile'];
  const configEnv = envValue(env, CONFIG_ENV);
  if (input.configFlag !== undefined) {
    configFile = {
      path: resolve(cwd, input.configFlag),
      source: { kind: 'flag', flag: CONFIG_FLAG },
    };
  } else if (configEnv !== undefined) {
    configFile = { path: resolve(cwd, configEnv), source: { kind: 'env', variable: CONFIG_ENV } };
  }
  const fromFile = configFile
    ? readConfigFile(configFile.path, configFile.source.kind === 'flag' ? CONFIG_FLAG : CONFIG_ENV)
    : {};

  const entries = new Map<SettingKey, ResolvedSetting>();
  for (const spec of WORKER_SETTINGS) {
    const fromFlag = input.flags[spec.key];
    const fromEnv = envSetting(spec, env);
    const fileValue = fromFile[spec.key];
    let entry: ResolvedSetting;
    if (fromFlag !== undefined) {
      entry = { key: spec.key, value: fromFlag, source: { kind: 'flag', flag: spec.flag } };
    } else if (fromEnv !== undefined) {
      entry = {
        key: spec.key,
        value: fromEnv,
        source: { kind: 'env', variable: envVariableFor(spec.flag) },
      };
    } else if (fileValue !== undefined && configFile) {
      entry = { key: spec.key, value: fileValue, source: { kind: 'file', path: configFile.path } };
    } else if (spec.defaultValue) {
      entry = { key: spec.key, value: spec.defaultValue(), source: { kind: 'default' } };
    } else {
      entry = { key: spec.key, value: undefined, source: { kind: 'unset' } };
    }
    entries.set(spec.key, entry);
  }

  resolveToken(entries);

  const settings = Object.fromEntries(
    [...entries.values()]
      .filter((e) => e.value !== undefined && !e.ignored)
      .map((e) => [e.key, e.value]),
  ) as unknown as WorkerSettings;
  return {
    settings,
    entries: [...entries.values()],
    ...(configFile ? { configFile } : {}),
  };
}

/**
 * The token and the token file are two forms of one setting: the one from the higher-precedence
 * source wins (a --token flag overrides a tokenFile in the config file); both from the same
 * source is ambiguous and refused. The winning token file is read here, so a bad one stops the
 * worker (and --print-config) before anything else happens.
 */
function resolveToken(entries: Map<SettingKey, ResolvedSetting>): void {
  const token = entries.get('token')!;
  const file = entries.get('tokenFile')!;
  if (token.value !== undefined && file.value !== undefined) {
    if (RANK[token.source.kind] === RANK[file.source.kind]) {
      throw new ShardlineError(
        'INVALID_ARGUMENT',
        `Both a token and a token file are set (${describeSource(token.source)} and ${describeSource(file.source)}): expected one of them. Keep --token / SHARDLINE_TOKEN or --token-file / SHARDLINE_TOKEN_FILE, not both.`,
      );
    }
    const loser = RANK[token.source.kind] > RANK[file.source.kind] ? file : token;
    const winner = loser === file ? token : file;
    loser.ignored = true;
    loser.note = `ignored: ${describeSource(winner.source)} takes precedence`;
  }
  if (file.value !== undefined && !file.ignored) {
    const namedBy =
      file.source.kind === 'file'
        ? `"tokenFile" in ${file.source.path}`
        : file.source.kind === 'env'
          ? file.source.variable
          : '--token-file';
    token.value = readTokenFile(String(file.value), namedBy);
    token.source = file.source;
    delete token.ignored;
    token.note = `read from ${file.value}`;
  } else if (typeof token.value === 'string') {
    const label =
      token.source.kind === 'file'
        ? `"token" in the config file ${token.source.path}`
        : '--token / SHARDLINE_TOKEN';
    checkToken(token.value, label);
  }
}

/**
 * The coordinator's address, or an INVALID_ARGUMENT error naming the three ways to set it.
 */
export function requireCoordinator(config: ResolvedWorkerConfig): string {
  const coordinator = config.settings.coordinator;
  if (coordinator !== undefined) return coordinator;
  const file = config.configFile
    ? `"coordinator" in the config file (${config.configFile.path} has none)`
    : '"coordinator" in a config file (--config / SHARDLINE_CONFIG)';
  throw new ShardlineError(
    'INVALID_ARGUMENT',
    `No coordinator given: expected its host:port from the --coordinator flag, the SHARDLINE_COORDINATOR environment variable or ${file}; found none of them. Set one, such as --coordinator 10.0.0.5:7070.`,
  );
}

/**
 * The merged settings as a table for `--print-config`: each setting, its value (secrets
 * redacted) and where it came from.
 */
export function formatConfig(config: ResolvedWorkerConfig): string {
  const rows: string[][] = [['setting', 'value', 'source']];
  rows.push([
    'config',
    config.configFile?.path ?? '(none)',
    config.configFile ? describeSource(config.configFile.source) : 'not set',
  ]);
  for (const entry of config.entries) {
    const spec = WORKER_SETTINGS.find((s) => s.key === entry.key)!;
    const source = describeSource(entry.source) + (entry.note ? ` (${entry.note})` : '');
    rows.push([entry.key, displayValue(spec, entry.value), source]);
  }
  const widths = [0, 1].map((c) => Math.max(...rows.map((r) => r[c]!.length)));
  return `${rows
    .map((r) => `${r[0]!.padEnd(widths[0]!)}  ${r[1]!.padEnd(widths[1]!)}  ${r[2]}`.trimEnd())
    .join('\n')}\n`;
}
