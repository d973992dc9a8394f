/**
 * The checker itself: a check that passes on everything proves nothing, so each test feeds it
 * a small broken example (a typo in a flag, a variable, a value; a missing file) and expects it
 * to fail, naming the problem. The same mistakes made in copies of the real deployment files
 * must fail too.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkInvocation } from './checkInvocation.js';
import {
  buildSpec,
  CLI_PATHS,
  type CliName,
  type CommandSpec,
  loadCliSpec,
  parseHelp,
} from './cliSpec.js';
import {
  containerfileInvocations,
  type Extracted,
  kubernetesInvocations,
  markdownInvocations,
  parseYaml,
  shellCommands,
  systemdInvocations,
} from './extract.js';
import { checkKustomization } from './kustomize.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
let specs: Record<CliName, CommandSpec>;
let dir: string;

beforeAll(async () => {
  for (const path of Object.values(CLI_PATHS))
    expect(existsSync(path), `${path}: build first`).toBe(true);
  specs = {
    'shardline-coordinator': loadCliSpec('shardline-coordinator'),
    'shardline-worker': loadCliSpec('shardline-worker'),
  };
  dir = await mkdtemp(join(tmpdir(), 'shardline-checker-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const check = (cli: CliName, argv: string[], env: Record<string, string | undefined> = {}) =>
  checkInvocation({ where: 'example', cli, argv, env }, specs);
const problemsOf = (e: Extracted) => [
  ...e.problems,
  ...e.invocations.flatMap((i) => checkInvocation(i, specs)),
];

describe('reading --help', () => {
  const help = `Usage: tool [options] [command]

Options:
  -V, --version              output the version number
  --listen <host:port>       where to listen (default: "127.0.0.1:7070", env:
                             TOOL_LISTEN)
  --mode <m>                 how (choices: "fast", "slow", default: "fast")
  --no-download              never download
  --level [n]                optional value
  -h, --help                 display help for command

Commands:
  run [options]              run it
  help [command]             display help for command
`;

  it('finds options, their values, choices and variables, and the subcommands', () => {
    const parsed = parseHelp('tool', help);
    expect([...parsed.options.keys()]).toEqual([
      '--version',
      '--listen',
      '--mode',
      '--no-download',
      '--level',
      '--help',
    ]);
    expect(parsed.options.get('--listen')).toEqual({
      long: '--listen',
      value: 'required',
      env: 'TOOL_LISTEN',
    });
    expect(parsed.options.get('--mode')?.choices).toEqual(['fast', 'slow']);
    expect(parsed.options.get('--no-download')?.value).toBe('none');
    expect(parsed.options.get('--level')?.value).toBe('optional');
    expect(parsed.options.get('--version')?.short).toBe('-V');
    expect(parsed.subcommandNames).toEqual(['run']);
  });

  it('reads the real CLIs: train under the coordinator, doctor under the worker, every worker flag with its variable', () => {
    const coordinator = specs['shardline-coordinator'];
    expect([...coordinator.subcommands.keys()]).toEqual(['train', 'evaluate', 'predict', 'report']);
    expect(coordinator.subcommands.get('train')!.options.get('--health-listen')?.value).toBe(
      'required',
    );
    expect(coordinator.subcommands.get('train')!.envOptions.has('SHARDLINE_TOKEN')).toBe(true);
    const worker = specs['shardline-worker'];
    expect(worker.subcommands.has('doctor')).toBe(true);
    for (const option of worker.options.values()) {
      if (['--version', '--help', '--print-config'].includes(option.long)) continue;
      // The worker's rule: every setting's variable is SHARDLINE_ + the flag in upper snake case.
      expect(option.env, option.long).toBe(
        `SHARDLINE_${option.long.slice(2).toUpperCase().replace(/-/g, '_')}`,
      );
    }
  });

  it('builds nested specs from any help reader', () => {
    const spec = buildSpec('tool', (command) =>
      command.length === 0 ? help : 'Usage: tool run\n\nOptions:\n  --fast  go fast\n',
    );
    expect(spec.subcommands.get('run')!.options.has('--fast')).toBe(true);
  });
});

describe('checking an invocation', () => {
  it('accepts what the CLIs accept', () => {
    expect(
      check('shardline-worker', [
        '--coordinator',
        '10.0.0.5:7070',
        '--backend=tensorflow-gpu',
        '--no-download',
      ]),
    ).toEqual([]);
    expect(check('shardline-worker', ['doctor', '--backend', 'tensorflow-gpu'])).toEqual([]);
    expect(
      check('shardline-coordinator', [
        'train',
        '--listen=0.0.0.0:7070',
        '--local-workers',
        '0',
        '--in-process',
        '--out',
        '$(pwd)/x',
      ]),
    ).toEqual([]);
    expect(
      check('shardline-worker', [], {
        SHARDLINE_TLS: 'yes',
        SHARDLINE_TOKEN: undefined,
        OTHER: 'x',
      }),
    ).toEqual([]);
  });

  it("knows the coordinator's --dashboard and the worker's --metrics-listen, flags and variables", () => {
    expect(check('shardline-coordinator', ['train', '--dashboard', '0.0.0.0:7071'])).toEqual([]);
    expect(check('shardline-coordinator', ['train'], { SHARDLINE_DASHBOARD: 'off' })).toEqual([]);
    expect(check('shardline-coordinator', ['train', '--dashbord=off'])[0]).toMatch(
      /train has no option --dashbord\. Did you mean --dashboard\?/,
    );
    expect(check('shardline-worker', ['--metrics-listen', '0.0.0.0:9464'])).toEqual([]);
    expect(check('shardline-worker', [], { SHARDLINE_METRICS_LISTEN: '0.0.0.0:9464' })).toEqual([]);
  });

  it('fails on a misspelt flag, and suggests the right one', () => {
    expect(check('shardline-worker', ['--coordinater', '10.0.0.5:7070'])).toEqual([
      'example: shardline-worker has no option --coordinater. Did you mean --coordinator?',
    ]);
    expect(check('shardline-coordinator', ['train', '--min-worker=3'])[0]).toMatch(
      /train has no option --min-worker\. Did you mean --min-workers\?/,
    );
  });

  it('fails on a coordinator flag without `train`, and on a stray argument', () => {
    expect(check('shardline-coordinator', ['--listen', '0.0.0.0:7070'])[0]).toMatch(
      /has no option --listen/,
    );
    expect(check('shardline-coordinator', ['trian'])[0]).toMatch(
      /unexpected argument "trian".*Did you mean train\?/,
    );
    expect(check('shardline-worker', ['--name', 'a', 'b'])[0]).toMatch(/unexpected argument "b"/);
  });

  it('fails on a value outside the choices, on a switch given a value, and on a missing value', () => {
    expect(check('shardline-worker', ['--backend=gpu'])[0]).toMatch(
      /--backend is "gpu".*expected one of auto, tensorflow-gpu/,
    );
    expect(check('shardline-coordinator', ['train', '--in-process=yes'])[0]).toMatch(
      /--in-process is a switch/,
    );
    expect(check('shardline-coordinator', ['train', '--out'])[0]).toMatch(/--out needs a value/);
    expect(check('shardline-coordinator', ['train', '--out', '--resume'])[0]).toMatch(
      /--out needs a value/,
    );
  });

  it('fails on an unknown SHARDLINE_* variable, a bad value, or a bad switch word', () => {
    expect(check('shardline-worker', [], { SHARDLINE_COORDINATR: '10.0.0.5:7070' })[0]).toMatch(
      /reads no variable SHARDLINE_COORDINATR.*Did you mean SHARDLINE_COORDINATOR\?/,
    );
    expect(check('shardline-worker', [], { SHARDLINE_BACKEND: 'cuda' })[0]).toMatch(
      /SHARDLINE_BACKEND is "cuda"/,
    );
    expect(check('shardline-worker', [], { SHARDLINE_TLS: 'maybe' })[0]).toMatch(
      /sets the switch --tls/,
    );
    // Each program reads only its own settings' variables.
    expect(check('shardline-coordinator', [], { SHARDLINE_CONNECT_TIMEOUT: '5' })[0]).toMatch(
      /shardline-coordinator reads no variable SHARDLINE_CONNECT_TIMEOUT/,
    );
  });
});

describe('extracting invocations', () => {
  it('from Kubernetes containers: command, args, env; and it says when it cannot tell the CLI', () => {
    const { docs } = parseYaml(
      `apiVersion: batch/v1
kind: Job
metadata: {name: c}
spec:
  template:
    spec:
      containers:
        - name: coordinator
          image: shardline-coordinator
          command: [shardline-coordinator-job]
          args: [--listen=0.0.0.0:7070, --min-workerz=3]
        - name: sidecar
          image: registry.example.com/shardline/tools
        - name: proxy
          image: envoyproxy/envoy:v1.30
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: w}
spec:
  template:
    spec:
      containers:
        - name: worker
          image: registry.example.com/shardline/worker-gpu:1
          env: [{name: SHARDLINE_BACKEND, value: tensorflow-gpu}, {name: SHARDLINE_TLS_CAA, value: /x}]
          envFrom: [{secretRef: {name: s}}]
`,
      'inline.yaml',
    );
    const extracted = kubernetesInvocations(docs, 'inline.yaml');
    expect(extracted.invocations.map((i) => [i.cli, i.argv])).toEqual([
      ['shardline-coordinator', ['train', '--listen=0.0.0.0:7070', '--min-workerz=3']],
      ['shardline-worker', []],
    ]);
    const problems = problemsOf(extracted);
    expect(problems).toHaveLength(4);
    expect(problems.join('\n')).toMatch(/container sidecar\): cannot tell which Shardline CLI/);
    expect(problems.join('\n')).toMatch(/envFrom hides/);
    expect(problems.join('\n')).toMatch(/no option --min-workerz/);
    expect(problems.join('\n')).toMatch(/no variable SHARDLINE_TLS_CAA/);
  });

  it('from systemd units: Exec lines with prefixes, Environment= and the EnvironmentFile=', () => {
    const unit = `[Service]
Environment=SHARDLINE_TOKEN_FILE=%d/token "SHARDLINE_LOG_LEVL=info"
EnvironmentFile=-/etc/shardline/worker.env
ExecStartPre=-+/usr/bin/nvidia-modprobe -u -c=0
ExecStart=/usr/local/bin/shardline-worker --conect-timeout=600
`;
    const extracted = systemdInvocations(unit, 'x.service', (path) =>
      path === '/etc/shardline/worker.env'
        ? { text: '#SHARDLINE_BACKND=auto\n', where: 'worker.env' }
        : undefined,
    );
    expect(extracted.invocations).toHaveLength(1);
    expect(extracted.invocations[0]!.where).toBe('x.service:5');
    const problems = problemsOf(extracted).join('\n');
    expect(problems).toMatch(/no option --conect-timeout/);
    expect(problems).toMatch(/no variable SHARDLINE_LOG_LEVL/);
    // Commented-out settings count: users uncomment them.
    expect(problems).toMatch(/no variable SHARDLINE_BACKND/);
  });

  it('from Containerfiles: the final stage, its ENV lines and exec-form ENTRYPOINT/CMD', () => {
    const good = containerfileInvocations(
      'FROM node AS build\nENV SHARDLINE_NOPE=1\nFROM node\nENV A=1 \\\n    SHARDLINE_DATADIR=/data\nENTRYPOINT ["shardline-worker"]\nCMD ["--bakend", "wasm"]\n',
      'x.Containerfile',
    );
    const problems = problemsOf(good).join('\n');
    expect(problems).toMatch(/no option --bakend/);
    expect(problems).toMatch(/no variable SHARDLINE_DATADIR/);
    // The build stage's variables do not reach the image.
    expect(problems).not.toMatch(/SHARDLINE_NOPE/);
    const shellForm = containerfileInvocations(
      'FROM node\nENTRYPOINT shardline-worker\n',
      'y.Containerfile',
    );
    expect(shellForm.problems.join('\n')).toMatch(/shell form/);
  });

  it('from Markdown: prefixed variables, sh -c, kubectl exec, node paths, podman run, env-file here-documents', () => {
    const md = [
      'Text with `shardline-worker --not-checked` inline.',
      '```sh',
      'SHARDLINE_TOKEN="$(cat token)" shardline-worker --coordinator 10.0.0.5:7070 \\',
      '  --tls-cacert ca.pem 2>&1 | tee log',
      "sudo sh -c 'set -a && . /etc/x.env && exec shardline-worker doctor --backend=gpu'",
      'node apps/coordinator/dist/cli.js train --epoch 1',
      'podman run -d --rm -v a:/data -e SHARDLINE_COORDINATOR=x:1 -e SHARDLINE_NAMES=a shardline-worker-gpu --name a',
      'docker run --privileged shardline-worker-cpu',
      'kubectl -n shardline exec deploy/shardline-worker -- shardline-worker doctor --jsn',
      "sudo tee /etc/shardline/worker.env > /dev/null <<'EOF'",
      'SHARDLINE_TLS_CAFILE=/etc/shardline/ca.pem',
      'EOF',
      '```',
      '```console',
      '$ shardline-worker --bogus',
      'shardline-worker --output-line-is-not-a-command',
      '```',
    ].join('\n');
    const extracted = markdownInvocations(md, 'x.md');
    const problems = problemsOf(extracted).join('\n');
    for (const expected of [
      /no option --tls-cacert/,
      /--backend is "gpu"/,
      /train has no option --epoch\. Did you mean --epochs\?/,
      /no variable SHARDLINE_NAMES/,
      /docker run option --privileged is unknown to this checker/,
      /no variable SHARDLINE_TLS_CAFILE/,
      /no option --bogus/,
      /doctor has no option --jsn\. Did you mean --json\?/,
    ]) {
      expect(problems).toMatch(expected);
    }
    expect(problems).not.toMatch(/--not-checked|--output-line/);
    expect(problemsOf(extracted)).toHaveLength(8);
  });

  it('splits shell text into commands, keeping quotes and $(...) whole', () => {
    expect(
      shellCommands(`A="$(cat "t t")" b 'c d' && e f; g | h 2>&1\n# comment\ni \\\n  j`),
    ).toEqual([['A=$(cat "t t")', 'b', 'c d'], ['e', 'f'], ['g'], ['h', '2>&1'], ['i', 'j']]);
  });
});

describe('checking a kustomization', () => {
  it('fails on a missing resource, a forgotten manifest, a patch for nothing and a patched-in bad flag', () => {
    const base = join(dir, 'k', 'base');
    const overlay = join(dir, 'k', 'overlays', 'x');
    mkdirSync(base, { recursive: true });
    mkdirSync(overlay, { recursive: true });
    writeFileSync(join(base, 'kustomization.yaml'), 'resources: [job.yaml, missing.yaml]\n');
    writeFileSync(
      join(base, 'job.yaml'),
      'apiVersion: batch/v1\nkind: Job\nmetadata: {name: c}\nspec: {template: {spec: {containers: [{name: coordinator, image: shardline-coordinator, command: [shardline-coordinator-job]}]}}}\n',
    );
    writeFileSync(
      join(base, 'forgotten.yaml'),
      'apiVersion: v1\nkind: Service\nmetadata: {name: s}\n',
    );
    writeFileSync(
      join(overlay, 'kustomization.yaml'),
      [
        'resources: [../../base]',
        'patches:',
        '  - path: args.yaml',
        '    target: {kind: Job, name: c}',
        '  - path: other.yaml',
        '  - path: args.yaml',
        '    target: {kind: Job, name: nope}',
      ].join('\n'),
    );
    writeFileSync(
      join(overlay, 'args.yaml'),
      '- op: add\n  path: /spec/template/spec/containers/0/args/-\n  value: --helth-listen=0.0.0.0:7071\n',
    );
    writeFileSync(
      join(overlay, 'other.yaml'),
      'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: gone}\n',
    );
    const result = checkKustomization(overlay, dir);
    const problems = [
      ...result.problems,
      ...result.invocations.flatMap((i) => checkInvocation(i, specs)),
    ].join('\n');
    expect(problems).toMatch(/resource missing\.yaml does not exist/);
    expect(problems).toMatch(/forgotten\.yaml: not referenced by/);
    expect(problems).toMatch(/other\.yaml is for Deployment\/gone, which no resource/);
    expect(problems).toMatch(/targets Job\/nope, which no resource/);
    expect(problems).toMatch(/train has no option --helth-listen\. Did you mean --health-listen\?/);
  });
});

describe('the same mistakes in copies of the real files are caught', () => {
  const read = (path: string) => readFileSync(join(repo, path), 'utf8');
  const mutate = (text: string, from: string, to: string) => {
    expect(text, `the real file contains ${from}`).toContain(from);
    return text.replace(from, to);
  };

  it('the coordinator Job', () => {
    const text = mutate(
      read('deploy/kubernetes/base/coordinator-job.yaml'),
      '--min-workers=3',
      '--min-worker=3',
    );
    const problems = problemsOf(kubernetesInvocations(parseYaml(text, 'copy').docs, 'copy'));
    expect(problems.join('\n')).toMatch(/no option --min-worker\b/);
  });

  it('the worker Deployment', () => {
    const text = mutate(
      read('deploy/kubernetes/base/worker-deployment.yaml'),
      'name: SHARDLINE_COORDINATOR\n',
      'name: SHARDLINE_COORDINATORS\n',
    );
    const problems = problemsOf(kubernetesInvocations(parseYaml(text, 'copy').docs, 'copy'));
    expect(problems.join('\n')).toMatch(/no variable SHARDLINE_COORDINATORS/);
  });

  it('the worker unit and its environment file', () => {
    const unit = mutate(
      read('deploy/systemd/shardline-worker.service'),
      'SHARDLINE_TOKEN_FILE=',
      'SHARDLINE_TOKENFILE=',
    );
    const env = mutate(
      read('deploy/systemd/worker.env'),
      'SHARDLINE_BACKEND=auto',
      'SHARDLINE_BACKEND=automatic',
    );
    const problems = problemsOf(
      systemdInvocations(unit, 'copy', () => ({ text: env, where: 'env' })),
    ).join('\n');
    expect(problems).toMatch(/no variable SHARDLINE_TOKENFILE/);
    expect(problems).toMatch(/SHARDLINE_BACKEND is "automatic"/);
  });

  it('the GPU Containerfile and the deployment guide', () => {
    const file = mutate(
      read('deploy/containers/worker-gpu.Containerfile'),
      'SHARDLINE_DATA_DIR=/data',
      'SHARDLINE_DATADIR=/data',
    );
    expect(problemsOf(containerfileInvocations(file, 'copy')).join('\n')).toMatch(
      /no variable SHARDLINE_DATADIR/,
    );
    const guide = mutate(read('docs/deployment.md'), '--tls-ca ca.pem', '--tls-cafile ca.pem');
    expect(problemsOf(markdownInvocations(guide, 'copy')).join('\n')).toMatch(
      /no option --tls-cafile/,
    );
  });
});
