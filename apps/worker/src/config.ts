/**
 * The worker's settings: one table lists every setting with its flag, argument, description,
 * parser and default; @shardline/core/settings derives the rest (the environment variable, the
 * config-file key, the resolved settings' type) and merges the four sources in one order of
 * precedence:
 *
 *     command-line flags  >  environment variables  >  the config file  >  built-in defaults
 *
 * Names follow one rule, so deployment files can be checked against the CLI: the environment
 * variable is `SHARDLINE_` + the flag's name in upper snake case (`--data-dir` ->
 * `SHARDLINE_DATA_DIR`, `--no-download` -> `SHARDLINE_NO_DOWNLOAD`), and the config-file key is
 * the flag's name in camelCase (`dataDir`, `noDownload`).
 */
import { hostname } from 'node:os';
import { BackendNames, LogLevels, ShardlineError } from '@shardline/core';
import {
  defineSettings,
  Expectation,
  type FlagValues,
  formatSettings,
  nonEmpty,
  oneOf,
  parseSwitch,
  type ResolvedSettings,
  readConfigFile as readSettingsFile,
  resolveSettings,
  type SettingKeyOf,
  type SettingsOf,
  setting,
  settingsEnvVariables,
} from '@shardline/core/settings';
import { TOKEN_FILE_FORM } from '@shardline/protocol';

// Generic parts, from @shardline/core/settings; exported here too, as before they moved there.
export {
  CONFIG_ENV,
  CONFIG_FLAG,
  configKeyFor,
  describeSource,
  displayValue,
  Expectation,
  envVariableFor,
  parseSwitch,
  type ResolvedSetting,
  type SettingSource,
  type SettingSpec,
  type SettingType,
} from '@shardline/core/settings';

const BACKEND_CHOICES = ['auto', ...BackendNames] as const;
const LOG_FORMATS = ['text', 'json'] as const;

function address(value: string): string {
  if (!/^[^\s:]+:\d{1,5}$/.test(value) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(value)) {
    throw new Expectation('expected host:port, such as 127.0.0.1:7070 or coordinator.example:7070');
  }
  return value;
}

/** `--peer-listen`: `auto`, `off`, or an address to bind (port 0: any free port). */
function peerListen(value: string): string {
  if (value === 'auto' || value === 'off') return value;
  try {
    return address(value);
  } catch {
    throw new Expectation(
      'expected auto, off, or host:port to listen on, such as 0.0.0.0:7071 or 10.0.0.17:0 (port 0: any free port)',
    );
  }
}

/** `--peer-advertise`: an address others can dial, so its port cannot be 0. */
function peerAdvertise(value: string): string {
  try {
    address(value);
  } catch {
    throw new Expectation(
      'expected the host:port other workers dial to reach this one, such as 203.0.113.7:7071',
    );
  }
  const port = Number(value.slice(value.lastIndexOf(':') + 1));
  if (port < 1 || port > 65535) {
    throw new Expectation(
      'expected a port from 1 to 65535: others dial this address, so it needs the real port (set --peer-listen to a fixed port too)',
    );
  }
  return value;
}

/** `--metrics-listen`: an address to bind (port 0: any free port). */
function metricsListen(value: string): string {
  try {
    address(value);
  } catch {
    throw new Expectation(
      'expected host:port to serve /metrics on, such as 127.0.0.1:9464 or 0.0.0.0:9464 (port 0: any free port)',
    );
  }
  if (Number(value.slice(value.lastIndexOf(':') + 1)) > 65535) {
    throw new Expectation('expected a port from 0 to 65535');
  }
  return value;
}

function seconds(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0)
    throw new Expectation('expected a number of seconds greater than 0');
  return n;
}

