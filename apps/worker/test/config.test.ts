/**
 * The worker's settings through the real CLI (`runWorkerCli`, as `shardline-worker` runs it):
 * one order of precedence (flag > environment > config file > default) for every setting, the
 * SHARDLINE_* variable of every flag, config-file and token-file errors, and secrets that never
 * reach the output. Files are real files in a temporary folder; the environment is passed in,
 * so tests never touch this process's.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Option } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { envVariableFor, WORKER_ENV_VARIABLES, WORKER_SETTINGS } from '../src/config.js';
import { createWorkerProgram, runWorkerCli } from '../src/program.js';

const dir = mkdtempSync(join(tmpdir(), 'shardline-worker-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function file(content: string, name = `f${++files}`): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

async function run(args: string[], env: NodeJS.ProcessEnv = {}, cwd = dir) {
  let stdout = '';
  let stderr = '';
  const code = await runWorkerCli(
    ['node', 'shardline-worker', ...args],
    {
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) },
    },
    { env, cwd },
  );
  return { code, stdout, stderr };
}

/** --print-config's table as { key: { value, source } }. */
function table(stdout: string): Record<string, { value: string; source: string }> {
  const rows: Record<string, { value: string; source: string }> = {};
  for (const line of stdout.trim().split('\n').slice(1)) {
    const [key, value, source] = line.split(/ {2,}/);
    rows[key!] = { value: value!, source: source ?? '' };
  }
  return rows;
}

async function printConfig(args: string[], env: NodeJS.ProcessEnv = {}) {
  const result = await run([...args, '--print-config'], env);
  return { ...result, rows: table(result.stdout) };
}

const TOKENS = [
  'flag-token-0123456789abcdef',
  'env-token-0123456789abcdef',
  'file-token-0123456789abcdef',
];
const tokenFiles = TOKENS.map((t, i) => file(`${t}\n`, `token-${i}`));

/**
 * Three valid values per flag (for the flag, the environment and the config file) and the
 * value --print-config shows for each. A new flag without an entry here fails the tests below.
 */
const SAMPLES: Record<string, Array<{ text: string; json: unknown; shown: string }>> = {
  '--coordinator': ['flag.example:1', 'env.example:2', 'file.example:3'].map((v) => ({
    text: v,
    json: v,
    shown: v,
  })),
  '--name': ['from-flag', 'from-env', 'from-file'].map((v) => ({ text: v, json: v, shown: v })),
  '--backend': ['cpu', 'wasm', 'tensorflow'].map((v) => ({ text: v, json: v, shown: v })),
  '--data-dir': ['/flag/data', '/env/data', '/file/data'].map((v) => ({
    text: v,
    json: v,
    shown: v,
  })),
  '--no-download': [
    { text: '', json: true, shown: 'true' },
    { text: 'false', json: true, shown: 'false' },
    { text: '', json: true, shown: 'true' },
  ],
  '--no-fetch-data': [
    { text: '', json: true, shown: 'true' },
    { text: 'false', json: true, shown: 'false' },
    { text: '', json: true, shown: 'true' },
  ],
  // A list: one item per flag, a lone item (or a JSON array) in the variable, an array in the file.
  '--plugin': ['/flag/p.mjs', '/env/p.mjs', '/file/p.mjs'].map((v, i) => ({
    text: v,
    json: i === 2 ? [v] : v,
    shown: JSON.stringify([v]),
  })),
  '--connect-timeout': [1.5, 2, 3].map((v) => ({ text: String(v), json: v, shown: String(v) })),
  '--peer-listen': ['0.0.0.0:7071', '10.0.0.17:0', 'off'].map((v) => ({
    text: v,
    json: v,
    shown: v,
  })),
  '--peer-advertise': ['203.0.113.7:7071', 'worker-1.example:7071', '[2001:db8::7]:7071'].map(
    (v) => ({ text: v, json: v, shown: v }),
  ),
  '--no-peer': [
    { text: '', json: true, shown: 'true' },
    { text: 'false', json: true, shown: 'false' },
    { text: '', json: true, shown: 'true' },
  ],
  '--metrics-listen': ['127.0.0.1:9464', '0.0.0.0:0', '[::1]:9465'].map((v) => ({
    text: v,
    json: v,
    shown: v,
  })),
  '--log-format': ['json', 'text', 'json'].map((v) => ({ text: v, json: v, shown: v })),
  '--log-level': ['debug', 'warn', 'error'].map((v) => ({ text: v, json: v, shown: v })),
  '--token': TOKENS.map((v) => ({ text: v, json: v, shown: '<redacted>' })),
  '--token-file': tokenFiles.map((v) => ({ text: v, json: v, shown: v })),
  '--tls': [
    { text: '', json: false, shown: 'true' },
    { text: 'off', json: true, shown: 'false' },
    { text: '', json: true, shown: 'true' },
  ],
  '--tls-ca': ['/flag/ca.pem', '/env/ca.pem', '/file/ca.pem'].map((v) => ({
    text: v,
    json: v,
    shown: v,
  })),
  '--tls-cert': ['/flag/c.pem', '/env/c.pem', '/file/c.pem'].map((v) => ({
    text: v,
    json: v,
    shown: v,
  })),
  '--tls-key': ['/flag/k.pem', '/env/k.pem', '/file/k.pem'].map((v) => ({
    text: v,
    json: v,
    shown: v,
  })),
  '--tls-server-name': ['flag.example', 'env.example', 'file.example'].map((v) => ({
    text: v,
    json: v,
    shown: v,
  })),
};

