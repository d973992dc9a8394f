/**
 * The pieces of doctor that read the outside world: libtensorflow's log, nvidia-smi's CSV, the
 * dynamic loader's search path, the CUDA JIT cache variables, and what an unfinished install of
 * a native TensorFlow package leaves behind. The log lines are real ones from tfjs-node-gpu
 * 4.x users (libtensorflow 2.9.1), quoted in the issues named beside them; files are real files
 * in a temporary folder.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CUDA_CACHE_MINIMUM,
  compareVersions,
  compilesPtxAtStartup,
  findSharedLibraries,
  inspectCudaCache,
  parseGpuQuery,
} from '../src/gpuEnvironment.js';
import { diagnoseLoadError, parseTensorflowLog } from '../src/nativeProbe.js';

const dir = mkdtempSync(join(tmpdir(), 'shardline-gpu-env-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('parseTensorflowLog', () => {
  it('finds the CUDA libraries libtensorflow could not open (the GPU build then runs on the CPU)', () => {
    const stderr = [
      // tensorflow/tensorflow#74459 (tfjs-node-gpu, no CUDA 11 runtime installed)
      "2024-08-24 15:40:49.279326: W tensorflow/stream_executor/platform/default/dso_loader.cc:64] Could not load dynamic library 'libcudart.so.11.0'; dlerror: libcudart.so.11.0: cannot open shared object file: No such file or directory",
      '2024-08-24 15:40:49.279356: I tensorflow/stream_executor/cuda/cudart_stub.cc:29] Ignore above cudart dlerror if you do not have a GPU set up on your machine.',
      // tensorflow/tfjs#8269 (tfjs-node-gpu 4.19, CUDA 12.4 installed instead of 11)
      "2024-05-06 00:05:33.767399: W tensorflow/stream_executor/platform/default/dso_loader.cc:64] Could not load dynamic library 'libcudnn.so.8'; dlerror: libcudnn.so.8: cannot open shared object file: No such file or directory",
      'some unrelated line from Node',
    ].join('\n');
    const log = parseTensorflowLog(stderr);
    expect(log.missingLibraries).toEqual([
      {
        library: 'libcudart.so.11.0',
        error: 'libcudart.so.11.0: cannot open shared object file: No such file or directory',
      },
      {
        library: 'libcudnn.so.8',
        error: 'libcudnn.so.8: cannot open shared object file: No such file or directory',
      },
    ]);
    expect(log.gpuDevices).toEqual([]);
    // Warnings are kept without their timestamps; INFO chatter is dropped.
    expect(log.lines).toHaveLength(2);
    expect(log.lines[0]).toMatch(/^W Could not load dynamic library 'libcudart\.so\.11\.0'/);
  });

  it('reads the GPU devices libtensorflow created', () => {
    // tensorflow/tfjs#7798 (tfjs-node-gpu on an RTX 3060)
    const log = parseTensorflowLog(
      '2023-07-02 18:21:32.599856: I tensorflow/core/common_runtime/gpu/gpu_device.cc:1532] Created device /job:localhost/replica:0/task:0/device:GPU:0 with 9598 MB memory:  -> device: 0, name: NVIDIA GeForce RTX 3060, pci bus id: 0000:10:00.0, compute capability: 8.6\n',
    );
    expect(log.gpuDevices).toEqual([
      '/job:localhost/replica:0/task:0/device:GPU:0 (name: NVIDIA GeForce RTX 3060, pci bus id: 0000:10:00.0, compute capability: 8.6)',
    ]);
    expect(log.missingLibraries).toEqual([]);
  });
});

describe('parseGpuQuery', () => {
  it('reads nvidia-smi --query-gpu CSV, with or without the compute capability column', () => {
    expect(
      parseGpuQuery('0, NVIDIA H200, 9.0, 143771\n1, NVIDIA H200, 9.0, 143771\n', true),
    ).toEqual([
      { index: 0, name: 'NVIDIA H200', computeCapability: '9.0', memoryMiB: 143771 },
      { index: 1, name: 'NVIDIA H200', computeCapability: '9.0', memoryMiB: 143771 },
    ]);
    expect(parseGpuQuery('0, Tesla T4, 15360\n', false)).toEqual([
      { index: 0, name: 'Tesla T4', memoryMiB: 15360 },
    ]);
    expect(parseGpuQuery('No devices were found\n', true)).toEqual([]);
  });
});

describe('compilesPtxAtStartup', () => {
  it('is true from compute capability 9.0 (Hopper), which CUDA 11.2 cannot build for', () => {
    expect(compilesPtxAtStartup({ index: 0, name: 'H200', computeCapability: '9.0' })).toBe(true);
    expect(compilesPtxAtStartup({ index: 0, name: 'B200', computeCapability: '10.0' })).toBe(true);
    expect(
      compilesPtxAtStartup({ index: 0, name: 'A100', computeCapability: '8.0' }),
    ).toBeUndefined();
    expect(compilesPtxAtStartup({ index: 0, name: 'unknown' })).toBeUndefined();
    expect(compareVersions('10.0', '9.0')).toBeGreaterThan(0);
    expect(compareVersions('11.2', '11.2.0')).toBe(0);
  });
});

describe('findSharedLibraries', () => {
  const onPath = join(dir, 'on-path');
  const offPath = join(dir, 'cuda', 'lib64');
  mkdirSync(onPath, { recursive: true });
  mkdirSync(offPath, { recursive: true });
  writeFileSync(join(onPath, 'libcudart.so.11.0'), '');
  writeFileSync(join(offPath, 'libcudnn.so.8'), '');

  it('looks in LD_LIBRARY_PATH, the ld.so cache and the default folders, and notes copies off the path', async () => {
    const [cudart, cudnn] = await findSharedLibraries({
      env: { LD_LIBRARY_PATH: `/nonexistent:${onPath}` },
      ldconfigCache:
        "2 libs found in cache `/etc/ld.so.cache'\n\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\n",
      extraFolders: [offPath],
    });
    expect(cudart).toMatchObject({
      name: 'libcudart.so.11.0',
      found: [join(onPath, 'libcudart.so.11.0')],
      offPath: [],
    });
    expect(cudart!.searched[0]).toBe(`LD_LIBRARY_PATH (/nonexistent:${onPath})`);
    expect(cudnn).toMatchObject({
      name: 'libcudnn.so.8',
      found: [],
      offPath: [join(offPath, 'libcudnn.so.8')],
    });
  });

  it('reads the 64-bit entries of the ld.so cache', async () => {
    const [cudart] = await findSharedLibraries({
      env: {},
      ldconfigCache: [
        '\tlibcudart.so.11.0 (libc6) => /usr/lib/i386-linux-gnu/libcudart.so.11.0',
        '\tlibcudart.so.11.0 (libc6,x86-64) => /usr/local/cuda-11.2/lib64/libcudart.so.11.0',
      ].join('\n'),
      extraFolders: [],
    });
    expect(cudart!.found).toEqual(['/usr/local/cuda-11.2/lib64/libcudart.so.11.0']);
    expect(cudart!.searched[0]).toBe('LD_LIBRARY_PATH (unset)');
  });
});

describe('inspectCudaCache', () => {
  it(`wants CUDA_CACHE_MAXSIZE of at least ${CUDA_CACHE_MINIMUM} and the cache on`, () => {
    expect(inspectCudaCache({})).toEqual({ disabled: false, largeEnough: false });
    expect(inspectCudaCache({ CUDA_CACHE_MAXSIZE: '268435456' }).largeEnough).toBe(false);
    expect(inspectCudaCache({ CUDA_CACHE_MAXSIZE: '4294967296' })).toEqual({
      maxSize: 4294967296,
      raw: '4294967296',
      disabled: false,
      largeEnough: true,
    });
    expect(
      inspectCudaCache({ CUDA_CACHE_MAXSIZE: '4294967296', CUDA_CACHE_DISABLE: '1' }).largeEnough,
    ).toBe(false);
    expect(inspectCudaCache({ CUDA_CACHE_MAXSIZE: '4G' })).toMatchObject({
      raw: '4G',
      largeEnough: false,
    });
  });
});

describe('diagnoseLoadError', () => {
  const pkg = (name: string, files: string[]) => {
    const root = join(dir, name);
    for (const f of files) {
      mkdirSync(join(root, f, '..'), { recursive: true });
      writeFileSync(join(root, f), '');
    }
    mkdirSync(root, { recursive: true });
    return root;
  };

  it('says the install script did not finish when libtensorflow and the addon are missing', () => {
    const message = diagnoseLoadError(
      '@tensorflow/tfjs-node-gpu',
      pkg('unfinished', ['package.json']),
      'The Node.js native addon module (tfjs_binding.node) can not be found at path: ...',
    );
    expect(message).toMatch(
      /^installed, but its install script did not finish: libtensorflow .* and the native addon .* are missing\. .*storage\.googleapis\.com.*`npm rebuild @tensorflow\/tfjs-node-gpu`/,
    );
  });

  it('names the shared library a complete install cannot find', () => {
    const root = pkg('complete', [
      'deps/lib/libtensorflow.so.2.9.1',
      'lib/napi-v8/tfjs_binding.node',
    ]);
    expect(
      diagnoseLoadError(
        '@tensorflow/tfjs-node-gpu',
        root,
        'libcudart.so.11.0: cannot open shared object file: No such file or directory',
      ),
    ).toBe(
      'a shared library it needs cannot be found: libcudart.so.11.0. Put the folder holding it on LD_LIBRARY_PATH (or register it with ldconfig) and run again.',
    );
  });
});