/** The worker's settings, in the order help and --print-config show them. */
export const WORKER_SETTINGS = [
  setting({
    flag: '--coordinator',
    argument: '<host:port>',
    description: 'the coordinator to join (required to run)',
    type: 'string',
    parse: address,
  }),
  setting({
    flag: '--name',
    argument: '<name>',
    description: "how this worker appears in logs and in the coordinator's events",
    type: 'string',
    defaultValue: () => `${hostname()}-${process.pid}`,
    defaultDescription: '<hostname>-<pid>',
    parse: nonEmpty('a name'),
  }),
  setting({
    flag: '--backend',
    argument: '<name>',
    description: 'compute backend; auto takes the first that works here',
    type: 'string',
    choices: BACKEND_CHOICES,
    defaultValue: () => 'auto',
    parse: oneOf(BACKEND_CHOICES),
  }),
  setting({
    flag: '--data-dir',
    argument: '<dir>',
    description: 'folder holding the dataset files',
    type: 'string',
    path: true,
    parse: nonEmpty('a folder'),
  }),
  setting({
    flag: '--no-download',
    description: 'never download the dataset; fail when no local copy exists',
    type: 'boolean',
    defaultValue: () => false,
    parse: parseSwitch,
  }),
  setting({
    flag: '--no-fetch-data',
    description:
      "never fetch an image-folder dataset from the coordinator; fail when this machine has no copy (in the cache, at the coordinator's path or under --data-dir)",
    type: 'boolean',
    defaultValue: () => false,
    parse: parseSwitch,
  }),
  setting({
    flag: '--plugin',
    argument: '<module>',
    description:
      'an ES module registering custom layer classes, loaded before joining; a job whose model needs one refuses a worker without the same file',
    type: 'list',
    path: true,
    defaultValue: () => [],
    parse: nonEmpty('a module path'),
  }),
  setting({
    flag: '--connect-timeout',
    argument: '<seconds>',
    description: 'how long to keep trying to reach the coordinator',
    type: 'number',
    defaultValue: () => 60,
    parse: seconds,
  }),
  setting({
    flag: '--peer-listen',
    argument: '<host:port>',
    description:
      'where the peer endpoint for ring mode listens; auto: an ephemeral port on the address this worker reaches the coordinator from (127.0.0.1 for a coordinator on loopback); off: none (as --no-peer). With TLS it serves mutual TLS with --tls-cert, --tls-key and --tls-ca (the certificate must allow serverAuth and clientAuth and list the advertised host), and none without them',
    type: 'string',
    defaultValue: () => 'auto',
    parse: peerListen,
  }),
  setting({
    flag: '--peer-advertise',
    argument: '<host:port>',
    description:
      'the address other workers dial to reach the peer endpoint, behind NAT or in containers (default: the listen address, or the address that reaches the coordinator when listening on a wildcard, with the bound port)',
    type: 'string',
    parse: peerAdvertise,
  }),
  setting({
    flag: '--no-peer',
    description:
      'serve no peer endpoint: the worker joins without ring mode (a ring-mode job refuses it)',
    type: 'boolean',
    defaultValue: () => false,
    parse: parseSwitch,
  }),
  setting({
    flag: '--metrics-listen',
    argument: '<host:port>',
    description:
      'serve Prometheus metrics at http://<host:port>/metrics (off unless given); beyond loopback every scrape needs the token, as "Authorization: Bearer <token>"',
    type: 'string',
    parse: metricsListen,
  }),
  setting({
    flag: '--log-format',
    argument: '<format>',
    description: 'log format on stderr',
    type: 'string',
    choices: LOG_FORMATS,
    defaultValue: () => 'text',
    parse: oneOf(LOG_FORMATS),
  }),
  setting({
    flag: '--log-level',
    argument: '<level>',
    description: 'log level',
    type: 'string',
    choices: LogLevels,
    defaultValue: () => 'info',
    parse: oneOf(LogLevels),
  }),
  setting({
    flag: '--token',
    argument: '<token>',
    description:
      "the coordinator's shared secret, sent on every call (prefer the env variable or --token-file: flags show in `ps`)",
    type: 'string',
    secret: true,
    parse: (value) => value,
  }),
  setting({
    flag: '--token-file',
    argument: '<file>',
    description: 'read the token from this file, such as a mounted Kubernetes Secret',
    type: 'string',
    path: true,
    parse: nonEmpty('a file'),
  }),
  setting({
    flag: '--tls',
    description: 'connect with TLS, verifying the coordinator against the system roots',
    type: 'boolean',
    defaultValue: () => false,
    parse: parseSwitch,
  }),
  setting({
    flag: '--tls-ca',
    argument: '<pem>',
    description: "verify the coordinator's certificate against this CA file (implies --tls)",
    type: 'string',
    path: true,
    parse: nonEmpty('a PEM file'),
  }),
  setting({
    flag: '--tls-cert',
    argument: '<pem>',
    description: 'client certificate for mutual TLS (implies --tls)',
    type: 'string',
    path: true,
    parse: nonEmpty('a PEM file'),
  }),
  setting({
    flag: '--tls-key',
    argument: '<pem>',
    description: "the client certificate's private key (unencrypted PEM)",
    type: 'string',
    path: true,
    parse: nonEmpty('a PEM file'),
  }),
  setting({
    flag: '--tls-server-name',
    argument: '<name>',
    description:
      "name to check the coordinator's certificate against, when dialling an address it does not list",
    type: 'string',
    parse: nonEmpty('a DNS name'),
  }),
] as const;

