/**
 * The deployment files (deploy/, docs/deployment.md, the README's commands) checked offline
 * against the real CLIs: base images cannot be pulled here and there is no cluster, so this is
 * what can be known without them. Every YAML file parses; kustomizations reference files that
 * exist; and every flag and SHARDLINE_* variable that a manifest, patch, unit, env file,
 * Containerfile or documented command passes to shardline-coordinator or shardline-worker is
 * one that the built CLI's --help lists, with a value among its choices. Where kubectl (or
 * kustomize) and systemd-analyze are installed, the overlays are rendered and checked whole,
 * and the units verified.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkInvocation, type Invocation } from './checkInvocation.js';
import { CLI_PATHS, type CliName, type CommandSpec, loadCliSpec } from './cliSpec.js';
import {
  containerfileInvocations,
  type Extracted,
  kubernetesInvocations,
  markdownInvocations,
  parseEnvFile,
  parseYaml,
  systemdInvocations,
} from './extract.js';
import { checkKustomization, includes, kustomizationDirs } from './kustomize.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const at = (...parts: string[]) => join(repo, ...parts);
const rel = (path: string) => relative(repo, path);

function walk(dir: string, keep: (path: string) => boolean): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) =>
      e.isDirectory()
        ? walk(join(dir, e.name), keep)
        : keep(join(dir, e.name))
          ? [join(dir, e.name)]
          : [],
    )
    .sort();
}

const deployFiles = walk(at('deploy'), () => true);
const yamlFiles = deployFiles.filter((f) => /\.ya?ml$/.test(f));
const kubernetesRoot = at('deploy', 'kubernetes');

let specs: Record<CliName, CommandSpec>;

beforeAll(() => {
  for (const [cli, path] of Object.entries(CLI_PATHS)) {
    expect(
      existsSync(path),
      `${cli} is not built (${rel(path)}): run \`npx -y pnpm@12.4.2 run build\` first`,
    ).toBe(true);
  }
  specs = {
    'shardline-coordinator': loadCliSpec('shardline-coordinator'),
    'shardline-worker': loadCliSpec('shardline-worker'),
  };
});

/** Checks extracted invocations; returns every problem, the extractor's own included. */
function problemsOf(extracted: Extracted): string[] {
  return [
    ...extracted.problems,
    ...extracted.invocations.flatMap((i) => checkInvocation(i, specs)),
  ];
}

/** Whether a YAML document list is a JSON 6902 patch (a list of operations). */
const isJsonPatch = (docs: unknown[]) => Array.isArray(docs[0]);
const isKustomization = (file: string) => /^kustomization\.ya?ml$/.test(basename(file));

/** Every Kubernetes manifest and strategic-merge patch under deploy/kubernetes. */
function kubernetesManifests(): Array<{ file: string; docs: unknown[] }> {
  return yamlFiles
    .filter((f) => f.startsWith(kubernetesRoot) && !isKustomization(f))
    .map((file) => ({ file, docs: parseYaml(readFileSync(file, 'utf8'), rel(file)).docs }))
    .filter(({ docs }) => !isJsonPatch(docs));
}

