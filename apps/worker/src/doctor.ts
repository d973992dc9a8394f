/**
 * `shardline-worker doctor`: what this machine would train with and why, for the operator of
 * a worker node. It runs the real backend choice (core's selectBackend, as a worker does), loads
 * each native TensorFlow package in a child process to get its exact load error, looks at the
 * GPUs, the CUDA libraries and the JIT cache from outside TensorFlow, and, when a coordinator
 * is configured, asks its health service. Problems (the worker could not train, or could not
 * reach the coordinator) make the exit status non-zero; warnings do not.
 */
import { release } from 'node:os';
import {
  type BackendAttempt,
  type BackendName,
  createLogger,
  type Logger,
  parseBackendPreference,
  selectBackend,
  toShardlineError,
} from '@shardline/core';
import { CRC32_IMPLEMENTATION } from '@shardline/protocol';
import { describeSource, type ResolvedWorkerConfig } from './config.js';
import { type CoordinatorCheck, checkCoordinator } from './coordinatorCheck.js';
import {
  CUDA_CACHE_MINIMUM,
  CUDA_CACHE_RECOMMENDED,
  type CudaCacheReport,
  compareVersions,
  compilesPtxAtStartup,
  findSharedLibraries,
  type GpuReport,
  inspectCudaCache,
  inspectGpus,
  type LibraryLookup,
  TFJS_NODE_GPU_REQUIREMENTS,
} from './gpuEnvironment.js';
import {
  NATIVE_PACKAGES,
  type NativePackage,
  type NativePackageProbe,
  probeNativePackage,
} from './nativeProbe.js';
import { readWorkerSecurityFlags } from './security.js';

/** Everything doctor found; `--json` prints exactly this. */
export interface DoctorReport {
  /** The @shardline/worker version. */
  version: string;
  /** True when the worker could train here (and reach its coordinator, when one is set). */
  ok: boolean;
  /** Why it could not; each says what to do. */
  problems: string[];
  /** What works but deserves attention. */
  warnings: string[];
  backend: {
    requested: string;
    /** Where the request came from: `default`, `flag --backend`, `env SHARDLINE_BACKEND`, ... */
    requestedFrom: string;
    chosen?: BackendName;
    tfBackend?: string;
    /** Every backend considered, in order, with why it was chosen or skipped. */
    attempts: BackendAttempt[];
    /** Why the requested backend is unavailable, when it is. */
    error?: string;
  };
  gpus: GpuReport;
  nativePackages: NativePackageProbe[];
  cuda: {
    requirements: typeof TFJS_NODE_GPU_REQUIREMENTS;
    libraries: LibraryLookup[];
    cache: CudaCacheReport & { recommended: number; minimum: number };
  };
  runtime: {
    node: string;
    napi: string;
    platform: string;
    arch: string;
    kernel: string;
    /** The tensor checksum's implementation: `crc32-simd`, `crc32-zlib` or `crc32-portable`. */
    checksum: string;
  };
  /** Absent when no coordinator is configured. */
  coordinator?: CoordinatorCheck;
}

/** Options of {@link runDoctor}. */
export interface DoctorOptions {
  config: ResolvedWorkerConfig;
  version: string;
  env?: NodeJS.ProcessEnv;
  /** Deadline of each call to the coordinator. */
  coordinatorTimeoutMs: number;
  /** Limit for loading each native package (default 300 s: a first GPU start compiles PTX). */
  nativeProbeTimeoutMs?: number;
}

function sourceOf(config: ResolvedWorkerConfig, key: 'backend'): string {
  const entry = config.entries.find((e) => e.key === key);
  return entry ? describeSource(entry.source) : 'default';
}

const PACKAGE_OF: Partial<Record<BackendName, NativePackage>> = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
};

/**
 * Runs every check and returns the report. Never throws for what it finds: failures become
 * problems in the report.
 *
 * @example
 * ```ts
 * const report = await runDoctor({ config, version: '0.1.0', coordinatorTimeoutMs: 5000 });
 * process.stdout.write(formatDoctorReport(report));
 * ```
 */
