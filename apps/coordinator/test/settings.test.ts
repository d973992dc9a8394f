/**
 * `train`'s settings through the real CLI (`runCli`, as `shardline-coordinator` runs it, in this
 * process): one order of precedence (flag > environment > config file > default), the
 * SHARDLINE_* variable and config key of every flag, --print-config with the token redacted,
 * bad values that name their source, and the job config the settings turn into. Nothing trains
 * here: --print-config exits before, and the job tests hand `buildProgram` a callback that only
 * records what it gets. Files are real files in a temporary folder; the environment is passed
 * in, so tests never touch this process's.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataType } from '@shardline/protocol';
import type { Option } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { assertSameExchange } from '../src/job.js';
import { buildProgram, runCli, type TrainFlags } from '../src/program.js';
import { train } from '../src/train.js';
import {
  AUTO_RING_MIN_GRADIENT_BYTES,
  AUTO_RING_MIN_WORKERS,
  resolveExchange,
  TRAIN_SETTINGS,
  type TrainConfig,
} from '../src/trainConfig.js';

const dir = mkdtempSync(join(tmpdir(), 'shardline-coordinator-settings-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function file(content: string, name = `f${++files}.json`): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

async function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(
    ['node', 'shardline-coordinator', 'train', ...args],
    {
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) },
    },
    { env, cwd: dir },
  );
  return { code, stdout, stderr };
}

/** --print-config's table as { key: { value, source } }. */
async function printConfig(args: string[], env: NodeJS.ProcessEnv = {}) {
  const result = await run([...args, '--print-config'], env);
  const rows: Record<string, { value: string; source: string }> = {};
  for (const line of result.stdout.trim().split('\n').slice(1)) {
    const [key, value, source] = line.split(/ {2,}/);
    rows[key!] = { value: value!, source: source ?? '' };
  }
  return { ...result, rows };
}

/** What `train` would run with, recorded instead of training. */
async function jobOf(args: string[], env: NodeJS.ProcessEnv = {}) {
  let job: { config: TrainConfig; flags: TrainFlags } | undefined;
  const program = buildProgram(
    { stdout: { write: () => true }, stderr: { write: () => true } },
    async (config, flags) => {
      job = { config, flags };
    },
    { env, cwd: dir },
  );
  await program.parseAsync(['node', 'shardline-coordinator', 'train', ...args]);
  return job!;
}

const SECRET = 'coordinator-secret-0123456789abcdef';