describe('deployment files parse', () => {
  it('finds the files this test is about', () => {
    // So that a moved folder fails here instead of silently checking nothing.
    for (const path of [
      'deploy/containers/coordinator.Containerfile',
      'deploy/containers/worker-cpu.Containerfile',
      'deploy/containers/worker-gpu.Containerfile',
      'deploy/kubernetes/base/kustomization.yaml',
      'deploy/kubernetes/overlays/cpu/kustomization.yaml',
      'deploy/kubernetes/overlays/gpu-tls/kustomization.yaml',
      'deploy/systemd/shardline-worker.service',
      'deploy/systemd/worker.env',
      'deploy/bin/shardline-coordinator-job',
      'docs/deployment.md',
    ]) {
      expect(existsSync(at(path)), path).toBe(true);
    }
  });

  it('every YAML file under deploy/ parses', () => {
    expect(yamlFiles.length).toBeGreaterThan(5);
    const problems = yamlFiles.flatMap((f) => parseYaml(readFileSync(f, 'utf8'), rel(f)).problems);
    expect(problems).toEqual([]);
  });

  it('every Kubernetes object has apiVersion, kind and metadata.name', () => {
    const problems: string[] = [];
    for (const { file, docs } of kubernetesManifests()) {
      for (const doc of docs) {
        const d = doc as { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown } };
        if (
          typeof d?.apiVersion !== 'string' ||
          typeof d.kind !== 'string' ||
          typeof d.metadata?.name !== 'string'
        ) {
          problems.push(`${rel(file)}: an object without apiVersion, kind or metadata.name`);
        }
      }
    }
    expect(problems).toEqual([]);
  });
});

describe('kustomize', () => {
  const dirs = kustomizationDirs(kubernetesRoot);

  it('has a base and the overlays, and each overlay builds on the base', () => {
    const names = dirs.map((d) => rel(d));
    expect(names).toEqual(
      expect.arrayContaining([
        'deploy/kubernetes/base',
        'deploy/kubernetes/overlays/cpu',
        'deploy/kubernetes/overlays/gpu-tls',
      ]),
    );
    for (const overlay of dirs.filter((d) => rel(d).startsWith('deploy/kubernetes/overlays/'))) {
      expect(
        includes(overlay, join(kubernetesRoot, 'base')),
        `${rel(overlay)} includes ../../base`,
      ).toBe(true);
    }
  });

  it.each(dirs.map((d) => [rel(d), d]))(
    '%s: references exist, every manifest is referenced, patches name real resources and add valid flags',
    (_, dir) => {
      const result = checkKustomization(dir, repo);
      const problems = [
        ...result.problems,
        ...result.invocations.flatMap((i) => checkInvocation(i, specs)),
      ];
      expect(problems).toEqual([]);
    },
  );

  it('the gpu-tls overlay adds its coordinator flags through a JSON patch that the check reads', () => {
    const result = checkKustomization(join(kubernetesRoot, 'overlays', 'gpu-tls'), repo);
    const added = result.invocations.flatMap((i) => i.argv);
    expect(added).toEqual(
      expect.arrayContaining([
        '--health-listen=0.0.0.0:7071',
        '--tls-cert=/etc/shardline/tls/tls.crt',
      ]),
    );
  });
});

