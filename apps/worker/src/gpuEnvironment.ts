/**
 * What a GPU worker node needs around @tensorflow/tfjs-node-gpu 4.22, checked from outside
 * TensorFlow: the GPUs and driver nvidia-smi reports, whether the CUDA 11 / cuDNN 8 libraries
 * that libtensorflow 2.9.1 opens at start-up are on the library path, and whether the CUDA JIT
 * cache is large enough to keep the PTX it compiles on newer GPUs.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { detectNvidiaGpus, type GpuProbe } from '@shardline/core';

/** What @tensorflow/tfjs-node-gpu 4.22 loads: libtensorflow 2.9.1, built for these. */
export const TFJS_NODE_GPU_REQUIREMENTS = {
  libtensorflow: '2.9.1',
  cuda: '11.2',
  cudnn: '8.1',
} as const;

/** The shared libraries libtensorflow 2.9.1 opens by these exact names (their sonames). */
export const CUDA_LIBRARIES = [
  { name: 'libcudart.so.11.0', what: 'CUDA 11 runtime' },
  { name: 'libcudnn.so.8', what: 'cuDNN 8' },
] as const;

/**
 * CUDA_CACHE_MAXSIZE below this is too small for libtensorflow's kernels: TensorFlow's own
 * release notes (2.3) recommend 2147483648 when kernels are JIT-compiled from PTX.
 */
export const CUDA_CACHE_MINIMUM = 2_147_483_648;
/** What the README and doctor recommend: 4 GiB. */
export const CUDA_CACHE_RECOMMENDED = 4_294_967_296;

/** One GPU as nvidia-smi reports it. */
export interface GpuDevice {
  index: number;
  name: string;
  /** Such as "9.0"; absent when this nvidia-smi cannot report it. */
  computeCapability?: string;
  memoryMiB?: number;
}

/** The GPUs this process can see. */
export interface GpuReport {
  /** What the backend loader counts (the kernel driver, honouring CUDA_VISIBLE_DEVICES). */
  visible: GpuProbe;
  /** From nvidia-smi, when it runs. */
  devices: GpuDevice[];
  driverVersion?: string;
  /** The newest CUDA version the driver supports (nvidia-smi's "CUDA Version"). */
  driverCudaVersion?: string;
  /** Why nvidia-smi gave nothing, when it did not. */
  nvidiaSmiError?: string;
}

function run(file: string, args: string[], timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) {
        const code = (error as NodeJS.ErrnoException).code;
        reject(
          new Error(
            code === 'ENOENT'
              ? `${file} not found on PATH`
              : (stderr || stdout || error.message).trim().split('\n')[0],
          ),
        );
      } else resolve(stdout);
    });
  });
}

/** Parses `nvidia-smi --query-gpu=index,name,compute_cap,memory.total --format=csv,noheader,nounits`. */
export function parseGpuQuery(csv: string, withComputeCapability: boolean): GpuDevice[] {
  return csv
    .split('\n')
    .map((line) => line.split(',').map((f) => f.trim()))
    .filter((fields) => fields.length >= 3 && /^\d+$/.test(fields[0]!))
    .map((fields) => {
      const [index, name, ...rest] = fields as [string, string, ...string[]];
      const cc = withComputeCapability ? rest.shift() : undefined;
      const memory = Number(rest[0]);
      return {
        index: Number(index),
        name,
        ...(cc && /^\d+\.\d+$/.test(cc) ? { computeCapability: cc } : {}),
        ...(Number.isFinite(memory) && rest[0] !== '' ? { memoryMiB: memory } : {}),
      };
    });
}

/**
 * The GPUs this process sees: the count the backend loader uses (core's detectNvidiaGpus), and
 * the names, compute capabilities and driver from nvidia-smi when it is installed.
 */
export async function inspectGpus(env: NodeJS.ProcessEnv = process.env): Promise<GpuReport> {
  const visible = detectNvidiaGpus(env);
  const report: GpuReport = { visible, devices: [] };
  const fields = 'index,name,compute_cap,memory.total';
  try {
    let csv: string;
    let withCc = true;
    try {
      csv = await run('nvidia-smi', [`--query-gpu=${fields}`, '--format=csv,noheader,nounits']);
    } catch (error) {
      // Drivers before compute_cap was a query field (about R510) refuse the whole query.
      if (!/compute_cap|not a valid field/i.test((error as Error).message)) throw error;
      withCc = false;
      csv = await run('nvidia-smi', [
        '--query-gpu=index,name,memory.total',
        '--format=csv,noheader,nounits',
      ]);
    }
    report.devices = parseGpuQuery(csv, withCc);
    const header = await run('nvidia-smi', []);
    const driver = /Driver Version:\s*([\d.]+)/.exec(header)?.[1];
    const cuda = /CUDA Version:\s*([\d.]+)/.exec(header)?.[1];
    if (driver) report.driverVersion = driver;
    if (cuda) report.driverCudaVersion = cuda;
  } catch (error) {
    report.nvidiaSmiError = (error as Error).message;
  }
  return report;
}