describe('precedence: flag > environment > config file > default', () => {
  const cases = [
    { flag: '--epochs', key: 'epochs', values: ['1', '2', 3], fallback: '30' },
    { flag: '--model', key: 'model', values: ['mlp', 'fast-cnn', 'mlp'], fallback: 'seed-cnn' },
    {
      flag: '--listen',
      key: 'listen',
      values: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'],
      fallback: '127.0.0.1:7070',
    },
    {
      flag: '--learning-rate',
      key: 'learningRate',
      values: ['0.5', '0.01', 0.25],
      fallback: '0.001',
    },
    {
      flag: '--gradient-dtype',
      key: 'gradientDtype',
      values: ['float16', 'bfloat16', 'float16'],
      fallback: 'float32',
    },
    { flag: '--exchange', key: 'exchange', values: ['ring', 'auto', 'ring'], fallback: 'star' },
    {
      flag: '--dashboard',
      key: 'dashboard',
      values: ['127.0.0.1:1', 'off', '[::1]:3'],
      fallback: '127.0.0.1:7071',
    },
  ] as const;

  for (const c of cases) {
    it(`holds for ${c.flag} (SHARDLINE_${c.flag.slice(2).toUpperCase().replace(/-/g, '_')}, config key "${c.key}")`, async () => {
      const variable = `SHARDLINE_${c.flag.slice(2).toUpperCase().replace(/-/g, '_')}`;
      const [flag, env, inFile] = c.values;
      const config = file(JSON.stringify({ [c.key]: inFile }));
      const all = await printConfig(['--config', config, c.flag, flag], { [variable]: env });
      expect(all.code, all.stderr).toBe(0);
      expect(all.rows[c.key]).toEqual({ value: String(flag), source: `flag ${c.flag}` });
      const withoutFlag = await printConfig(['--config', config], { [variable]: env });
      expect(withoutFlag.rows[c.key]).toEqual({ value: env, source: `env ${variable}` });
      const onlyFile = await printConfig(['--config', config]);
      expect(onlyFile.rows[c.key]).toEqual({ value: String(inFile), source: `file ${config}` });
      const none = await printConfig([]);
      expect(none.rows[c.key]).toEqual({ value: c.fallback, source: 'default' });
    });
  }

  it('holds for switches: --augment, SHARDLINE_AUGMENT=1/0, "augment": true', async () => {
    const config = file('{"augment": true}');
    expect((await printConfig(['--augment'], { SHARDLINE_AUGMENT: 'off' })).rows.augment).toEqual({
      value: 'true',
      source: 'flag --augment',
    });
    const env = await printConfig(['--config', config], { SHARDLINE_AUGMENT: 'off' });
    expect(env.rows.augment).toEqual({ value: 'false', source: 'env SHARDLINE_AUGMENT' });
    expect((await printConfig(['--config', config])).rows.augment?.value).toBe('true');
    expect((await printConfig([])).rows.augment).toEqual({ value: 'false', source: 'default' });
    const noDownload = await printConfig([], { SHARDLINE_NO_DOWNLOAD: 'yes' });
    expect(noDownload.rows.noDownload?.value).toBe('true');
  });

  it('finds the config file by SHARDLINE_CONFIG too, relative to the working folder', async () => {
    file('{"epochs": 4}', 'by-env.json');
    const result = await printConfig([], { SHARDLINE_CONFIG: 'by-env.json' });
    expect(result.rows.config).toEqual({
      value: join(dir, 'by-env.json'),
      source: 'env SHARDLINE_CONFIG',
    });
    expect(result.rows.epochs).toEqual({ value: '4', source: `file ${join(dir, 'by-env.json')}` });
  });
});

describe('--print-config', () => {
  it('prints every setting once, in table order, exits 0 and trains nothing', async () => {
    const out = join(dir, 'never');
    const result = await printConfig(['--out', out]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(Object.keys(result.rows)).toEqual(['config', ...TRAIN_SETTINGS.map((s) => s.key)]);
    expect(result.rows.minWorkers).toEqual({ value: '(not set)', source: 'not set' });
    expect(result.rows.out).toEqual({ value: out, source: 'flag --out' });
    expect(existsSync(out)).toBe(false);
  });

  it('never prints the token, from any source', async () => {
    const tokenFile = file(`${SECRET}\n`, 'token');
    const sources: Array<[string[], NodeJS.ProcessEnv, string]> = [
      [['--token', SECRET], {}, 'flag --token'],
      [[], { SHARDLINE_TOKEN: SECRET }, 'env SHARDLINE_TOKEN'],
      [['--config', file(JSON.stringify({ token: SECRET }))], {}, 'file '],
      [['--token-file', tokenFile], {}, `flag --token-file (read from ${tokenFile})`],
      [
        [],
        { SHARDLINE_TOKEN_FILE: tokenFile },
        `env SHARDLINE_TOKEN_FILE (read from ${tokenFile})`,
      ],
    ];
    for (const [args, env, source] of sources) {
      const shown = await printConfig(args, env);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.rows.token?.value).toBe('<redacted>');
      expect(shown.rows.token?.source.startsWith(source)).toBe(true);
      expect(shown.stdout + shown.stderr).not.toContain(SECRET);
    }
    const invalid = await run(['--print-config'], { SHARDLINE_TOKEN: `${SECRET} tail` });
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toMatch(/--token \/ SHARDLINE_TOKEN contains whitespace/);
    expect(invalid.stderr).not.toContain(SECRET);
  });

  it('prints settings that cannot work together, then fails for them', async () => {
    const resume = await printConfig(['--resume']);
    expect(resume.code).toBe(1);
    expect(resume.rows.resume?.value).toBe('true');
    expect(resume.stderr).toContain(
      '--resume needs --out <dir>: the folder of the run to continue.',
    );
    // --out from the environment or the config file counts as given.
    expect((await printConfig(['--resume'], { SHARDLINE_OUT: join(dir, 'run') })).code).toBe(0);
    const health = await printConfig(['--in-process'], { SHARDLINE_HEALTH_LISTEN: '0.0.0.0:7071' });
    expect(health.code).toBe(1);
    expect(health.stderr).toMatch(/--health-listen needs the distributed mode/);
    const ring = await printConfig(['--in-process'], { SHARDLINE_EXCHANGE: 'ring' });
    expect(ring.code).toBe(1);
    expect(ring.rows.exchange).toEqual({ value: 'ring', source: 'env SHARDLINE_EXCHANGE' });
    expect(ring.stderr).toContain(
      '--exchange ring needs worker processes to all-reduce among, but --in-process trains in this one process.',
    );
    // auto trains in-process as star.
    expect((await printConfig(['--in-process', '--exchange', 'auto'])).code).toBe(0);
  });
});