/**
 * The worker's settings model: its table, what messages about its config file say, and the
 * token's two forms (`--token`, `--token-file`).
 */
export const WORKER_SETTINGS_MODEL = defineSettings({
  settings: WORKER_SETTINGS,
  subject: 'worker',
  example: '{"coordinator": "10.0.0.5:7070"}',
  fileForms: [TOKEN_FILE_FORM],
});

/**
 * Every setting a worker reads, after merging, typed from {@link WORKER_SETTINGS}; absent where
 * nothing set it. `coordinator` is required to run, but optional for `doctor` and
 * --print-config; `token` is the shared secret, given directly or read from `tokenFile`.
 */
export type WorkerSettings = SettingsOf<typeof WORKER_SETTINGS>;

/** A key of {@link WorkerSettings}: also the setting's config-file key. */
export type SettingKey = SettingKeyOf<typeof WORKER_SETTINGS>;

/**
 * Every environment variable the worker reads its settings from, SHARDLINE_CONFIG included. A
 * program that starts workers with settings of its own (the coordinator's local workers) can
 * unset the rest, so that variables meant for another worker on the machine cannot interfere.
 */
export const WORKER_ENV_VARIABLES: readonly string[] = settingsEnvVariables(WORKER_SETTINGS_MODEL);

/** The merged configuration. */
export type ResolvedWorkerConfig = ResolvedSettings<typeof WORKER_SETTINGS>;

/** What {@link resolveWorkerConfig} merges. */
export interface WorkerConfigInput {
  /** Values given on the command line, already checked (commander parsed them). */
  flags: FlagValues<typeof WORKER_SETTINGS>;
  /** The --config flag's value, if given. */
  configFlag?: string;
  /** The environment (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** The folder relative --config / SHARDLINE_CONFIG paths resolve against (default: cwd). */
  cwd?: string;
}

/** The keys a config file may hold: every setting. */
export const CONFIG_FILE_KEYS: readonly string[] = WORKER_SETTINGS.map((s) => s.key);

/**
 * Reads and checks a worker config file: a JSON object whose keys are settings in camelCase.
 * Unknown keys, wrong JSON types and invalid values are refused with the file, the key, what was
 * expected, what was found and what to do. Relative paths resolve against the file's folder.
 *
 * @param path absolute path of the file
 * @param namedBy how the file was named, for messages (`--config`, `SHARDLINE_CONFIG`)
 */
export function readConfigFile(path: string, namedBy: string): FlagValues<typeof WORKER_SETTINGS> {
  return readSettingsFile(WORKER_SETTINGS_MODEL, path, namedBy);
}

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
  return resolveSettings(WORKER_SETTINGS_MODEL, input);
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
  return formatSettings(WORKER_SETTINGS_MODEL, config);
}