/** Options that are actions, not settings: they have no environment variable on purpose. */
const ACTIONS = new Set(['--version', '--help', '--print-config', '--json']);

function longFlag(option: Option): string {
  return option.long!;
}

describe('precedence: flag > environment > config file > default', () => {
  for (const spec of WORKER_SETTINGS) {
    it(`holds for ${spec.flag} (config key "${spec.key}")`, async () => {
      const samples = SAMPLES[spec.flag];
      expect(samples, `add sample values for ${spec.flag} to SAMPLES`).toBeDefined();
      const [flag, env, inFile] = samples!;
      const flagArgs = spec.argument ? [spec.flag, flag!.text] : [spec.flag];
      const envVars = { [envVariableFor(spec.flag)]: env!.text };
      const config = file(JSON.stringify({ [spec.key]: inFile!.json }));
      const configArgs = ['--config', config];

      const all = await printConfig([...configArgs, ...flagArgs], envVars);
      expect(all.rows[spec.key]).toMatchObject({ value: flag!.shown, source: `flag ${spec.flag}` });

      const withoutFlag = await printConfig(configArgs, envVars);
      expect(withoutFlag.rows[spec.key]?.value).toBe(env!.shown);
      expect(withoutFlag.rows[spec.key]?.source).toMatch(
        new RegExp(`^env ${envVariableFor(spec.flag)}`),
      );

      const onlyFile = await printConfig(configArgs);
      expect(onlyFile.rows[spec.key]?.value).toBe(inFile!.shown);
      expect(onlyFile.rows[spec.key]?.source).toMatch(new RegExp(`^file ${config}`));

      const none = await printConfig([]);
      const fallback = spec.defaultValue
        ? { source: 'default' }
        : { value: '(not set)', source: 'not set' };
      expect(none.rows[spec.key]).toMatchObject(fallback);
    });
  }

  it('prints every setting once, in table order, and exits 0 when a coordinator is set', async () => {
    const result = await printConfig(['--coordinator', '10.0.0.5:7070']);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    expect(Object.keys(result.rows)).toEqual(['config', ...WORKER_SETTINGS.map((s) => s.key)]);
  });
});