describe('--dashboard', () => {
  it('is on, on loopback, by default, and only the default may move to a free port', async () => {
    expect((await jobOf([])).flags.dashboard).toEqual({
      address: '127.0.0.1:7071',
      fallback: true,
    });
    expect((await jobOf(['--dashboard', '127.0.0.1:7071'])).flags.dashboard).toEqual({
      address: '127.0.0.1:7071',
      fallback: false,
    });
    expect((await jobOf([], { SHARDLINE_DASHBOARD: 'off' })).flags.dashboard).toBeUndefined();
    expect((await jobOf(['--dashboard', 'OFF'])).flags.dashboard).toBeUndefined();
  });

  it('beyond loopback, needs the job token, and is refused before anything starts without one', async () => {
    expect(
      (await jobOf(['--dashboard', '0.0.0.0:7071'], { SHARDLINE_TOKEN: SECRET })).flags.dashboard,
    ).toEqual({ address: '0.0.0.0:7071', fallback: false, token: SECRET });
    const exposed = await printConfig(['--dashboard', '0.0.0.0:7071']);
    expect(exposed.code).toBe(1);
    expect(exposed.stderr).toMatch(
      /Refusing to serve the dashboard on 0\.0\.0\.0:7071 without a token: .* Set the job's token \(--token, --token-file or SHARDLINE_TOKEN/,
    );
    expect(exposed.stderr).toMatch(/or turn it off \(--dashboard off\)/);
  });

  it('refuses the port of --listen or --health-listen when given explicitly, and a value that is not host:port', async () => {
    const clash = await printConfig(['--dashboard', '127.0.0.1:7070']);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toMatch(
      /--dashboard 127\.0\.0\.1:7070 uses the port of --listen 127\.0\.0\.1:7070\. Give the dashboard another port/,
    );
    // In-process, --listen binds nothing: no clash.
    expect((await printConfig(['--in-process', '--dashboard', '127.0.0.1:7070'])).code).toBe(0);
    const bad = await run(['--dashboard', 'nope']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--dashboard <host:port\|off>.*Expected off, or host:port/s);
  });
});