export async function runDoctor(options: DoctorOptions): Promise<DoctorReport> {
  const env = options.env ?? process.env;
  const { settings } = options.config;
  const problems: string[] = [];
  const warnings: string[] = [];
  // Warnings the checks log (a token about to travel in clear text) belong in the report.
  const collector: Logger = createLogger({
    level: 'warn',
    format: 'json',
    sink: { write: (line) => warnings.push(String(JSON.parse(line).msg)) },
  });

  // Child processes first: they must not inherit a "tensorflow" backend this process loaded.
  const nativePackages: NativePackageProbe[] = [];
  for (const pkg of NATIVE_PACKAGES) {
    nativePackages.push(
      await probeNativePackage(pkg, {
        env,
        ...(options.nativeProbeTimeoutMs ? { timeoutMs: options.nativeProbeTimeoutMs } : {}),
      }),
    );
  }
  const [gpus, libraries] = await Promise.all([inspectGpus(env), findSharedLibraries({ env })]);
  const cache = inspectCudaCache(env);

  const preference = parseBackendPreference(settings.backend);
  const backend: DoctorReport['backend'] = {
    requested: preference,
    requestedFrom: sourceOf(options.config, 'backend'),
    attempts: [],
  };
  try {
    const selection = await selectBackend(preference, {
      detectGpus: () => gpus.visible,
    });
    backend.chosen = selection.backend;
    backend.tfBackend = selection.tfBackend;
    backend.attempts = selection.attempts;
  } catch (error) {
    const e = toShardlineError(error);
    backend.error = e.message;
    backend.attempts = (e.details.attempts as BackendAttempt[] | undefined) ?? [];
    const pkg = PACKAGE_OF[preference as BackendName];
    const probe = nativePackages.find((p) => p.package === pkg);
    const more =
      probe && !probe.loaded && !e.message.includes(probe.error ?? '\u0000')
        ? ` Besides, ${pkg} itself does not load here (${probe.error?.replace(/\.$/, '')}): ${probe.diagnosis}`
        : '';
    problems.push(`${e.message}${more}`);
  }

  const gpuProbe = nativePackages.find((p) => p.package === '@tensorflow/tfjs-node-gpu')!;
  const explicitGpu = preference === 'tensorflow-gpu';
  if (backend.chosen === 'tensorflow-gpu' && gpuProbe.loaded) {
    const missing = gpuProbe.missingLibraries;
    if (missing.length > 0 || gpuProbe.gpuDevices.length === 0) {
      const why =
        missing.length > 0
          ? `libtensorflow could not open ${missing.map((m) => `${m.library} (${m.error})`).join(', ')}`
          : 'libtensorflow created no GPU device';
      const message = `tensorflow-gpu loads, but ${why}, so it computes on the CPU. Put the CUDA ${TFJS_NODE_GPU_REQUIREMENTS.cuda} and cuDNN ${TFJS_NODE_GPU_REQUIREMENTS.cudnn} libraries on LD_LIBRARY_PATH (see "GPU worker nodes" in the README).`;
      (explicitGpu ? problems : warnings).push(message);
    }
  }
  if (gpus.visible.count > 0) {
    if (!gpuProbe.loaded && preference === 'auto') {
      warnings.push(
        `A GPU is visible but ${gpuProbe.package} does not load (${gpuProbe.error}), so auto falls back to ${backend.chosen ?? 'another backend'}: ${gpuProbe.diagnosis}`,
      );
    }
    for (const lib of libraries) {
      if (lib.found.length > 0) continue;
      const hint =
        lib.offPath.length > 0
          ? ` It exists at ${lib.offPath.join(', ')}, which is not on the library path: add that folder to LD_LIBRARY_PATH.`
          : ` Install the ${lib.what} libraries (CUDA ${TFJS_NODE_GPU_REQUIREMENTS.cuda}, cuDNN ${TFJS_NODE_GPU_REQUIREMENTS.cudnn}) and put their folder on LD_LIBRARY_PATH.`;
      warnings.push(
        `${lib.name} (${lib.what}) is not on the library path, so tensorflow-gpu cannot use the GPU.${hint}`,
      );
    }
    if (
      gpus.driverCudaVersion !== undefined &&
      compareVersions(gpus.driverCudaVersion, TFJS_NODE_GPU_REQUIREMENTS.cuda) < 0
    ) {
      warnings.push(
        `The NVIDIA driver ${gpus.driverVersion ?? ''} supports CUDA up to ${gpus.driverCudaVersion}; libtensorflow ${TFJS_NODE_GPU_REQUIREMENTS.libtensorflow} needs a driver for CUDA ${TFJS_NODE_GPU_REQUIREMENTS.cuda} or newer. Update the driver.`,
      );
    }
    const jitGpus = gpus.devices.filter((d) => compilesPtxAtStartup(d) === true);
    if (jitGpus.length > 0 && !cache.largeEnough) {
      const now = cache.disabled
        ? 'CUDA_CACHE_DISABLE=1 turns the cache off'
        : cache.raw === undefined
          ? 'CUDA_CACHE_MAXSIZE is not set'
          : `CUDA_CACHE_MAXSIZE=${cache.raw} is below ${CUDA_CACHE_MINIMUM}`;
      warnings.push(
        `${jitGpus[0]!.name} (compute capability ${jitGpus[0]!.computeCapability}) is newer than CUDA ${TFJS_NODE_GPU_REQUIREMENTS.cuda}, so libtensorflow compiles its kernels from PTX at start-up, which can take many minutes; ${now}, so every start compiles again. Set CUDA_CACHE_MAXSIZE=${CUDA_CACHE_RECOMMENDED} (and keep CUDA_CACHE_PATH, default ~/.nv/ComputeCache, on persistent storage).`,
      );
    }
  }

  if (CRC32_IMPLEMENTATION !== 'simd') {
    warnings.push(
      `Tensor checksums use ${CRC32_IMPLEMENTATION === 'zlib' ? "Node's zlib" : 'JavaScript'} CRC-32, 2.5 times slower or more than @node-rs/crc32, which is missing: it has no binary for ${process.platform} ${process.arch}, or optional dependencies were left out (npm --omit=optional). Reinstall @shardline/worker with optional dependencies where a binary exists.`,
    );
  }

  let coordinator: CoordinatorCheck | undefined;
  if (settings.coordinator !== undefined) {
    coordinator = await checkCoordinator({
      address: settings.coordinator,
      security: readWorkerSecurityFlags({ ...settings }),
      timeoutMs: options.coordinatorTimeoutMs,
      logger: collector,
    });
    if (!coordinator.ok && coordinator.error) problems.push(coordinator.error);
  }

  return {
    version: options.version,
    ok: problems.length === 0,
    problems,
    warnings,
    backend,
    gpus,
    nativePackages,
    cuda: {
      requirements: TFJS_NODE_GPU_REQUIREMENTS,
      libraries,
      cache: { ...cache, recommended: CUDA_CACHE_RECOMMENDED, minimum: CUDA_CACHE_MINIMUM },
    },
    runtime: {
      node: process.version,
      napi: process.versions.napi ?? 'unknown',
      platform: process.platform,
      arch: process.arch,
      kernel: release(),
      checksum: `crc32-${CRC32_IMPLEMENTATION}`,
    },
    ...(coordinator ? { coordinator } : {}),
  };
}