describe('every flag has its environment variable', () => {
  const program = createWorkerProgram();
  const settingFlags = program.options.map(longFlag).filter((f) => !ACTIONS.has(f));

  it('names each in --help as env: SHARDLINE_ + the flag in upper snake case', () => {
    const helper = program.createHelp();
    const help = program.helpInformation().replace(/\s+/g, ' ');
    expect(settingFlags.length).toBeGreaterThanOrEqual(16);
    for (const option of program.options.filter((o) => !ACTIONS.has(longFlag(o)))) {
      const flag = longFlag(option);
      const name = `SHARDLINE_${flag.slice(2).toUpperCase().replace(/-/g, '_')}`;
      const description = helper.optionDescription(option);
      expect(description, `${flag} in --help`).toMatch(new RegExp(`[(,] ?env: ${name}[,)]`));
      // What --help prints, once line wrapping is undone.
      expect(help).toContain(`${option.flags} ${description.replace(/\s+/g, ' ')}`);
    }
  });

  it('lists every variable in WORKER_ENV_VARIABLES, for programs that start workers', () => {
    const names = settingFlags.map(
      (f) => `SHARDLINE_${f.slice(2).toUpperCase().replace(/-/g, '_')}`,
    );
    expect([...WORKER_ENV_VARIABLES].sort()).toEqual(names.sort());
  });

  it('doctor takes the same settings', () => {
    const doctor = program.commands.find((c) => c.name() === 'doctor')!;
    expect(doctor.options.map(longFlag).filter((f) => !ACTIONS.has(f))).toEqual(settingFlags);
  });

  for (const flag of createWorkerProgram()
    .options.map(longFlag)
    .filter((f) => !ACTIONS.has(f))) {
    it(`${flag}: setting its variable changes the setting`, async () => {
      const name = `SHARDLINE_${flag.slice(2).toUpperCase().replace(/-/g, '_')}`;
      if (flag === '--config') {
        const config = file('{"name": "from-config"}');
        const result = await printConfig([], { [name]: config });
        expect(result.rows.config).toEqual({ value: config, source: `env ${name}` });
        expect(result.rows.name?.value).toBe('from-config');
        return;
      }
      const spec = WORKER_SETTINGS.find((s) => s.flag === flag);
      expect(spec, `${flag} is not in WORKER_SETTINGS`).toBeDefined();
      const sample = SAMPLES[flag]?.[1];
      expect(sample, `add sample values for ${flag} to SAMPLES`).toBeDefined();
      const result = await printConfig([], { [name]: sample!.text });
      expect(result.rows[spec!.key]?.source).toMatch(new RegExp(`^env ${name}`));
      expect(result.rows[spec!.key]?.value).toBe(sample!.shown);
    });
  }
});