describe('every flag and SHARDLINE_* variable exists in the CLI that receives it', () => {
  it('Kubernetes manifests and strategic-merge patches', () => {
    const extracted = kubernetesManifests().map(({ file, docs }) =>
      kubernetesInvocations(docs, rel(file)),
    );
    const all: Extracted = {
      invocations: extracted.flatMap((e) => e.invocations),
      problems: extracted.flatMap((e) => e.problems),
    };
    // The coordinator Job, the worker Deployment and the GPU patch's worker at least.
    const seen = new Set(all.invocations.map((i) => `${i.cli} ${i.where.split(' ')[0]}`));
    expect([...seen]).toEqual(
      expect.arrayContaining([
        'shardline-coordinator deploy/kubernetes/base/coordinator-job.yaml',
        'shardline-worker deploy/kubernetes/base/worker-deployment.yaml',
        'shardline-worker deploy/kubernetes/overlays/gpu-tls/worker-gpu.yaml',
      ]),
    );
    expect(problemsOf(all)).toEqual([]);
  });

  it('systemd units, with the environment files they load', () => {
    const units = deployFiles.filter((f) => f.endsWith('.service'));
    const extracted = units.map((file) =>
      systemdInvocations(readFileSync(file, 'utf8'), rel(file), (installed) => {
        // /etc/shardline/worker.env is installed from deploy/systemd/worker.env.
        const example = join(at('deploy', 'systemd'), basename(installed));
        return existsSync(example)
          ? { text: readFileSync(example, 'utf8'), where: rel(example) }
          : undefined;
      }),
    );
    const invocations = extracted.flatMap((e) => e.invocations);
    expect(invocations.map((i) => i.cli).sort()).toEqual([
      'shardline-coordinator',
      'shardline-worker',
    ]);
    // The worker's unit carries its env file's settings into the check.
    expect(invocations.find((i) => i.cli === 'shardline-worker')!.env).toHaveProperty(
      'SHARDLINE_COORDINATOR',
    );
    expect(problemsOf({ invocations, problems: extracted.flatMap((e) => e.problems) })).toEqual([]);
  });

  it('environment files, commented-out settings included', () => {
    const files = deployFiles.filter((f) => f.endsWith('.env'));
    expect(files.length).toBeGreaterThan(0);
    const invocations: Invocation[] = files.map((file) => {
      const cli: CliName = /coordinator/.test(basename(file))
        ? 'shardline-coordinator'
        : 'shardline-worker';
      const env: Record<string, string> = {};
      for (const e of parseEnvFile(readFileSync(file, 'utf8'))) env[e.name] = e.value;
      return { where: rel(file), cli, argv: [], env };
    });
    expect(problemsOf({ invocations, problems: [] })).toEqual([]);
  });

  it('Containerfiles: ENTRYPOINT, CMD and ENV of the final stage', () => {
    const files = deployFiles.filter((f) => f.endsWith('.Containerfile'));
    expect(files.map(rel).sort()).toEqual([
      'deploy/containers/coordinator.Containerfile',
      'deploy/containers/worker-cpu.Containerfile',
      'deploy/containers/worker-gpu.Containerfile',
    ]);
    const extracted = files.map((f) => containerfileInvocations(readFileSync(f, 'utf8'), rel(f)));
    const invocations = extracted.flatMap((e) => e.invocations);
    expect(invocations.map((i) => i.cli)).toEqual([
      'shardline-coordinator',
      'shardline-worker',
      'shardline-worker',
    ]);
    for (const i of invocations) expect(i.env).toHaveProperty('SHARDLINE_DATA_DIR', '/data');
    expect(problemsOf({ invocations, problems: extracted.flatMap((e) => e.problems) })).toEqual([]);
  });

  it('commands in docs/deployment.md, the README and deploy/**/*.md', () => {
    const files = [
      at('docs', 'deployment.md'),
      at('README.md'),
      ...deployFiles.filter((f) => f.endsWith('.md')),
    ];
    const extracted = files.map((f) => markdownInvocations(readFileSync(f, 'utf8'), rel(f)));
    const invocations = extracted.flatMap((e) => e.invocations);
    // The guide starts a coordinator and workers several ways (plain, container, unit).
    const inGuide = invocations.filter((i) => i.where.startsWith('docs/deployment.md'));
    expect(inGuide.filter((i) => i.cli === 'shardline-coordinator').length).toBeGreaterThanOrEqual(
      2,
    );
    expect(inGuide.filter((i) => i.cli === 'shardline-worker').length).toBeGreaterThanOrEqual(2);
    expect(problemsOf({ invocations, problems: extracted.flatMap((e) => e.problems) })).toEqual([]);
  });
});

describe('links of the deployment documents', () => {
  /** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
  const slug = (heading: string) =>
    heading
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');

  it('every relative link and anchor in docs/deployment.md and deploy/**/*.md leads somewhere', () => {
    const documents = [
      at('docs', 'deployment.md'),
      ...deployFiles.filter((f) => f.endsWith('.md')),
    ];
    const broken: string[] = [];
    for (const file of documents) {
      const text = readFileSync(file, 'utf8').replace(/```[\s\S]*?```/g, '');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const link = m[1]!;
        if (/^[a-z]+:/.test(link)) continue;
        const [path, anchor] = link.split('#') as [string, string | undefined];
        const target = path === '' ? file : join(file, '..', path);
        if (!existsSync(target)) {
          broken.push(`${rel(file)}: ${link} (no ${rel(target)})`);
          continue;
        }
        if (anchor !== undefined && target.endsWith('.md')) {
          const headings = [...readFileSync(target, 'utf8').matchAll(/^#{1,6} (.+)$/gm)].map((h) =>
            slug(h[1]!),
          );
          if (!headings.includes(anchor))
            broken.push(`${rel(file)}: ${link} (no heading #${anchor} in ${rel(target)})`);
        }
      }
    }
    expect(broken).toEqual([]);
  });
});

