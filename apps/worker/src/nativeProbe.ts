/**
 * Whether the native TensorFlow packages load on this machine, and if not, exactly why.
 *
 * Each package is loaded in a child process of its own: @tensorflow/tfjs-node and
 * @tensorflow/tfjs-node-gpu both register the backend "tensorflow", so one process can only
 * ever load one of them; a crash inside libtensorflow (an unsupported CPU instruction, a broken
 * driver) must not take the report down with it; and libtensorflow writes what it could not
 * open (`Could not load dynamic library 'libcudart.so.11.0'; dlerror: ...`) on the process's
 * stderr, where only a parent can read it. A GPU build that cannot open the CUDA libraries
 * still loads and silently computes on the CPU, so those lines are the only evidence.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { locateOptional } from '@shardline/core';

/** The native TensorFlow packages, GPU build first (the order `auto` tries them). */
export const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;
/** One of {@link NATIVE_PACKAGES}. */
export type NativePackage = (typeof NATIVE_PACKAGES)[number];

/** A shared library libtensorflow tried to open and could not. */
export interface MissingLibrary {
  library: string;
  /** The loader's error, verbatim (`libcudart.so.11.0: cannot open shared object file: ...`). */
  error: string;
}

/** What loading one native package in a child process showed. */
export interface NativePackageProbe {
  package: NativePackage;
  installed: boolean;
  version?: string;
  /** The package's folder (the copy a worker would load). */
  directory?: string;
  /** Whether it loaded and computed a small sum. */
  loaded: boolean;
  /** The load error's first line, verbatim. */
  error?: string;
  /** What the error means and what to do. */
  diagnosis?: string;
  /** Libraries libtensorflow could not open (the GPU build then computes on the CPU). */
  missingLibraries: MissingLibrary[];
  /** GPU devices libtensorflow created (`/device:GPU:0 ... name: NVIDIA H200, ...`). */
  gpuDevices: string[];
  /** libtensorflow's warnings and errors, and its device lines, without timestamps. */
  tensorflowLog: string[];
  /** How long loading took (the first GPU start can compile PTX for minutes). */
  elapsedMs: number;
}

/** Options for {@link probeNativePackage}. */
export interface NativeProbeOptions {
  /** Give up after this long (default 300 s). */
  timeoutMs?: number;
  /** Environment of the child (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

const RESULT_MARK = 'SHARDLINE_PROBE_RESULT ';

// Runs in the child: load the package, compute 1² + 2² + 3² with it, report on stdout.
const CHILD_SCRIPT = `
const mark = ${JSON.stringify(RESULT_MARK)};
try {
  const loaded = await import(process.argv[1]);
  const tf = loaded.default ?? loaded;
  const x = tf.tensor1d([1, 2, 3]);
  const sum = tf.sum(tf.mul(x, x)).dataSync()[0];
  process.stdout.write('\\n' + mark + JSON.stringify({ ok: sum === 14, backend: tf.getBackend(), sum }) + '\\n');
} catch (error) {
  process.stdout.write('\\n' + mark + JSON.stringify({ ok: false, message: String(error && error.message || error), code: error && error.code }) + '\\n');
}
`;

function packageInfo(entry: string, name: string): { directory: string; version?: string } {
  // Walk up from the entry file to the package.json that names this package.
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (!existsSync(manifest)) continue;
    try {
      const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === name) {
        return { directory: dir, ...(pkg.version ? { version: pkg.version } : {}) };
      }
    } catch {
      // An unreadable manifest on the way up is not this package's; keep walking.
    }
  }
  return { directory: dirname(entry) };
}

/** The parts of libtensorflow's log a reader needs (warnings, errors, devices), untimestamped. */
export function parseTensorflowLog(stderr: string): {
  lines: string[];
  missingLibraries: MissingLibrary[];
  gpuDevices: string[];
} {
  const lines: string[] = [];
  const missingLibraries: MissingLibrary[] = [];
  const gpuDevices: string[] = [];
  // "2024-05-06 00:05:33.767399: W tensorflow/stream_executor/platform/default/dso_loader.cc:64]
  //  Could not load dynamic library 'libcudnn.so.8'; dlerror: libcudnn.so.8: cannot open ..."
  const record = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) [^\]]+\] (.*)$/;
  for (const line of stderr.split('\n')) {
    const match = record.exec(line.trim());
    if (!match) continue;
    const [, level, message] = match as unknown as [string, string, string];
    const device =
      /Created device (\S*GPU:\d+).*?(name: [^,]+(?:, pci bus id: [^,]+)?(?:, compute capability: [\d.]+)?)/.exec(
        message,
      );
    if (device) gpuDevices.push(`${device[1]} (${device[2]})`);
    const missing = /Could not load dynamic library '([^']+)'; dlerror: (.*)$/.exec(message);
    if (missing) missingLibraries.push({ library: missing[1]!, error: missing[2]!.trim() });
    if (level !== 'I' || device) lines.push(`${level} ${message}`);
  }
  return { lines, missingLibraries, gpuDevices };
}

/**
 * Says what a load error means for a native TensorFlow package and what to do. The commonest
 * case: the package installed but its install script could not download libtensorflow and the
 * native addon (an offline install, or one with scripts disabled).
 */