describe('environment values', () => {
  it('switches take 1/true/yes/on and 0/false/no/off, and refuse anything else', async () => {
    for (const on of ['1', 'true', 'YES', 'on']) {
      expect((await printConfig([], { SHARDLINE_TLS: on })).rows.tls?.value).toBe('true');
    }
    for (const off of ['0', 'false', 'No', 'off']) {
      expect((await printConfig([], { SHARDLINE_TLS: off })).rows.tls?.value).toBe('false');
    }
    expect((await printConfig([], { SHARDLINE_NO_DOWNLOAD: '1' })).rows.noDownload?.value).toBe(
      'true',
    );
    const bad = await run(['--coordinator', 'h:1', '--print-config'], { SHARDLINE_TLS: 'maybe' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(
      /SHARDLINE_TLS is invalid: expected 1, true, yes, on to turn it on, or 0, false, no, off to turn it off, found "maybe"/,
    );
  });

  it('an empty variable counts as unset', async () => {
    const result = await printConfig([], { SHARDLINE_BACKEND: '', SHARDLINE_NAME: '' });
    expect(result.rows.backend).toEqual({ value: 'auto', source: 'default' });
    expect(result.rows.name?.source).toBe('default');
  });

  it('refuses invalid values naming the variable, what was expected and what was found', async () => {
    const backend = await run(['--print-config'], { SHARDLINE_BACKEND: 'gpu' });
    expect(backend.code).toBe(1);
    expect(backend.stderr).toMatch(
      /SHARDLINE_BACKEND is invalid: expected one of auto, tensorflow-gpu, tensorflow, wasm, cpu, found "gpu"\. Fix or unset it/,
    );
    const timeout = await run(['--print-config'], { SHARDLINE_CONNECT_TIMEOUT: '-3' });
    expect(timeout.stderr).toMatch(
      /SHARDLINE_CONNECT_TIMEOUT is invalid: expected a number of seconds greater than 0, found "-3"/,
    );
    const address = await run([], { SHARDLINE_COORDINATOR: 'no-port' });
    expect(address.stderr).toMatch(/SHARDLINE_COORDINATOR is invalid: expected host:port/);
  });

  it('refuses a peer address that is neither auto, off nor host:port, and an advertised port 0', async () => {
    const listen = await run(['--print-config'], { SHARDLINE_PEER_LISTEN: 'everywhere' });
    expect(listen.code).toBe(1);
    expect(listen.stderr).toMatch(
      /SHARDLINE_PEER_LISTEN is invalid: expected auto, off, or host:port to listen on.*found "everywhere"/,
    );
    const advertise = await run(['--print-config', '--peer-advertise', '10.0.0.1:0']);
    expect(advertise.code).toBe(1);
    expect(advertise.stderr).toMatch(/--peer-advertise.*Expected a port from 1 to 65535/);
  });
});

describe('the config file', () => {
  const refuse = async (content: string, pattern: RegExp) => {
    const path = file(content);
    const result = await run(['--config', path, '--print-config']);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain(path);
    expect(result.stderr).toMatch(pattern);
  };

  it('refuses an unknown key, suggesting the one meant', async () => {
    await refuse(
      '{"coordinator": "h:1", "dataDirectory": "/data"}',
      /unknown key "dataDirectory": expected one of coordinator, name, .*tlsServerName\. Did you mean "dataDir"\? Rename or remove it\./,
    );
    await refuse('{"tlsCaFile": "ca.pem"}', /unknown key "tlsCaFile".*Did you mean "tlsCa"\?/);
    await refuse(
      '{"colour": "blue"}',
      /unknown key "colour": expected one of .* Rename or remove it\./,
    );
    await refuse(
      '{"config": "other.json"}',
      /unknown key "config".*A config file cannot name another one/,
    );
  });

  it('refuses wrong JSON types, saying how to write the value', async () => {
    await refuse(
      '{"connectTimeout": "60"}',
      /"connectTimeout" must be a JSON number, found the string "60"\. Write it as "connectTimeout": 60/,
    );
    await refuse(
      '{"tls": "yes"}',
      /"tls" must be a JSON boolean, found the string "yes"\. Write it as "tls": true/,
    );
    await refuse(
      '{"backend": null}',
      /"backend" must be a JSON string, found null\. Write it as "backend": "auto"/,
    );
    await refuse('{"name": ["a"]}', /"name" must be a JSON string, found an array/);
  });

  it('refuses invalid values with what was expected and found', async () => {
    await refuse(
      '{"backend": "gpu"}',
      /"backend" is invalid: expected one of auto, tensorflow-gpu, tensorflow, wasm, cpu, found the string "gpu"\. Fix it in the file, or remove the key\./,
    );
    await refuse(
      '{"connectTimeout": 0}',
      /"connectTimeout" is invalid: expected a number of seconds greater than 0, found the number 0/,
    );
    await refuse('{"coordinator": "10.0.0.5"}', /"coordinator" is invalid: expected host:port/);
  });

  it('refuses bad JSON and a file that is not one object', async () => {
    await refuse(
      '{"coordinator": "h:1",}',
      /is not valid JSON \(.*\): expected one JSON object .*\(JSON allows no comments or trailing commas\)/,
    );
    await refuse('["h:1"]', /holds an array: expected one JSON object of settings/);
  });

  it('refuses a missing file and a folder, naming where the path came from', async () => {
    const missing = join(dir, 'nowhere.json');
    const byFlag = await run(['--config', missing]);
    expect(byFlag.code).toBe(1);
    expect(byFlag.stderr).toContain(`The config file ${missing} (from --config) does not exist`);
    const byEnv = await run([], { SHARDLINE_CONFIG: 'nowhere.json' });
    expect(byEnv.stderr).toContain(
      `The config file ${missing} (from SHARDLINE_CONFIG) does not exist`,
    );
    expect(byEnv.stderr).toMatch(/Fix the path, or unset SHARDLINE_CONFIG/);
    const folder = join(dir, 'a-folder');
    mkdirSync(folder, { recursive: true });
    expect((await run(['--config', folder])).stderr).toMatch(/is a folder: expected a JSON file/);
  });

  it('resolves relative paths against its own folder; flags and env stay as given', async () => {
    const sub = join(dir, 'etc');
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, 'token'), `${TOKENS[2]}\n`);
    const config = join(sub, 'worker.json');
    writeFileSync(
      config,
      JSON.stringify({
        dataDir: 'data',
        tlsCa: '../pki/ca.pem',
        tokenFile: 'token',
        tlsKey: '/abs/key.pem',
      }),
    );
    // The file is found relative to the working directory; its contents relative to the file.
    const result = await printConfig(['--config', 'etc/worker.json']);
    expect(result.rows.config?.value).toBe(config);
    expect(result.rows.dataDir?.value).toBe(join(sub, 'data'));
    expect(result.rows.tlsCa?.value).toBe(join(dir, 'pki', 'ca.pem'));
    expect(result.rows.tlsKey?.value).toBe('/abs/key.pem');
    expect(result.rows.tokenFile?.value).toBe(join(sub, 'token'));
    expect(result.rows.token).toEqual({
      value: '<redacted>',
      source: `file ${config} (read from ${join(sub, 'token')})`,
    });
    const flag = await printConfig(['--config', 'etc/worker.json', '--data-dir', 'rel']);
    expect(flag.rows.dataDir?.value).toBe('rel');
  });
});