describe('what the manifests reference exists or is documented', () => {
  const docs = kubernetesManifests().flatMap(({ docs }) => docs);

  /** Values of `key` anywhere under objects whose parent key is `parent`. */
  function namesUnder(
    node: unknown,
    parent: string,
    key: string,
    found = new Set<string>(),
    within = false,
  ): Set<string> {
    if (Array.isArray(node)) for (const n of node) namesUnder(n, parent, key, found, within);
    else if (typeof node === 'object' && node !== null) {
      for (const [k, v] of Object.entries(node)) {
        if (within && k === key && typeof v === 'string') found.add(v);
        namesUnder(v, parent, key, found, k === parent);
      }
    }
    return found;
  }

  it('every Secret and ConfigMap they read has its create command in deploy/kubernetes/README.md', () => {
    const readme = readFileSync(join(kubernetesRoot, 'README.md'), 'utf8');
    const secrets = new Set([
      ...namesUnder(docs, 'secretKeyRef', 'name'),
      ...namesUnder(docs, 'secret', 'secretName'),
    ]);
    const configMaps = new Set([
      ...namesUnder(docs, 'configMapKeyRef', 'name'),
      ...namesUnder(docs, 'configMap', 'name'),
    ]);
    expect([...secrets].sort()).toEqual(['shardline-coordinator-tls', 'shardline-token']);
    const missing = [
      ...[...secrets].filter(
        (n) => !new RegExp(`kubectl -n shardline create secret (generic|tls) ${n} `).test(readme),
      ),
      ...[...configMaps].filter(
        (n) => !new RegExp(`kubectl -n shardline create configmap ${n} `).test(readme),
      ),
    ];
    expect(missing).toEqual([]);
  });

  it('every PersistentVolumeClaim they mount is defined', () => {
    const claims = namesUnder(docs, 'persistentVolumeClaim', 'claimName');
    const defined = new Set(
      docs
        .filter((d) => (d as { kind?: string }).kind === 'PersistentVolumeClaim')
        .map((d) => (d as { metadata: { name: string } }).metadata.name),
    );
    expect(claims.size).toBeGreaterThan(0);
    expect([...claims].filter((c) => !defined.has(c))).toEqual([]);
  });
});