/** Compares dotted versions: negative when a < b. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Where one shared library was found, and where the dynamic loader would look. */
export interface LibraryLookup {
  name: string;
  what: string;
  /** Paths where the loader finds it. */
  found: string[];
  /** Where it looked, in the loader's order. */
  searched: string[];
  /** Copies that exist but are not on the library path (such as /usr/local/cuda/lib64). */
  offPath: string[];
}

/** Options of {@link findSharedLibraries}. */
export interface LibrarySearchOptions {
  env?: NodeJS.ProcessEnv;
  /** `ldconfig -p` output; read from the system when absent. */
  ldconfigCache?: string;
  /** Folders where CUDA is often installed but not on the path (default: /usr/local/cuda*). */
  extraFolders?: string[];
}

/** The ld.so cache, as `ldconfig -p` prints it ('' when ldconfig is missing). */
export async function readLdconfigCache(): Promise<string> {
  for (const ldconfig of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    try {
      return await run(ldconfig, ['-p']);
    } catch {
      // Not at this path; try the next.
    }
  }
  return '';
}

function cudaInstallFolders(): string[] {
  try {
    return readdirSync('/usr/local')
      .filter((d) => /^cuda(-[\d.]+)?$/.test(d))
      .flatMap((d) => [join('/usr/local', d, 'lib64'), join('/usr/local', d, 'lib')]);
  } catch {
    return [];
  }
}

/**
 * Looks for {@link CUDA_LIBRARIES} where the dynamic loader does: the LD_LIBRARY_PATH folders,
 * the ld.so cache (`ldconfig -p`), then /lib64, /usr/lib64, /lib, /usr/lib. Copies elsewhere
 * (a CUDA toolkit under /usr/local not on the path) are listed apart: libtensorflow will not
 * find them.
 */
export async function findSharedLibraries(
  options: LibrarySearchOptions = {},
): Promise<LibraryLookup[]> {
  const env = options.env ?? process.env;
  const cache = options.ldconfigCache ?? (await readLdconfigCache());
  const ldPath = (env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d !== '');
  const defaults = ['/lib64', '/usr/lib64', '/lib', '/usr/lib'];
  const extra = options.extraFolders ?? cudaInstallFolders();
  // The cache lists 32-bit copies too ("(libc6)"); this process can load only its own ABI's.
  const abi = ({ x64: 'x86-64', arm64: 'AArch64' } as Record<string, string>)[process.arch];
  return CUDA_LIBRARIES.map(({ name, what }) => {
    const found = new Set<string>();
    for (const dir of ldPath) if (existsSync(join(dir, name))) found.add(join(dir, name));
    // "\tlibcudart.so.11.0 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.11.0"
    for (const line of cache.split('\n')) {
      const match = /^\s*(\S+) \(([^)]*)\) => (.+)$/.exec(line);
      if (match && match[1] === name && (abi === undefined || match[2]!.includes(abi))) {
        found.add(match[3]!.trim());
      }
    }
    for (const dir of defaults) if (existsSync(join(dir, name))) found.add(join(dir, name));
    const offPath = extra
      .map((dir) => join(dir, name))
      .filter((p) => existsSync(p) && !found.has(p));
    return {
      name,
      what,
      found: [...found],
      searched: [
        ldPath.length > 0 ? `LD_LIBRARY_PATH (${ldPath.join(':')})` : 'LD_LIBRARY_PATH (unset)',
        cache === '' ? 'ld.so cache (ldconfig not found)' : 'ld.so cache (ldconfig -p)',
        defaults.join(', '),
      ],
      offPath,
    };
  });
}

/** The CUDA JIT cache settings. */
export interface CudaCacheReport {
  /** CUDA_CACHE_MAXSIZE in bytes, when set to a number. */
  maxSize?: number;
  /** The raw value, when set. */
  raw?: string;
  /** CUDA_CACHE_DISABLE=1 turns the cache off: every start compiles again. */
  disabled: boolean;
  /** Whether the size is at least {@link CUDA_CACHE_MINIMUM} and the cache is on. */
  largeEnough: boolean;
}

/** Reads CUDA_CACHE_MAXSIZE and CUDA_CACHE_DISABLE. */
export function inspectCudaCache(env: NodeJS.ProcessEnv = process.env): CudaCacheReport {
  const raw = env.CUDA_CACHE_MAXSIZE;
  const size = raw !== undefined && /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : undefined;
  const disabled = env.CUDA_CACHE_DISABLE?.trim() === '1';
  return {
    ...(size !== undefined ? { maxSize: size } : {}),
    ...(raw !== undefined ? { raw } : {}),
    disabled,
    largeEnough: !disabled && size !== undefined && size >= CUDA_CACHE_MINIMUM,
  };
}

/**
 * Whether libtensorflow 2.9.1 must JIT-compile PTX for this GPU at start-up: true for compute
 * capability 9.0 and newer (Hopper on), which CUDA 11.2, the toolkit it was built with, cannot
 * compile native code for; undefined when the capability is unknown or older (it depends on
 * which architectures that build shipped).
 */
export function compilesPtxAtStartup(device: GpuDevice): boolean | undefined {
  if (device.computeCapability === undefined) return undefined;
  return compareVersions(device.computeCapability, '9.0') >= 0 ? true : undefined;
}