export function diagnoseLoadError(pkg: NativePackage, directory: string, error: string): string {
  const libDir = join(directory, 'deps', 'lib');
  const hasLibtensorflow =
    existsSync(libDir) && readdirSync(libDir).some((f) => f.startsWith('libtensorflow'));
  const addonDir = join(directory, 'lib');
  const hasAddon =
    existsSync(addonDir) &&
    readdirSync(addonDir).some((d) => existsSync(join(addonDir, d, 'tfjs_binding.node')));
  if (!hasLibtensorflow || !hasAddon) {
    const missing = [
      hasLibtensorflow
        ? undefined
        : `libtensorflow (${join('deps', 'lib')}/ has no libtensorflow*)`,
      hasAddon ? undefined : 'the native addon (lib/napi-v*/tfjs_binding.node)',
    ].filter((m) => m !== undefined);
    return (
      `installed, but its install script did not finish: ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} missing. ` +
      'That script downloads them from storage.googleapis.com while the package installs; here the download failed or scripts were skipped. ' +
      `Rebuild it where the download works (\`npm rebuild ${pkg}\`, or \`pnpm rebuild ${pkg}\`), or set TFJS_NODE_CDN_STORAGE to a mirror first.`
    );
  }
  const library = /([\w.+-]+\.so[\w.]*): cannot open shared object file/.exec(error)?.[1];
  if (library) {
    return `a shared library it needs cannot be found: ${library}. Put the folder holding it on LD_LIBRARY_PATH (or register it with ldconfig) and run again.`;
  }
  if (/GLIBC|GLIBCXX|version `/.test(error)) {
    return 'libtensorflow needs a newer C or C++ runtime than this system has (the error names the version). Use a newer base image, or --backend wasm.';
  }
  return 'it is installed but failed to load; the error above is what Node.js reported.';
}

/** Runs `node -e` in a child process with a time limit; resolves with its output. */
function runChild(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<{
  stdout: string;
  stderr: string;
  code: number | null;
  signal: string | null;
  timedOut: boolean;
}> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code, signal, timedOut });
    });
  });
}

/**
 * Loads `pkg` in a child process (with libtensorflow's logging turned up) and reports whether
 * it loaded, what it printed about the CUDA libraries and GPU devices, and, when it failed, why.
 *
 * @example
 * ```ts
 * const probe = await probeNativePackage('@tensorflow/tfjs-node-gpu');
 * if (!probe.loaded) console.log(probe.error, probe.diagnosis);
 * ```
 */
export async function probeNativePackage(
  pkg: NativePackage,
  options: NativeProbeOptions = {},
): Promise<NativePackageProbe> {
  const entry = locateOptional(pkg);
  const empty = { missingLibraries: [], gpuDevices: [], tensorflowLog: [], elapsedMs: 0 };
  if (entry === undefined) {
    return {
      package: pkg,
      installed: false,
      loaded: false,
      error: `Cannot find package '${pkg}'`,
      diagnosis: `not installed. It is an optional dependency of @shardline/worker; install it (npm i ${pkg}@4.22.0) where its install script can download libtensorflow.`,
      ...empty,
    };
  }
  const info = packageInfo(entry, pkg);
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 300_000;
  const env = {
    ...(options.env ?? process.env),
    // libtensorflow logs at INFO by default, but a user's TF_CPP_MIN_LOG_LEVEL=2 would hide the
    // "Could not load dynamic library" warnings this report relies on.
    TF_CPP_MIN_LOG_LEVEL: '0',
  };
  const run = await runChild(
    ['--input-type=module', '-e', CHILD_SCRIPT, pathToFileURL(entry).href],
    env,
    timeoutMs,
  );
  const elapsedMs = Date.now() - started;
  const log = parseTensorflowLog(run.stderr);
  const base = {
    package: pkg,
    installed: true,
    ...(info.version ? { version: info.version } : {}),
    directory: info.directory,
    missingLibraries: log.missingLibraries,
    gpuDevices: log.gpuDevices,
    tensorflowLog: log.lines,
    elapsedMs,
  };
  const resultLine = run.stdout
    .split('\n')
    .reverse()
    .find((l) => l.startsWith(RESULT_MARK));
  if (resultLine === undefined) {
    const how = run.timedOut
      ? `it did not finish loading within ${Math.round(timeoutMs / 1000)} s`
      : `the process loading it ended with ${run.signal ? `signal ${run.signal}` : `status ${run.code}`}`;
    const lastWords = run.stderr.trim().split('\n').slice(-1)[0] ?? '';
    return {
      ...base,
      loaded: false,
      error: `${how}${lastWords ? `: ${lastWords}` : ''}`,
      diagnosis: run.timedOut
        ? 'it may still have been compiling PTX: on a GPU libtensorflow 2.9.1 has no kernels for (such as Hopper) the first start can take many minutes. Set CUDA_CACHE_MAXSIZE=4294967296 so that happens once, let one start finish, and run doctor again.'
        : 'libtensorflow crashed while loading; its last words are above.',
    };
  }
  const result = JSON.parse(resultLine.slice(RESULT_MARK.length)) as {
    ok: boolean;
    backend?: string;
    sum?: number;
    message?: string;
  };
  if (!result.ok) {
    const error = (result.message ?? `it computed ${result.sum} for 1+4+9`).split('\n')[0]!.trim();
    return {
      ...base,
      loaded: false,
      error,
      diagnosis: diagnoseLoadError(pkg, info.directory, result.message ?? ''),
    };
  }
  return { ...base, loaded: true };
}