describe('bad values name their source, what was expected and what was found', () => {
  it('on the command line, with the messages commander always gave', async () => {
    const epochs = await run(['--epochs', 'zero']);
    expect(epochs.code).toBe(1);
    expect(epochs.stderr).toMatch(
      /option '--epochs <n>' argument 'zero' is invalid\. Expected a whole number of at least 1\./,
    );
    const exchange = await run(['--exchange', 'mesh']);
    expect(exchange.code).toBe(1);
    expect(exchange.stderr).toMatch(/'mesh' is invalid/);
    expect(exchange.stderr).toMatch(/star, ring, auto/);
    const model = await run(['--model', 'resnet']);
    expect(model.stderr).toMatch(
      /'resnet' is invalid\. Expected one of seed-cnn, mlp, fast-cnn, or the path of a model file/,
    );
    const health = await run(['--health-listen', 'nope']);
    expect(health.stderr).toMatch(/--health-listen <host:port>.*Expected host:port/s);
  });

  it('from the environment', async () => {
    const epochs = await run(['--print-config'], { SHARDLINE_EPOCHS: 'zero' });
    expect(epochs.code).toBe(1);
    expect(epochs.stdout).toBe('');
    expect(epochs.stderr).toBe(
      'shardline-coordinator: The environment variable SHARDLINE_EPOCHS is invalid: expected a whole number of at least 1, found "zero". Fix or unset it (or override it with --epochs).\n',
    );
    const model = await run(['--print-config'], { SHARDLINE_MODEL: 'resnet' });
    expect(model.stderr).toMatch(
      /SHARDLINE_MODEL is invalid: expected one of seed-cnn, .*, or the path of a model file .*, found "resnet"/,
    );
    const augment = await run(['--print-config'], { SHARDLINE_AUGMENT: 'maybe' });
    expect(augment.stderr).toMatch(
      /SHARDLINE_AUGMENT is invalid: expected 1, true, yes, on to turn it on, or 0, false, no, off to turn it off/,
    );
    const level = await run(['--print-config'], { SHARDLINE_LOG_LEVEL: 'loud' });
    expect(level.stderr).toMatch(/SHARDLINE_LOG_LEVEL is invalid: expected one of debug, info/);
  });

  it('from the config file', async () => {
    const refuse = async (content: string, pattern: RegExp) => {
      const path = file(content);
      const result = await run(['--config', path, '--print-config']);
      expect(result.code).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr).toContain(path);
      expect(result.stderr).toMatch(pattern);
    };
    await refuse(
      '{"epochs": 0}',
      /"epochs" is invalid: expected a whole number of at least 1, found the number 0\. Fix it in the file, or remove the key\./,
    );
    await refuse(
      '{"epochs": "30"}',
      /"epochs" must be a JSON number, found the string "30"\. Write it as "epochs": 30/,
    );
    await refuse('{"inProcess": "yes"}', /"inProcess" must be a JSON boolean/);
    await refuse(
      '{"optimizer": "lamb"}',
      /"optimizer" is invalid: expected one of sgd, momentum, adam, found the string "lamb"/,
    );
    await refuse('{"healthListen": "nope"}', /"healthListen" is invalid: expected host:port/);
  });

  it('refuses an unknown config-file key, suggesting the one meant', async () => {
    const path = file('{"epoch": 3}');
    const result = await run(['--config', path, '--print-config']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /The config file .* has an unknown key "epoch": expected one of inProcess, listen, .*logLevel\. Did you mean "epochs"\? Rename or remove it\./,
    );
    const missing = await run(['--print-config'], { SHARDLINE_CONFIG: 'nowhere.json' });
    expect(missing.stderr).toContain(
      `The config file ${join(dir, 'nowhere.json')} (from SHARDLINE_CONFIG) does not exist: expected a JSON file of coordinator settings.`,
    );
  });
});

describe('every flag has its environment variable and config key', () => {
  const program = buildProgram(
    { stdout: { write: () => true }, stderr: { write: () => true } },
    async () => {},
  );
  const train = program.commands.find((c) => c.name() === 'train')!;
  const ACTIONS = new Set(['--help', '--print-config']);

  it('names each in --help as env: SHARDLINE_ + the flag in upper snake case, config: camelCase', () => {
    const helper = train.createHelp();
    const settings = train.options.filter((o: Option) => !ACTIONS.has(o.long!));
    expect(settings.map((o) => o.long)).toEqual([...TRAIN_SETTINGS.map((s) => s.flag), '--config']);
    for (const option of settings) {
      const flag = option.long!;
      const name = `SHARDLINE_${flag.slice(2).toUpperCase().replace(/-/g, '_')}`;
      const key = flag.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
      const description = helper.optionDescription(option);
      expect(description, flag).toMatch(new RegExp(`[(,] ?env: ${name}[,)]`));
      if (flag !== '--config') expect(description, flag).toMatch(new RegExp(`config: ${key}\\)$`));
    }
  });

  it('keeps the defaults and choices in --help', () => {
    const helper = train.createHelp();
    const help = (flag: string) =>
      helper.optionDescription(train.options.find((o) => o.long === flag)!);
    expect(help('--epochs')).toContain('default: 30');
    expect(help('--listen')).toContain('default: "127.0.0.1:7070"');
    expect(help('--out')).toContain('default: runs/<date-time>');
    expect(help('--model')).toMatch(
      /model to train: seed-cnn, mlp, fast-cnn, or .*default: "seed-cnn"/,
    );
  });
});

