/**
 * `shardline-worker doctor` on this machine, for real: no GPU, and @tensorflow/tfjs-node(-gpu)
 * installed but unloadable because their install script could not download libtensorflow (the
 * same machine CI runs on). The native packages are really loaded in child processes; the
 * coordinator checks use real sockets: a closed port, a port that never answers, and a real
 * gRPC server with the standard health service but no coordinator behind it. The real
 * coordinator is in doctor.e2e.test.ts.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { CRC32_IMPLEMENTATION } from '@shardline/protocol';
import { HealthImplementation } from 'grpc-health-check';
import { describe, expect, it } from 'vitest';
import type { DoctorReport } from '../src/doctor.js';
import { runWorkerCli } from '../src/program.js';

const workerCli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

/** This process's environment without any SHARDLINE_* variable a developer may have set. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('SHARDLINE_')),
  );
  return { ...env, ...extra };
}

async function doctor(args: string[], env: NodeJS.ProcessEnv = cleanEnv()) {
  let stdout = '';
  let stderr = '';
  const started = Date.now();
  const code = await runWorkerCli(
    ['node', 'shardline-worker', ...args],
    {
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) },
    },
    { env },
  );
  return { code, stdout, stderr, ms: Date.now() - started };
}

async function doctorJson(args: string[], env?: NodeJS.ProcessEnv) {
  const result = await doctor(['doctor', '--json', ...args], env);
  return { ...result, report: JSON.parse(result.stdout) as DoctorReport };
}

function listen(server: NetServer): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );
}

describe('doctor on this machine (no GPU, native TensorFlow installed but not downloaded)', () => {
  it('reports wasm chosen by auto, why each native backend was skipped, and exits 0', async () => {
    const { code, report, stderr } = await doctorJson([]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.problems).toEqual([]);
    expect(report.backend).toMatchObject({
      requested: 'auto',
      requestedFrom: 'default',
      chosen: 'wasm',
    });
    expect(report.backend.attempts.map((a) => [a.backend, a.outcome])).toEqual([
      ['tensorflow-gpu', 'skipped'],
      ['tensorflow', 'skipped'],
      ['wasm', 'chosen'],
    ]);
    expect(report.backend.attempts[0]!.reason).toMatch(/^no GPU visible \(/);
    expect(report.backend.attempts[1]!.reason).toMatch(
      /^@tensorflow\/tfjs-node is not loadable: The Node\.js native addon module \(tfjs_binding\.node\) can not be found/,
    );
    expect(report.gpus.visible.count).toBe(0);
    expect(report.gpus.devices).toEqual([]);

    // Each native package was really loaded, in a child process, and failed for this reason.
    expect(report.nativePackages.map((p) => p.package)).toEqual([
      '@tensorflow/tfjs-node-gpu',
      '@tensorflow/tfjs-node',
    ]);
    for (const p of report.nativePackages) {
      expect(p).toMatchObject({ installed: true, loaded: false, version: '4.22.0' });
      expect(p.error).toMatch(/tfjs_binding\.node\) can not be found at path: .*napi-v\d+/);
      expect(p.diagnosis).toMatch(
        /^installed, but its install script did not finish: libtensorflow .* and the native addon .* are missing\./,
      );
      expect(p.directory).toMatch(new RegExp(`${p.package.replace('/', '\\/')}$`));
    }
    expect(report.cuda.libraries.map((l) => l.name)).toEqual([
      'libcudart.so.11.0',
      'libcudnn.so.8',
    ]);
    expect(report.cuda.requirements).toEqual({
      libtensorflow: '2.9.1',
      cuda: '11.2',
      cudnn: '8.1',
    });
    expect(report.runtime.node).toBe(process.version);
    // Whether the SIMD binary loads is @shardline/protocol's test; here: reported, and a warning
    // exactly when the slower fallback runs.
    expect(report.runtime.checksum).toBe(`crc32-${CRC32_IMPLEMENTATION}`);
    expect(report.warnings.some((w) => w.startsWith('Tensor checksums use'))).toBe(
      CRC32_IMPLEMENTATION !== 'simd',
    );
    expect(report.coordinator).toBeUndefined();
  });

  it('says so in words, ending with the verdict', async () => {
    const { code, stdout } = await doctor(['doctor']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^shardline-worker doctor \d+\.\d+\.\d+\n/);
    expect(stdout).toMatch(/\n {2}chosen +wasm: first backend that loaded\n/);
    expect(stdout).toMatch(/\n {2}skipped +tensorflow-gpu: no GPU visible/);
    expect(stdout).toMatch(
      /\n {2}@tensorflow\/tfjs-node-gpu 4\.22\.0: does not load\n {4}error +The Node\.js native addon module/,
    );
    expect(stdout).toMatch(/\n {4}why +installed, but its install script did not finish/);
    expect(stdout).toMatch(/\n {2}libcudart\.so\.11\.0 +not found \(searched LD_LIBRARY_PATH/);
    expect(stdout).toMatch(
      /\n {2}not checked: set --coordinator, SHARDLINE_COORDINATOR or "coordinator"/,
    );
    expect(stdout).toMatch(
      /\nOK: this worker can train with wasm \(auto falls back to it: tensorflow-gpu and tensorflow are unavailable here, see above\)\.\n$/,
    );
  });

  it('exits non-zero with the reason when --backend tensorflow-gpu cannot load', async () => {
    const { code, report } = await doctorJson(['--backend', 'tensorflow-gpu']);
    expect(code).toBe(1);
    expect(report.ok).toBe(false);
    expect(report.backend.chosen).toBeUndefined();
    expect(report.backend.requestedFrom).toBe('flag --backend');
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]).toMatch(
      /^Backend "tensorflow-gpu" is not available: tensorflow-gpu: no GPU visible .*Use --backend auto to fall back to what works here\. Besides, @tensorflow\/tfjs-node-gpu itself does not load here \(The Node\.js native addon module .*\): installed, but its install script did not finish/,
    );
    const text = await doctor(['doctor', '--backend', 'tensorflow-gpu']);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/\nproblem: Backend "tensorflow-gpu" is not available/);
    expect(text.stdout).toMatch(/\nNOT OK: 1 problem above\.\n$/);
  });

  it('takes the backend from the environment, the config file, or flags before the subcommand', async () => {
    const fromEnv = await doctorJson([], cleanEnv({ SHARDLINE_BACKEND: 'cpu' }));
    expect(fromEnv.report.backend).toMatchObject({
      chosen: 'cpu',
      requestedFrom: 'env SHARDLINE_BACKEND',
    });
    const config = join(mkdtempSync(join(tmpdir(), 'shardline-doctor-')), 'worker.json');
    writeFileSync(config, '{"backend": "cpu"}');
    const fromFile = await doctorJson(['--config', config]);
    expect(fromFile.report.backend).toMatchObject({
      chosen: 'cpu',
      requestedFrom: `file ${config}`,
    });
    rmSync(dirname(config), { recursive: true });
    const before = await doctor(['--backend', 'cpu', 'doctor', '--json']);
    expect((JSON.parse(before.stdout) as DoctorReport).backend.chosen).toBe('cpu');
    // After the subcommand wins over before it.
    const both = await doctor(['--backend', 'tensorflow', 'doctor', '--json', '--backend', 'cpu']);
    expect((JSON.parse(both.stdout) as DoctorReport).backend.requestedFrom).toBe('flag --backend');
    expect((JSON.parse(both.stdout) as DoctorReport).backend.chosen).toBe('cpu');
  });

  it('runs as the installed program does, with the exit status a script sees', async () => {
    const child = spawn(
      process.execPath,
      [workerCli, 'doctor', '--json', '--backend', 'tensorflow'],
      {
        env: cleanEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(1);
    const report = JSON.parse(stdout) as DoctorReport;
    expect(report.problems[0]).toMatch(
      /^Backend "tensorflow" is not available: tensorflow: @tensorflow\/tfjs-node is not loadable/,
    );
  });
});

describe('doctor and an unreachable coordinator', () => {
  it('says it cannot reach a closed port, at once', async () => {
    const server = createServer();
    const port = await listen(server);
    await new Promise((resolve) => server.close(resolve));
    const { code, report, ms } = await doctorJson(['--coordinator', `127.0.0.1:${port}`]);
    expect(code).toBe(1);
    expect(report.coordinator).toMatchObject({
      address: `127.0.0.1:${port}`,
      reachable: false,
      ok: false,
    });
    expect(report.coordinator!.error).toMatch(
      new RegExp(
        `^Cannot reach the coordinator at 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED.*Check that the coordinator is running`,
      ),
    );
    expect(report.problems).toEqual([report.coordinator!.error]);
    expect(report.coordinator!.elapsedMs).toBeLessThan(5000);
    expect(ms).toBeLessThan(30_000);
  });

  it('gives up on a port that never answers after --connect-timeout', async () => {
    // Accepts TCP connections and never speaks HTTP/2: a hung or wrong service.
    const sockets: Socket[] = [];
    const silent = createServer((socket) => sockets.push(socket));
    const port = await listen(silent);
    try {
      const { code, report } = await doctorJson([
        '--coordinator',
        `127.0.0.1:${port}`,
        '--connect-timeout',
        '1',
      ]);
      expect(code).toBe(1);
      expect(report.coordinator!.reachable).toBe(false);
      expect(report.coordinator!.error).toBe(
        `No answer from the coordinator at 127.0.0.1:${port} within 1 s: expected its gRPC port to answer. Check the address, that the coordinator runs, and that no firewall drops the traffic.`,
      );
      expect(report.coordinator!.elapsedMs).toBeGreaterThanOrEqual(900);
      expect(report.coordinator!.elapsedMs).toBeLessThan(4000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('tells a gRPC server that is not a coordinator from one', async () => {
    const server = new Server();
    new HealthImplementation({ '': 'SERVING' }).addToServer(server);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    try {
      const { code, report } = await doctorJson(
        [],
        cleanEnv({ SHARDLINE_COORDINATOR: `127.0.0.1:${port}` }),
      );
      expect(code).toBe(1);
      expect(report.coordinator).toMatchObject({
        reachable: true,
        health: 'SERVICE_UNKNOWN',
        ok: false,
      });
      expect(report.coordinator!.error).toBe(
        `127.0.0.1:${port} answers gRPC health checks but serves no shardline.v1.CoordinatorService: expected a Shardline coordinator. Check the address and port.`,
      );
    } finally {
      server.forceShutdown();
    }
  });
});