function table(rows: Array<[string, string]>, indent = '  '): string[] {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${indent}${k.padEnd(width)}  ${v}`.trimEnd());
}

/** The report as text for a terminal: one section per check, then the verdict. */
export function formatDoctorReport(report: DoctorReport): string {
  const out: string[] = [`shardline-worker doctor ${report.version}`, ''];

  out.push('Compute backend');
  const b = report.backend;
  const rows: Array<[string, string]> = [['requested', `${b.requested} (${b.requestedFrom})`]];
  for (const a of b.attempts) rows.push([a.outcome, `${a.backend}: ${a.reason}`]);
  if (b.error) rows.push(['unavailable', b.error]);
  out.push(...table(rows), '');

  out.push('GPUs');
  const g = report.gpus;
  const gpuRows: Array<[string, string]> = [
    ['visible', `${g.visible.count} (${g.visible.source})`],
  ];
  for (const d of g.devices) {
    const cc = d.computeCapability ? `, compute capability ${d.computeCapability}` : '';
    const mem = d.memoryMiB !== undefined ? `, ${d.memoryMiB} MiB` : '';
    gpuRows.push([`GPU ${d.index}`, `${d.name}${cc}${mem}`]);
  }
  if (g.driverVersion) {
    gpuRows.push([
      'driver',
      `${g.driverVersion}${g.driverCudaVersion ? ` (supports CUDA up to ${g.driverCudaVersion})` : ''}`,
    ]);
  }
  if (g.nvidiaSmiError) gpuRows.push(['nvidia-smi', g.nvidiaSmiError]);
  out.push(...table(gpuRows), '');

  out.push('Native TensorFlow packages');
  for (const p of report.nativePackages) {
    const state = p.loaded
      ? `loads (${(p.elapsedMs / 1000).toFixed(1)} s)`
      : p.installed
        ? 'does not load'
        : 'not installed';
    out.push(`  ${p.package}${p.version ? ` ${p.version}` : ''}: ${state}`);
    const detail: Array<[string, string]> = [];
    if (p.error && p.installed) detail.push(['error', p.error]);
    if (p.diagnosis) detail.push(['why', p.diagnosis]);
    if (p.directory) detail.push(['folder', p.directory]);
    for (const device of p.gpuDevices) detail.push(['GPU device', device]);
    for (const m of p.missingLibraries) detail.push(['not opened', `${m.library}: ${m.error}`]);
    out.push(...table(detail, '    '));
  }
  out.push('');

  const r = report.cuda.requirements;
  out.push(
    `CUDA for @tensorflow/tfjs-node-gpu (libtensorflow ${r.libtensorflow}, built for CUDA ${r.cuda} and cuDNN ${r.cudnn})`,
  );
  const cudaRows: Array<[string, string]> = report.cuda.libraries.map((l) => [
    l.name,
    l.found.length > 0
      ? `found: ${l.found.join(', ')}`
      : `not found (searched ${l.searched.join('; ')})${l.offPath.length > 0 ? `; exists off the path at ${l.offPath.join(', ')}` : ''}`,
  ]);
  const c = report.cuda.cache;
  cudaRows.push([
    'CUDA_CACHE_MAXSIZE',
    `${c.raw === undefined ? 'not set' : c.raw}${c.disabled ? ' (CUDA_CACHE_DISABLE=1: cache off)' : ''}${c.largeEnough ? '' : `; for GPUs that compile PTX at start-up (Hopper and newer) set ${c.recommended}`}`,
  ]);
  out.push(...table(cudaRows), '');

  out.push('Runtime');
  const rt = report.runtime;
  out.push(
    ...table([
      ['Node.js', `${rt.node} (N-API ${rt.napi})`],
      ['platform', `${rt.platform} ${rt.arch}, kernel ${rt.kernel}`],
      ['checksums', rt.checksum],
    ]),
    '',
  );

  out.push('Coordinator');
  const co = report.coordinator;
  if (co === undefined) {
    out.push(
      '  not checked: set --coordinator, SHARDLINE_COORDINATOR or "coordinator" in the config file to check it',
    );
  } else {
    const security = [
      co.tls ? 'TLS' : 'plaintext',
      co.clientCertificate ? 'client certificate' : undefined,
      co.token ? 'token' : 'no token',
    ]
      .filter(Boolean)
      .join(', ');
    const coRows: Array<[string, string]> = [['address', `${co.address} (${security})`]];
    coRows.push(['reachable', co.reachable ? `yes (${co.elapsedMs} ms)` : 'no']);
    if (co.health) coRows.push(['health', co.health]);
    if (co.authorized !== undefined) {
      coRows.push(['token', co.authorized ? 'accepted' : 'refused']);
    }
    if (co.job) {
      coRows.push([
        'job',
        `${co.job.id || '(none)'}${co.job.model ? ` (${co.job.model})` : ''}: ${co.job.state}, epoch ${co.job.epoch}, step ${co.job.step}, ${co.job.workers} worker(s) so far`,
      ]);
    }
    if (co.error) coRows.push(['error', co.error]);
    out.push(...table(coRows));
  }
  out.push('');

  for (const w of report.warnings) out.push(`warning: ${w}`);
  for (const p of report.problems) out.push(`problem: ${p}`);
  if (report.warnings.length + report.problems.length > 0) out.push('');
  const passed = report.backend.attempts
    .filter((a) => a.outcome !== 'chosen')
    .map((a) => a.backend);
  const fallback =
    report.backend.requested === 'auto' && passed.length > 0
      ? ` (auto falls back to it: ${passed.join(' and ')} ${passed.length === 1 ? 'is' : 'are'} unavailable here, see above)`
      : '';
  out.push(
    report.ok
      ? `OK: this worker can train with ${report.backend.chosen}${fallback}${report.coordinator ? ` and reach ${report.coordinator.address}` : ''}.`
      : `NOT OK: ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'} above.`,
  );
  return `${out.join('\n')}\n`;
}