describe('the job the settings turn into', () => {
  it('is the seed run with no settings', async () => {
    const { config, flags } = await jobOf([]);
    expect(config).toMatchObject({
      model: 'seed-cnn',
      dataset: 'fashion-mnist',
      download: true,
      epochs: 30,
      batchSize: 32,
      learningRate: 0.001,
      optimizer: 'adam',
      backend: 'auto',
      logFormat: 'text',
      exchange: 'star',
    });
    expect(config.out).toMatch(/^runs\/\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d$/);
    expect(config).not.toHaveProperty('dataDir');
    expect(flags).toMatchObject({ inProcess: false, outGiven: false, logLevel: 'info' });
    expect(flags.distributed).toMatchObject({
      listen: '127.0.0.1:7070',
      localWorkers: 2,
      minWorkers: 2,
      gradientDtype: DataType.FLOAT32,
      workerTimeoutMs: 10_000,
      waitTimeoutMs: 300_000,
      security: { insecure: false },
    });
  });

  it('takes settings from every source, typed', async () => {
    const sub = join(dir, 'job');
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, 'token'), `${SECRET}\n`);
    const config = join(sub, 'coordinator.json');
    writeFileSync(
      config,
      JSON.stringify({
        dataDir: 'data',
        out: 'runs/a',
        tokenFile: 'token',
        localWorkers: 0,
        waitTimeout: 0.5,
        noDownload: true,
      }),
    );
    const job = await jobOf(['--config', config, '--epochs', '2'], {
      SHARDLINE_WEIGHTS_DTYPE: 'bfloat16',
      SHARDLINE_LOG_LEVEL: 'debug',
      SHARDLINE_IN_PROCESS: 'true',
    });
    expect(job.config).toMatchObject({
      epochs: 2,
      dataDir: join(sub, 'data'),
      out: join(sub, 'runs', 'a'),
      download: false,
    });
    expect(job.flags).toMatchObject({ inProcess: true, outGiven: true, logLevel: 'debug' });
    expect(job.flags.distributed).toMatchObject({
      localWorkers: 0,
      minWorkers: 1,
      weightsDtype: DataType.BFLOAT16,
      waitTimeoutMs: 500,
      security: { token: SECRET, insecure: false },
    });
  });

  it('is the recorded five-epoch run with --preset five-epochs, whose values any flag overrides', async () => {
    // docs/runs/seed-cnn-five-epochs/README.md records the run with these explicit flags.
    const recorded = await jobOf(
      '--model seed-cnn --epochs 5 --batch-size 64 --learning-rate 0.002 --schedule cosine --warmup-epochs 0.2 --augment --weight-decay 0.00005 --seed 1 --out runs/x'.split(
        ' ',
      ),
    );
    const preset = await jobOf(['--preset', 'five-epochs', '--seed', '1', '--out', 'runs/x']);
    expect(preset.config).toEqual(recorded.config);
    expect(preset.flags).toEqual(recorded.flags);
    const longer = await jobOf(['--preset', 'five-epochs', '--epochs', '8'], {
      SHARDLINE_BATCH_SIZE: '128',
    });
    expect(longer.config).toMatchObject({ epochs: 8, batchSize: 128, learningRate: 0.002 });
    const printed = await printConfig(['--preset', 'five-epochs', '--epochs', '8']);
    expect(printed.rows.epochs).toEqual({ value: '8', source: 'flag --epochs' });
    expect(printed.rows.schedule).toEqual({ value: 'cosine', source: 'preset five-epochs' });
    expect(printed.rows.seed).toEqual({ value: '42', source: 'default' });
    const unknown = await run(['--preset', 'fast', '--print-config']);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('five-epochs');
  });

  it('lets a --token flag override a token file from the environment', async () => {
    const job = await jobOf(['--token', SECRET], {
      SHARDLINE_TOKEN_FILE: join(dir, 'does-not-matter'),
    });
    expect(job.flags.distributed.security?.token).toBe(SECRET);
    await expect(jobOf(['--token', SECRET, '--token-file', file(`${SECRET}\n`)])).rejects.toThrow(
      /Both a token and a token file are set \(flag --token and flag --token-file\)/,
    );
  });
});