describe('the token file', () => {
  it('reads the token, dropping one trailing newline (LF or CRLF)', async () => {
    for (const content of [`${TOKENS[0]}`, `${TOKENS[0]}\n`, `${TOKENS[0]}\r\n`]) {
      const path = file(content);
      const result = await printConfig(['--token-file', path]);
      expect(result.code, result.stderr).toBe(1); // no coordinator, but the file was fine
      expect(result.stderr).not.toMatch(/token/i);
      expect(result.rows.token).toEqual({
        value: '<redacted>',
        source: `flag --token-file (read from ${path})`,
      });
    }
  });

  it('refuses an empty file, a missing one, and one holding more than a token', async () => {
    const empty = file('');
    expect((await run(['--token-file', empty])).stderr).toContain(
      `The token file ${empty} (from --token-file) is empty: expected the shared token`,
    );
    const blank = file('\n');
    expect((await run([], { SHARDLINE_TOKEN_FILE: blank })).stderr).toContain(
      `The token file ${blank} (from SHARDLINE_TOKEN_FILE) is empty`,
    );
    const missing = join(dir, 'no-token');
    expect((await run(['--token-file', missing])).stderr).toMatch(
      /The token file .*no-token \(from --token-file\) cannot be read \(it does not exist\): expected a file holding the shared token/,
    );
    const twoLines = file('first-half-of-it\nsecond-half-of-it\n');
    const result = await run(['--token-file', twoLines]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /contains whitespace at position 17: expected visible ASCII characters only/,
    );
    expect(result.stderr).not.toContain('half-of-it');
  });

  it('refuses a token and a token file from the same source; otherwise precedence decides', async () => {
    const both = await run(['--token', TOKENS[0]!, '--token-file', tokenFiles[1]!]);
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(
      /Both a token and a token file are set \(flag --token and flag --token-file\): expected one of them/,
    );
    const bothEnv = await run([], {
      SHARDLINE_TOKEN: TOKENS[0],
      SHARDLINE_TOKEN_FILE: tokenFiles[1],
    });
    expect(bothEnv.stderr).toMatch(/env SHARDLINE_TOKEN and env SHARDLINE_TOKEN_FILE/);

    // A token flag beats a token file from the environment...
    const flagWins = await printConfig(['--token', TOKENS[0]!], {
      SHARDLINE_TOKEN_FILE: tokenFiles[1],
    });
    expect(flagWins.rows.token?.source).toBe('flag --token');
    expect(flagWins.rows.tokenFile?.source).toBe(
      'env SHARDLINE_TOKEN_FILE (ignored: flag --token takes precedence)',
    );
    // ...and a token file from the environment beats a token in the config file.
    const config = file(JSON.stringify({ token: TOKENS[2] }));
    const envWins = await printConfig(['--config', config], {
      SHARDLINE_TOKEN_FILE: tokenFiles[1],
    });
    expect(envWins.rows.token?.source).toBe(
      `env SHARDLINE_TOKEN_FILE (read from ${tokenFiles[1]})`,
    );
  });
});