/** kubectl kustomize, or kustomize build; undefined when neither is installed. */
function findRenderer(): ((dir: string) => string) | undefined {
  const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' });
  if (run('kubectl', ['version', '--client']).status === 0) {
    return (dir) => {
      const r = run('kubectl', ['kustomize', dir]);
      if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${r.stderr}`);
      return r.stdout;
    };
  }
  if (run('kustomize', ['version']).status === 0) {
    return (dir) => {
      const r = run('kustomize', ['build', dir]);
      if (r.status !== 0) throw new Error(`kustomize build ${dir} failed: ${r.stderr}`);
      return r.stdout;
    };
  }
  return undefined;
}

const render = findRenderer();
const overlays = kustomizationDirs(join(kubernetesRoot, 'overlays'));

describe.skipIf(render === undefined)(
  `rendered overlays (${render ? 'kubectl kustomize' : 'skipped: neither kubectl nor kustomize is installed'})`,
  () => {
    /** The parts of rendered objects these checks read. */
    interface Probe {
      grpc?: { port: number; service?: string };
    }
    interface EnvVar {
      name: string;
      value?: string;
      valueFrom?: unknown;
    }
    interface Container {
      name: string;
      command?: string[];
      args?: string[];
      env?: EnvVar[];
      ports?: Array<{ name?: string; containerPort: number }>;
      volumeMounts?: Array<{ name: string; mountPath: string }>;
      resources?: { limits?: Record<string, string | number> };
      startupProbe?: Probe;
      readinessProbe?: Probe;
      livenessProbe?: Probe;
    }
    interface Volume {
      name: string;
      secret?: { secretName: string; items?: Array<{ key: string; path: string }> };
    }
    interface PodSpec {
      containers: Container[];
      volumes?: Volume[];
    }
    interface Obj {
      kind: string;
      metadata: { name: string };
      spec: {
        replicas?: number;
        selector?: Record<string, unknown>;
        ports?: Array<{ port: number; targetPort?: number | string }>;
        template?: { metadata?: { labels?: Record<string, string> }; spec: PodSpec };
      };
    }
    /**
     * Where a container's token comes from, as `<secret>/<key>`: SHARDLINE_TOKEN from a
     * secretKeyRef, or SHARDLINE_TOKEN_FILE naming a file of a mounted Secret volume.
     */
    const tokenSource = (pod: PodSpec, c: Container): string | undefined => {
      const variable = c.env?.find((e) => e.name === 'SHARDLINE_TOKEN')?.valueFrom as
        | { secretKeyRef?: { name: string; key: string } }
        | undefined;
      if (variable?.secretKeyRef)
        return `${variable.secretKeyRef.name}/${variable.secretKeyRef.key}`;
      const file = c.env?.find((e) => e.name === 'SHARDLINE_TOKEN_FILE')?.value;
      if (file === undefined) return undefined;
      const mount = c.volumeMounts?.find((m) => file.startsWith(`${m.mountPath}/`));
      const secret = pod.volumes?.find((v) => v.name === mount?.name)?.secret;
      if (!mount || !secret) return undefined;
      const path = file.slice(mount.mountPath.length + 1);
      const key = secret.items ? secret.items.find((i) => i.path === path)?.key : path;
      return key === undefined ? undefined : `${secret.secretName}/${key}`;
    };
    const rendered = (dir: string): Obj[] => parseYaml(render!(dir), rel(dir)).docs as Obj[];
    const find = (objs: Obj[], kind: string, name: string): Obj => {
      const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
      expect(o, `${kind}/${name}`).toBeDefined();
      return o!;
    };
    const containerOf = (o: Obj): Container => o.spec.template!.spec.containers[0]!;
    const envOf = (c: Container): Record<string, string | undefined> =>
      Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
    /** The value of `--flag` in an argv (`--flag=v` or `--flag v`). */
    const flagValue = (argv: string[], flag: string): string | undefined => {
      for (let i = 0; i < argv.length; i++) {
        if (argv[i] === flag) return argv[i + 1];
        if (argv[i]!.startsWith(`${flag}=`)) return argv[i]!.slice(flag.length + 1);
      }
      return undefined;
    };
    const port = (address: string | undefined) =>
      address ? Number(address.slice(address.lastIndexOf(':') + 1)) : undefined;
    const coordinatorService = /COORDINATOR_SERVICE = '([^']+)'/.exec(
      readFileSync(at('apps', 'coordinator', 'src', 'distributed', 'trainDistributed.ts'), 'utf8'),
    )![1]!;

    it.each(overlays.map((d) => [rel(d), d]))(
      '%s: every container is valid for its CLI',
      (_, dir) => {
        const e = kubernetesInvocations(rendered(dir), rel(dir));
        expect(e.invocations.length).toBeGreaterThanOrEqual(2);
        expect(problemsOf(e)).toEqual([]);
      },
    );

    it.each(overlays.map((d) => [rel(d), d]))('%s: the parts agree with each other', (_, dir) => {
      const objs = rendered(dir);
      const job = find(objs, 'Job', 'shardline-coordinator');
      const workers = find(objs, 'Deployment', 'shardline-worker');
      const service = find(objs, 'Service', 'shardline-coordinator');
      const coordinator = containerOf(job);
      const worker = containerOf(workers);
      const argv = [...(coordinator.command ?? []).slice(1), ...(coordinator.args ?? [])];
      const listenPort = port(flagValue(argv, '--listen'));
      const healthPort = port(flagValue(argv, '--health-listen'));
      const tls = flagValue(argv, '--tls-cert') !== undefined;
      const env = envOf(worker);
      const servicePort = service.spec.ports![0]!;

      // Steps wait for --min-workers: more than the replicas and the job never starts.
      expect(Number(flagValue(argv, '--min-workers'))).toBeLessThanOrEqual(workers.spec.replicas!);
      // Workers dial the Service, which reaches the coordinator's --listen port.
      expect(env.SHARDLINE_COORDINATOR).toBe(`${service.metadata.name}:${servicePort.port}`);
      const target = servicePort.targetPort;
      const targetPort =
        typeof target === 'number'
          ? target
          : coordinator.ports?.find((p) => p.name === target)?.containerPort;
      expect(targetPort).toBe(listenPort);
      for (const [k, v] of Object.entries(service.spec.selector!)) {
        expect(job.spec.template!.metadata!.labels![k]).toBe(v);
      }
      // A TLS coordinator needs workers that speak TLS.
      if (tls) expect(env.SHARDLINE_TLS_CA ?? env.SHARDLINE_TLS).toBeDefined();
      // The same token on both sides (a variable on the coordinator, a file on the workers).
      const coordinatorToken = tokenSource(job.spec.template!.spec, coordinator);
      expect(coordinatorToken).toBeDefined();
      expect(tokenSource(workers.spec.template!.spec, worker)).toBe(coordinatorToken);
      // Probes reach the health service: on --health-listen, or on --listen only while it is
      // plaintext (kubelet gRPC probes speak neither TLS nor tokens).
      for (const name of ['startupProbe', 'readinessProbe', 'livenessProbe'] as const) {
        const grpc = coordinator[name]?.grpc;
        expect(grpc, `${rel(dir)}: ${name}`).toBeDefined();
        const allowed = [healthPort, tls ? undefined : listenPort].filter((p) => p !== undefined);
        expect(allowed, `${rel(dir)}: ${name} on port ${grpc!.port}`).toContain(grpc!.port);
        expect(['', coordinatorService]).toContain(grpc!.service ?? '');
      }
      expect(coordinator.readinessProbe?.grpc?.service).toBe(coordinatorService);
      // Workers on the GPU backend get a GPU.
      if (env.SHARDLINE_BACKEND === 'tensorflow-gpu') {
        expect(Number(worker.resources?.limits?.['nvidia.com/gpu'])).toBeGreaterThanOrEqual(1);
      }
    });
  },
);

const systemdAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

describe.skipIf(!systemdAnalyze)(
  `systemd units (${systemdAnalyze ? 'systemd-analyze verify' : 'skipped: systemd-analyze is not installed'})`,
  () => {
    it.each(deployFiles.filter((f) => f.endsWith('.service')).map((f) => [rel(f), f]))(
      '%s',
      (_, file) => {
        const r = spawnSync('systemd-analyze', ['verify', '--man=no', file], { encoding: 'utf8' });
        const lines = `${r.stdout}\n${r.stderr}`
          .split('\n')
          .filter((l) => l.trim() !== '')
          // Not installed here: the Shardline executables themselves.
          .filter((l) => !/Command \S*shardline-[a-z-]+ is not executable/.test(l))
          // Directives of systemd 254 and later, ignored (with this warning) by older ones.
          .filter((l) => !/Unknown key '(RestartSteps|RestartMaxDelaySec)'/.test(l));
        expect(lines).toEqual([]);
      },
    );
  },
);