describe('--exchange auto', () => {
  const MiB = 1024 * 1024;
  it('picks ring from 2 workers with a remote one and a 1 MiB float32 gradient, star otherwise', () => {
    expect(resolveExchange('auto', { workers: 3, remote: 3, parameterCount: MiB / 4 })).toEqual({
      exchange: 'ring',
      reason: '--exchange auto: 3 workers (3 remote) and a 1.00 MiB gradient',
    });
    // The seed CNN (1,413,834 parameters, 5.39 MiB) on two remote workers: ring.
    expect(resolveExchange('auto', { workers: 2, remote: 2, parameterCount: 1_413_834 })).toEqual({
      exchange: 'ring',
      reason: '--exchange auto: 2 workers (2 remote) and a 5.39 MiB gradient',
    });
    // ... and on the default two local workers: star.
    expect(resolveExchange('auto', { workers: 2, remote: 0, parameterCount: 1_413_834 })).toEqual({
      exchange: 'star',
      reason: '--exchange auto: only local workers (no network between them to save)',
    });
    expect(resolveExchange('auto', { workers: 1, remote: 1, parameterCount: 25e6 })).toEqual({
      exchange: 'star',
      reason: '--exchange auto: 1 worker(s), fewer than 2',
    });
    expect(
      resolveExchange('auto', { workers: 8, remote: 8, parameterCount: MiB / 4 - 1 }),
    ).toMatchObject({
      exchange: 'star',
      reason: expect.stringMatching(/under 1 MiB$/),
    });
    expect(AUTO_RING_MIN_WORKERS).toBe(2);
    expect(AUTO_RING_MIN_GRADIENT_BYTES).toBe(MiB);
  });

  it('leaves star and ring as they are, whatever the job', () => {
    expect(resolveExchange('ring', { workers: 1, remote: 0, parameterCount: 10 }).exchange).toBe(
      'ring',
    );
    expect(
      resolveExchange('star', { workers: 64, remote: 64, parameterCount: 25e6 }).exchange,
    ).toBe('star');
  });
});

describe('--exchange and --resume', () => {
  const base = (exchange: TrainConfig['exchange'] | undefined) =>
    ({ exchange }) as unknown as TrainConfig;
  it('refuses to resume a run in the other mode, naming the flag to pass', () => {
    expect(() =>
      assertSameExchange(base('ring'), base('star'), 'runs/a/checkpoints/step-8'),
    ).toThrow(
      'Cannot resume runs/a/checkpoints/step-8 with --exchange star: the run trained with --exchange ring. Pass --exchange ring, as the original run did.',
    );
    expect(() => assertSameExchange(base('star'), base('ring'), 'p')).toThrow(
      /Pass --exchange star/,
    );
  });

  it('reads a checkpoint from before ring mode as star, and unresolved auto as star (in-process)', () => {
    expect(() => assertSameExchange(base(undefined), base('star'), 'p')).not.toThrow();
    expect(() => assertSameExchange(base(undefined), base('auto'), 'p')).not.toThrow();
    expect(() => assertSameExchange(base(undefined), base('ring'), 'p')).toThrow(
      /MISMATCH|Cannot resume/,
    );
    expect(() => assertSameExchange(base('ring'), base('ring'), 'p')).not.toThrow();
  });
});

describe('train({ exchange })', () => {
  it('refuses ring in-process before loading anything, as the CLI does', async () => {
    await expect(
      train({ inProcess: true, exchange: 'ring', out: join(dir, 'api-ring') }),
    ).rejects.toThrow(/--exchange ring needs worker processes to all-reduce among/);
    expect(existsSync(join(dir, 'api-ring'))).toBe(false);
  });
});