describe('secrets', () => {
  it('never prints the token, from any source', async () => {
    const secret = 'do-not-print-me-0123456789abcdef';
    const secretFile = file(`${secret}\n`);
    const sources: Array<[string[], NodeJS.ProcessEnv]> = [
      [['--token', secret], {}],
      [[], { SHARDLINE_TOKEN: secret }],
      [['--config', file(JSON.stringify({ token: secret }))], {}],
      [['--token-file', secretFile], {}],
    ];
    for (const [args, env] of sources) {
      const shown = await printConfig(['--coordinator', '127.0.0.1:1', ...args], env);
      expect(shown.code).toBe(0);
      expect(shown.rows.token?.value).toBe('<redacted>');
      expect(shown.stdout + shown.stderr).not.toContain(secret);
      // A real start at debug level logs every setting, then gives up on the closed port.
      const started = await run(
        [
          '--coordinator',
          '127.0.0.1:1',
          '--connect-timeout',
          '0.5',
          '--log-level',
          'debug',
          '--backend',
          'cpu',
          ...args,
        ],
        env,
      );
      expect(started.code).toBe(1);
      expect(started.stderr).toMatch(/DEBUG settings .*token="<redacted> \(/);
      expect(started.stdout + started.stderr).not.toContain(secret);
    }
    const invalid = await run(['--print-config'], { SHARDLINE_TOKEN: `${secret} tail` });
    expect(invalid.stderr).toMatch(/contains whitespace/);
    expect(invalid.stderr).not.toContain(secret);
  });
});

describe('--coordinator', () => {
  it('is still required to run, with the three ways to set it', async () => {
    const none = await run([]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(
      'No coordinator given: expected its host:port from the --coordinator flag, the SHARDLINE_COORDINATOR environment variable or "coordinator" in a config file (--config / SHARDLINE_CONFIG); found none of them.',
    );
    const config = file('{"name": "a"}');
    const withFile = await run(['--config', config]);
    expect(withFile.stderr).toContain(`"coordinator" in the config file (${config} has none)`);
  });

  it('--print-config prints an incomplete configuration, then fails for it', async () => {
    const result = await printConfig([]);
    expect(result.code).toBe(1);
    expect(result.rows.coordinator).toEqual({ value: '(not set)', source: 'not set' });
    expect(result.stderr).toMatch(/No coordinator given/);
  });
});
